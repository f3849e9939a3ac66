"""4 KiB GET/PUT per second with 1, 2 and 4 uvicorn workers on PostgreSQL, next to SQLite
with one worker (fs backend, wrk at concurrency 16, same run). Needs PostgreSQL on
127.0.0.1:5432 (or ``GATEWAY_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import argparse

from benchmarks import small_objects
from tests import _postgres as postgres


def main(argv: list[str] | None = None) -> list[tuple[str, int, dict[str, dict[str, float]]]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    configs: list[tuple[str, int]] = [("SQLite", 1)]
    reason = postgres.unreachable()
    if reason is None:
        configs += [("PostgreSQL", 1), ("PostgreSQL", 2), ("PostgreSQL", 4)]
    else:
        print(f"PostgreSQL rows skipped: {reason}")
    results = []
    for database, workers in configs:
        env = {"GATEWAY_WORKERS": str(workers)}
        url = postgres.create_database() if database == "PostgreSQL" else None
        if url:
            env["GATEWAY_DATABASE_URL"] = url
        try:
            results.append((database, workers,
                            small_objects.run(args.concurrency, args.seconds, env=env)))
        finally:
            if url:
                postgres.drop_database(url)
    print(f"4 KiB objects, concurrency {args.concurrency}, {args.seconds:.0f} s each (fs backend)")
    print(f"{'database':<11} {'workers':>7} {'PUT/s':>8} {'GET/s':>8} {'errors':>7}")
    for database, workers, r in results:
        errors = r["put"]["errors"] + r["get"]["errors"]
        print(f"{database:<11} {workers:>7} {r['put']['rps']:>8.0f} {r['get']['rps']:>8.0f} "
              f"{errors:>7.0f}")
    return results


if __name__ == "__main__":
    main()
