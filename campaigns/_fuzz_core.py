"""The fuzz campaign's bookkeeping: Hypothesis runs driven outside pytest, every answer
counted by status class, every 5xx, slow answer and crash recorded as a failure."""

from __future__ import annotations

import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning, Unsatisfiable

from campaigns._fuzz_wire import Header, RawResponse, Signer, build_request, send
from campaigns._report import Report
from tests._server import GatewayProcess

T = TypeVar("T")

#: An answer slower than this is a failure: a parser that blows up on crafted input.
SLOW_SECONDS = 15.0


def shown(value: Any, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} chars)"


def _one_line(value: str | bytes) -> str | bytes:
    """A header value as one line: CR and LF would end it (and are tested elsewhere)."""
    if isinstance(value, bytes):
        return value.replace(b"\r", b"").replace(b"\n", b"")
    return value.replace("\r", "").replace("\n", "")


class Fuzzer:
    def __init__(self, report: Report, server: GatewayProcess, *, seed: int) -> None:
        self.report = report
        self.server = server
        self.seed = seed
        self.signer = Signer(server.access_key, server.secret_key, self.host)
        self.statuses: dict[str, Counter[str]] = {}
        self.slowest = 0.0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    # -- running inputs ------------------------------------------------------------------------
    def explore(self, target: str, strategy: st.SearchStrategy[T],
                body: Callable[[T], None], examples: int, *, salt: str = "") -> int:
        """Run ``body`` on ``examples`` inputs Hypothesis draws from ``strategy``. ``body``
        records what it finds; an exception escaping it is a fault of the campaign, recorded
        and the run goes on (Hypothesis never shrinks: every input is a fresh one)."""
        count = 0

        @settings(max_examples=examples, deadline=None, database=None,
                  phases=(Phase.explicit, Phase.generate),
                  suppress_health_check=list(HealthCheck))
        @hypothesis_seed(self.seed ^ zlib.crc32(f"{target} {salt}".encode()))
        @given(strategy)
        def case(value: T) -> None:
            nonlocal count
            count += 1
            try:
                body(value)
            except Exception as exc:
                self.report.fail(f"{target}: the campaign itself failed on {shown(value)}: "
                                 f"{exc!r}")

        try:
            with warnings.catch_warnings():
                # Third-party strategies (Schemathesis') may trip Hypothesis' deprecation
                # notes; under pytest's "warnings are errors" they would stop the target.
                warnings.simplefilter("ignore", HypothesisDeprecationWarning)
                case()
        except Unsatisfiable:
            # Nothing can be generated (e.g. a Schemathesis negative case for an operation
            # whose every input is valid): nothing to try.
            self.report.add("strategies without inputs")
        except Exception as exc:
            self.report.fail(f"{target}: Hypothesis stopped: {exc!r}")
        self.inputs(target, count)
        return count

    def inputs(self, target: str, count: int) -> None:
        self.report.add(f"inputs: {target}", count)
        self.report.add("inputs tried", count)

    # -- answers -------------------------------------------------------------------------------
    def record(self, target: str, status: int | None, what: Any, *, seconds: float = 0.0,
               detail: str = "") -> None:
        """Count one answer (None: the connection closed without one)."""
        counts = self.statuses.setdefault(target, Counter())
        if status is None:
            counts["no answer"] += 1
            self.report.add("no answer")
            return
        # 501: a feature this gateway deliberately lacks (explicit grants, MFA delete, …),
        # an answer it promises (its OpenAPI document lists them); counted apart.
        klass = "501" if status == 501 else f"{status // 100}xx"
        counts[klass] += 1
        self.report.add(f"responses {klass}")
        if status >= 500 and status != 501:
            self.report.fail(f"{target}: {status} {detail[:200]} for {shown(what)}")
        self.slowest = max(self.slowest, seconds)
        if seconds > SLOW_SECONDS:
            self.report.fail(f"{target}: answered after {seconds:.1f}s for {shown(what)}")

    def raw(self, target: str, method: str, path: str, headers: list[Header],
            body: bytes = b"", *, what: Any = None, content_length: bool = True,
            shut_write: bool = False, answer_required: bool = True) -> RawResponse | None:
        """Send a request as bytes; count and check its answer."""
        headers = [(name, _one_line(value)) for name, value in headers]
        data = build_request(method, path, headers, body, host=self.host,
                             content_length=content_length)
        response = send(self.server.port, data, shut_write=shut_write)
        shown_what = what if what is not None else (method, path, headers)
        if response is None:
            self.record(target, None, shown_what)
            if answer_required:
                self.report.fail(f"{target}: no answer for {shown(shown_what)}")
            return None
        self.record(target, response.status, shown_what, seconds=response.seconds,
                    detail=response.body.decode("utf-8", "replace"))
        if (response.status >= 400 and method != "HEAD" and response.body
                and "x-amz-request-id" in response.headers and response.error_code is None):
            self.report.fail(f"{target}: {response.status} without an S3 error code for "
                             f"{shown(shown_what)}: {response.body[:200]!r}")
        return response

    def sign(self, method: str, path: str, **kw: Any) -> list[Header]:
        signed = self.signer.sign(method, path, **kw)
        return list(signed.headers)

    # -- the server ----------------------------------------------------------------------------
    def alive(self, target: str) -> None:
        """After each target: the process still runs and /readyz answers 200; a dead server
        is a failure, restarted so that the campaign can go on."""
        proc = self.server.proc
        if proc is None or proc.poll() is not None:
            self.report.add("server crashes")
            self.report.fail(f"{target}: the gateway died (exit {proc.returncode if proc else '?'})"
                             f": {self.server.log()[-1500:]}")
            self.server.start()
            self.report.add("server restarts")
            return
        try:
            ready = httpx.get(self.server.url + "/readyz", timeout=10).status_code
        except httpx.HTTPError as exc:
            ready = repr(exc)  # type: ignore[assignment]
        if ready != 200:
            self.report.fail(f"{target}: /readyz answered {ready} afterwards")

    def summarize(self) -> None:
        for target, counts in self.statuses.items():
            self.report.figure(f"statuses: {target}", ", ".join(
                f"{name} {counts[name]:,}" for name in sorted(counts)))
