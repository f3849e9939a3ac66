"""Hostile input: fuzz every parser the outside world reaches, against one real gateway.

Targets, each driven by Hypothesis (outside pytest: ``@given`` functions called directly),
over HTTP as raw bytes unless said otherwise:

- malformed HTTP (request line, header syntax, body framing);
- SigV4 in the Authorization header, and presigned query strings (SigV4 and SigV2);
- aws-chunked bodies: bad chunk sizes and signatures, length mismatches, truncation,
  broken trailers, in the three streaming modes — refused means no object was written,
  accepted means the object holds exactly the bytes sent;
- Range and conditional headers (GET, HEAD), copy sources with their ranges and
  conditions — with an exact oracle (status and bytes) for the values built from known
  parts, and "never a 5xx" for junk;
- the XML control documents: a corpus of attacks (billion laughs, quadratic blowup,
  external entities towards a listener that counts connections and towards
  ``file:///etc/passwd``, DTDs, deep nesting, bodies beyond the cap) against every
  endpoint, then mutations of valid documents and random documents of their elements;
- POST policies and multipart form bodies;
- the JSON API's ``where``/``order_by``/``cursor``/``total`` language (httpx), and
  Schemathesis over every operation of the served OpenAPI document (positive and
  negative cases);
- the same parsers in this process (many more inputs per second).

The figures: inputs tried per target, answers by status class, 5xx answers (must be 0),
parser defects (must be 0), server crashes (must be 0; after each target the process must
still run and ``/readyz`` answer), and tracebacks in the server log (must be 0).

``GATEWAY_FUZZ_SEED`` fixes the seed (printed as a figure) to replay a run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from campaigns import _fuzz_api, _fuzz_bodies, _fuzz_inproc, _fuzz_s3
from campaigns._fuzz_core import Fuzzer
from campaigns._gateway import running_gateway, s3_client
from campaigns._report import Report

LOG_MARKERS = ("Traceback", "Exception in ASGI application")


@dataclass(frozen=True)
class Budget:
    """Inputs per target."""

    http: int  # each S3 and JSON API target
    slow_http: int  # targets whose inputs cost several requests (chunked, POST, XML)
    in_process: int  # each parser target run in this process
    schemathesis: int  # per operation and generation mode


SHORT = Budget(http=100, slow_http=70, in_process=150, schemathesis=1)
LONG = Budget(http=3000, slow_http=1500, in_process=5000, schemathesis=25)


def run(workdir: Path, *, long: bool = False, seed: int | None = None) -> Report:
    report = Report("fuzz", long=long)
    if seed is None:
        seed = int(os.environ.get("GATEWAY_FUZZ_SEED") or random.randrange(2**32))
    report.figure("seed", seed)
    budget = LONG if long else SHORT
    canary = _fuzz_bodies.Canary()
    try:
        with running_gateway(workdir / "data") as server:
            fuzzer = Fuzzer(report, server, seed=seed)
            s3 = s3_client(server)
            fixture = _fuzz_s3.setup(fuzzer, s3, random.Random(seed))
            upload = _fuzz_bodies.setup_xml(s3)
            _fuzz_bodies.setup_post(s3)
            api = _fuzz_api.setup(fuzzer, _fuzz_s3.BUCKET)
            steps: list[tuple[str, Callable[[], None]]] = [
                ("malformed HTTP", lambda: _fuzz_s3.fuzz_wire(fuzzer, budget.http // 2)),
                ("SigV4 header", lambda: _fuzz_s3.fuzz_sigv4_header(fuzzer, budget.http)),
                ("presigned", lambda: _fuzz_s3.fuzz_presigned(fuzzer, fixture, budget.http)),
                ("aws-chunked", lambda: _fuzz_s3.fuzz_aws_chunked(fuzzer, fixture,
                                                                  budget.slow_http)),
                ("Range and conditions", lambda: _fuzz_s3.fuzz_range_conditional(
                    fuzzer, fixture, budget.http)),
                ("copy source", lambda: _fuzz_s3.fuzz_copy_source(fuzzer, fixture,
                                                                  budget.http)),
                ("XML", lambda: _fuzz_bodies.fuzz_xml(fuzzer, upload, canary,
                                                      budget.slow_http, long=long)),
                ("POST policy", lambda: _fuzz_bodies.fuzz_post_policy(fuzzer, fixture,
                                                                      budget.slow_http)),
                ("where/cursor", lambda: _fuzz_api.fuzz_keyset(fuzzer, api, budget.http)),
                ("Schemathesis", lambda: _fuzz_api.fuzz_schemathesis(fuzzer, api,
                                                                     budget.schemathesis)),
                ("in-process parsers", lambda: _fuzz_inproc.run_all(fuzzer, api.lists,
                                                                    budget.in_process)),
            ]
            for name, step in steps:
                started = time.monotonic()
                step()
                report.figure(f"seconds: {name}", round(time.monotonic() - started, 1))
                fuzzer.alive(name)
            api.client.close()
            fuzzer.summarize()
            for status in ("2xx", "3xx", "4xx", "5xx"):
                report.figures.setdefault(f"responses {status}", 0)
            report.figures.setdefault("server crashes", 0)
            report.figures.setdefault("parser defects", 0)
            report.figure("slowest answer (s)", round(fuzzer.slowest, 2))
            log = server.log()
    finally:
        canary.close()
    tracebacks = sum(log.count(marker) for marker in LOG_MARKERS)
    report.figure("tracebacks in the server log", tracebacks)
    if tracebacks:
        at = min(i for i in (log.find(m) for m in LOG_MARKERS) if i >= 0)
        report.fail(f"the server log holds {tracebacks} traceback(s); the first: "
                    f"{log[max(0, at - 300):at + 2500]}")
    return report
