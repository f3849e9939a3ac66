"""4 KiB PUT, GET and HEAD at concurrency 1 and 32, against the ceiling.

Three servers run side by side: the gateway (fs backend, SQLite), the gateway on the
``null`` backend (its own cost without a disk, as versitygw measures itself) and the bare
Starlette app (:mod:`benchmarks.bare_app`) on the same uvicorn settings. Each row is
measured A, B, C, A, B, C, so that noise on a shared machine falls on all three alike; the
figures are the means of the rounds and the ratios are the gateway's over the bare app's.
Server CPU per request comes from the server processes' CPU time over the run. Optionally
the same rows on PostgreSQL with 1 and 2 uvicorn workers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from benchmarks._harness import client, cpu_seconds, running_bare, running_gateway
from benchmarks._load import Load, run_hey, run_wrk
from tests import _postgres as postgres

SIZE = 4096
#: Distinct keys PUT cycles over (then overwrites): within the shipped 10,000-object quota.
KEYS = 5000
OPS = ("PUT", "GET", "HEAD")
_BOTO_OP = {"PUT": "put_object", "GET": "get_object", "HEAD": "head_object"}
#: The shipped quota defaults (empty: the settings' own), so PUTs pay for reservations.
SHIPPED_QUOTAS = {"GATEWAY_QUOTA_BUCKET_BYTES": "", "GATEWAY_QUOTA_BUCKET_OBJECTS": "",
                  "GATEWAY_QUOTA_MAX_OBJECT_SIZE": ""}


@dataclass
class Target:
    name: str
    pid: int
    urls: Callable[[str], list[str]]


def _mean(loads: list[Load]) -> Load:
    return Load(rps=fmean(x.rps for x in loads), p50_ms=fmean(x.p50_ms for x in loads),
                p99_ms=max(x.p99_ms for x in loads), errors=sum(x.errors for x in loads),
                requests=sum(x.requests for x in loads),
                cpu_us=fmean(x.cpu_us or 0.0 for x in loads))


def measure(target: Target, op: str, concurrency: int, seconds: float) -> Load:
    before = cpu_seconds(target.pid)
    if op == "HEAD":
        load = run_hey(target.urls(op)[0], op, concurrency, seconds)
    else:
        load = run_wrk(target.urls(op), op, concurrency, seconds, SIZE if op == "PUT" else 0)
    load.cpu_us = (cpu_seconds(target.pid) - before) / max(1, load.requests) * 1e6
    return load


@contextmanager
def gateway_target(name: str, keys: int, env: dict[str, str]) -> Iterator[Target]:
    """A gateway with a bucket, and presigned URLs for ``keys`` distinct keys: PUT creates
    them (wrk cycles the list), GET and HEAD read them (seeded first, so a GET never
    misses)."""
    with running_gateway(**{**SHIPPED_QUOTAS, **env}) as server:
        s3: Any = client(server)
        s3.create_bucket(Bucket="bench")
        names = [f"k/{i:06d}" for i in range(keys)]
        for key in names[:1000]:
            s3.put_object(Bucket="bench", Key=key, Body=b"x" * SIZE)
        signed: dict[str, list[str]] = {}

        def urls(op: str) -> list[str]:
            if op not in signed:
                # Reads cycle over the first 1,000 keys (seeded); writes over all of them.
                chosen = names if op == "PUT" else names[:1000]
                signed[op] = [s3.generate_presigned_url(
                    _BOTO_OP[op], Params={"Bucket": "bench", "Key": k}, ExpiresIn=7200)
                    for k in chosen]
            return signed[op]

        assert server.proc is not None
        yield Target(name, server.proc.pid, urls)


@contextmanager
def bare_target() -> Iterator[Target]:
    with running_bare() as bare:
        paths = [f"{bare.url}/bench/k/{i:06d}" for i in range(1000)]
        assert bare.proc is not None
        yield Target("bare", bare.proc.pid, lambda _op: paths)


def run(seconds: float, concurrencies: tuple[int, ...] = (1, 32), rounds: int = 2,
        postgres_rows: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``{"rows": {(op, c): {server: Load}}, "postgres": {...}}`` as plain dicts."""
    keys = KEYS
    rows: dict[str, dict[str, Load]] = {}
    with ExitStack() as stack:
        targets = [stack.enter_context(gateway_target("gateway", keys, {})),
                   stack.enter_context(gateway_target("gateway-null", keys,
                                                      {"GATEWAY_BACKEND": "null"})),
                   stack.enter_context(bare_target())]
        for c in concurrencies:
            for op in OPS:
                runs: dict[str, list[Load]] = {t.name: [] for t in targets}
                for _ in range(rounds):
                    for t in targets:
                        runs[t.name].append(measure(t, op, c, seconds))
                rows[f"{op} c{c}"] = {name: _mean(loads) for name, loads in runs.items()}
                log(f"  {op} c{c}: " + ", ".join(
                    f"{name} {load.rps:,.0f}/s" for name, load in rows[f"{op} c{c}"].items()))
    result: dict[str, Any] = {"rows": {k: {n: v.as_dict() for n, v in r.items()}
                                       for k, r in rows.items()}}
    if postgres_rows:
        result["postgres"] = run_postgres(seconds, concurrencies, log)
    return result


def run_postgres(seconds: float, concurrencies: tuple[int, ...],
                 log: Callable[[str], None]) -> dict[str, Any]:
    reason = postgres.unreachable()
    if reason is not None:
        log(f"  PostgreSQL rows skipped: {reason}")
        return {"skipped": reason}
    out: dict[str, Any] = {}
    for workers in (1, 2):
        url = postgres.create_database()
        try:
            env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_WORKERS": str(workers)}
            with gateway_target(f"postgres-{workers}w", KEYS, env) as target:
                for c in concurrencies:
                    for op in OPS:
                        load = measure(target, op, c, seconds)
                        out[f"{op} c{c} {workers}w"] = load.as_dict()
                        log(f"  PostgreSQL {workers} worker(s) {op} c{c}: {load.rps:,.0f}/s")
        finally:
            postgres.drop_database(url)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    return run(args.seconds, rounds=args.rounds, postgres_rows=not args.no_postgres)


if __name__ == "__main__":
    main()
