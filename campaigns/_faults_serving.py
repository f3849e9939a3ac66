"""Faults of serving: a stop under load; clients that crawl."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from campaigns._faultkit import (
    KiB,
    MiB,
    Phase,
    answered,
    check_no_internal_errors,
    closed_by_peer,
    connect,
    has_setting,
    head_status,
    http_status,
    md5,
    outcome,
    percentile,
    presigned,
    read_head,
    refuses_connections,
    rss_mb,
    server_has_connection,
    staging_files,
    target_of,
    trickle,
    until,
)
from campaigns._gateway import running_gateway, s3_client
from campaigns._report import Report
from tests._server import GatewayProcess, run_cli_here

# -- graceful shutdown -----------------------------------------------------------------------


#: Seconds in-flight requests get after SIGTERM: the slow ones below need about 2 s.
GRACE = 6


def graceful_shutdown(work: Path, report: Report, long: bool) -> None:
    """Each stop has slow uploads and downloads in flight that finish within the grace,
    and one upload that would outlive it; the next start checks what the previous one
    acknowledged is there, whole, and that the cut upload left nothing."""
    phase = Phase(report, "graceful shutdown")
    if not has_setting("shutdown_grace_seconds"):
        report.fail("graceful shutdown: the gateway has no GATEWAY_SHUTDOWN_GRACE_SECONDS")
    report.figure("graceful shutdown: grace seconds", GRACE)
    data = work / "data"
    acknowledged: dict[str, bytes] = {}
    cycles = 3 if long else 1
    for cycle in range(cycles + 1):
        gw = GatewayProcess(data, env_extra={"GATEWAY_SHUTDOWN_GRACE_SECONDS": str(GRACE)})
        gw.start()
        try:
            s3 = s3_client(gw)
            if cycle == 0:
                s3.create_bucket(Bucket="drain")
            else:
                _check_after_restart(report, s3, data, acknowledged, cycle - 1)
            if cycle < cycles:
                acknowledged = _stop_under_load(phase, report, gw, s3, cycle,
                                                in_flight=8 if long else 4)
        finally:
            gw.stop()
        check_no_internal_errors(report, "graceful shutdown", gw)
    phase.close()


def _check_after_restart(report: Report, s3: Any, data: Path, acknowledged: dict[str, bytes],
                         cycle: int) -> None:
    for key, body in acknowledged.items():
        status = head_status(s3, "drain", key)
        if report.check(status == 200, f"graceful shutdown: {key} lost after restart"):
            got = s3.get_object(Bucket="drain", Key=key)["Body"].read()
            report.check(md5(got) == md5(body),
                         f"graceful shutdown: {key} damaged after restart")
        report.add("graceful shutdown: drained uploads found whole after restart",
                   status == 200)
    report.check(head_status(s3, "drain", f"outlived-{cycle}") == 404,
                 "graceful shutdown: an upload cut by the grace is visible")
    staging = staging_files(data / "objects")
    report.check(not staging, f"graceful shutdown: staging files left: {staging}")


def _stop_under_load(phase: Phase, report: Report, gw: GatewayProcess, s3: Any, cycle: int,
                     in_flight: int) -> dict[str, bytes]:
    """SIGTERM with slow uploads and downloads in flight; the uploads it acknowledged."""
    stored = {f"down-{cycle}-{n}": os.urandom(4 * MiB) for n in range(in_flight // 2)}
    for key, body in stored.items():
        s3.put_object(Bucket="drain", Key=key, Body=body)
    results: dict[str, tuple[int, str]] = {}
    uploaded: dict[str, bytes] = {}
    ready: list[threading.Event] = []
    threads: list[threading.Thread] = []

    def upload(key: str, chunks: Any, size: int) -> Callable[[], None]:
        url = presigned(s3, "put_object", "drain", key)

        def put() -> None:
            status, _ = http_status(lambda: httpx.put(
                url, content=chunks(), headers={"Content-Length": str(size)}, timeout=60))
            results[key] = (status, "")

        return put

    for n in range(in_flight // 2):
        key = f"up-{cycle}-{n}"
        started = threading.Event()
        uploaded[key], chunks = trickle(2 * MiB, 128 * KiB, 0.1, started)  # ~1.6 s
        ready.append(started)
        threads.append(threading.Thread(target=upload(key, chunks, 2 * MiB)))
    for key in stored:
        started = threading.Event()
        url = presigned(s3, "get_object", "drain", key)

        def get(key: str = key, url: str = url, started: threading.Event = started) -> None:
            digest = hashlib.md5()
            try:
                with httpx.stream("GET", url, timeout=60) as response:
                    started.set()
                    for chunk in response.iter_raw(128 * KiB):  # ~1.5 s
                        digest.update(chunk)
                        time.sleep(0.03)
                    results[key] = (response.status_code, digest.hexdigest())
            except httpx.HTTPError as exc:
                results[key] = (0, type(exc).__name__)
            started.set()

        ready.append(started)
        threads.append(threading.Thread(target=get))
    started = threading.Event()
    ready.append(started)
    outlived_url = presigned(s3, "put_object", "drain", f"outlived-{cycle}")

    def outlive() -> None:  # ~16 s of body, unless the server answers or hangs up first
        status = _crawling_upload(outlived_url, 2 * MiB, 128 * KiB, 1.0, started)
        results[f"outlived-{cycle}"] = (status, "")

    outliving = threading.Thread(target=outlive)
    for thread in [*threads, outliving]:
        thread.start()
    for event in ready:
        event.wait(10)
    time.sleep(0.2)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    phase.injected()
    report.add("graceful shutdown: requests in flight at SIGTERM", len(threads) + 1)
    refused_after = until(lambda: refuses_connections(gw.port), 5, interval=0.05)
    if report.check(refused_after is not None,
                    "graceful shutdown: new connections were still accepted after SIGTERM"):
        report.figure("graceful shutdown: seconds until new connections refused",
                      round(refused_after or 0, 2))
    attempts = refusals = 0
    while any(t.is_alive() for t in threads) and time.monotonic() - signalled < 30:
        attempts += 1
        refusals += refuses_connections(gw.port)
        time.sleep(0.2)
    report.add("graceful shutdown: connection attempts while draining", attempts)
    report.check(refusals == attempts, f"graceful shutdown: {attempts - refusals} of "
                 f"{attempts} new connections accepted while draining")
    for thread in threads:
        thread.join(30)
    for key in uploaded:
        phase.saw(f"in-flight PutObject {key}", results.get(key, (0, ""))[0], [200])
    for key, body in stored.items():
        status, digest = results.get(key, (0, ""))
        if phase.saw(f"in-flight GetObject {key}", status, [200], digest):
            report.check(digest == md5(body), f"graceful shutdown: {key} arrived damaged")
    assert gw.proc is not None
    try:
        code: int | None = gw.proc.wait(GRACE + 10)
    except Exception:
        code = None
    exited = time.monotonic() - signalled
    if report.check(code is not None, f"graceful shutdown: still running {GRACE + 10} s after "
                    f"SIGTERM with a {GRACE} s grace"):
        report.figure("graceful shutdown: seconds from SIGTERM to exit (max)", round(max(
            exited, report.figures.get("graceful shutdown: seconds from SIGTERM to exit (max)",
                                       0)), 2))
        report.check(exited < GRACE + 5,
                     f"graceful shutdown: exit took {exited:.1f} s with a {GRACE} s grace")
        # uvicorn re-raises SIGTERM once it has shut down: -15 is a clean exit, as 0 is.
        report.check(code in (0, -signal.SIGTERM), f"graceful shutdown: exit status {code}")
    outliving.join(30)
    phase.saw("PutObject outliving the grace", results.get(f"outlived-{cycle}", (0, ""))[0],
              [0, 503])
    return {key: body for key, body in uploaded.items() if results.get(key, (0, ""))[0] == 200}


def _crawling_upload(url: str, size: int, chunk: int, pause: float,
                     started: threading.Event) -> int:
    """A PUT whose body comes ``chunk`` bytes every ``pause`` seconds, given up as soon as
    the server answers or closes; the status it answered (0: none)."""
    address, path = target_of(url)
    with connect(address) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        for _ in range(0, size, chunk):
            try:
                sock.sendall(os.urandom(chunk))
            except OSError:
                return 0
            started.set()
            if until(lambda: answered(sock), pause, interval=0.05) is not None:
                break
        try:
            return read_head(sock)[0]
        except (OSError, ValueError, IndexError):
            return 0


# -- slow clients -----------------------------------------------------------------------------

HEADER_TIMEOUT = 2
IDLE_TIMEOUT = 3


def slow_clients(work: Path, report: Report, long: bool) -> None:
    missing = [name for name in ("request_header_timeout", "idle_timeout")
               if not has_setting(name)]
    if missing:
        report.fail(f"slow clients: the gateway has no setting(s) {', '.join(missing)}")
    report.figure("slow clients: header / idle timeout seconds",
                  f"{HEADER_TIMEOUT} / {IDLE_TIMEOUT}")
    env = {"GATEWAY_REQUEST_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
           "GATEWAY_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}
    with running_gateway(work / "data", **env) as gw:
        s3 = s3_client(gw)
        s3.create_bucket(Bucket="slow")
        s3.put_object(Bucket="slow", Key="small", Body=b"s" * 4096)
        done = run_cli_here(gw.data_dir, "quota", "set", "slow", "--max-bytes", "1GiB")
        report.check(done.returncode == 0, f"slow clients: quota set: {done.stderr}")
        _slowloris(report, gw, s3, sockets=400 if long else 200)
        _stalled_upload(report, gw, s3)
        _unread_download(report, gw, s3, size=(100 if long else 50) * MiB)
        check_no_internal_errors(report, "slow clients", gw)


class _Served:
    """Normal requests made in the background while slow clients hold connections."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        calls = (lambda: self.s3.get_object(Bucket="slow", Key="small")["Body"].read(),
                 lambda: self.s3.put_object(Bucket="slow", Key="served", Body=b"p" * 4096),
                 lambda: self.s3.head_object(Bucket="slow", Key="small"))
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            status, code = outcome(calls[n % len(calls)])
            self.latencies.append(time.monotonic() - started)
            if status != 200:
                self.failures.append(f"{status} {code}")
            time.sleep(0.05)

    def __enter__(self) -> _Served:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _baseline(s3: Any, n: int = 20) -> float:
    latencies = []
    for _ in range(n):
        started = time.monotonic()
        s3.get_object(Bucket="slow", Key="small")["Body"].read()
        latencies.append(time.monotonic() - started)
    return percentile(latencies, 0.5)


def _slowloris(report: Report, gw: GatewayProcess, s3: Any, sockets: int) -> None:
    baseline = _baseline(s3)
    head = (b"GET /slow/small HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            + b"a" * 200 + b"\r\n\r\n")
    opened: list[tuple[socket.socket, float]] = []
    closed_after: list[float] = []
    with _Served(s3) as served:
        for _ in range(sockets):
            try:
                opened.append((connect(("127.0.0.1", gw.port)), time.monotonic()))
            except OSError as exc:
                report.fail(f"slow clients: slowloris socket refused: {exc}")
                break
        report.add("slow clients: slowloris sockets opened", len(opened))
        alive = dict.fromkeys(range(len(opened)), 0)
        deadline = time.monotonic() + HEADER_TIMEOUT + 8
        while alive and time.monotonic() < deadline:
            for index in list(alive):
                sock, since = opened[index]
                sent = alive[index]
                try:
                    if closed_by_peer(sock):
                        raise ConnectionError
                    sock.send(head[sent:sent + 1])
                    alive[index] = sent + 1
                except OSError:
                    closed_after.append(time.monotonic() - since)
                    del alive[index]
            time.sleep(1.0)
    for sock, _ in opened:
        sock.close()
    report.add("slow clients: slowloris sockets closed by the server", len(closed_after))
    report.check(not alive, f"slow clients: {len(alive)} of {len(opened)} slowloris sockets "
                 f"were still open {HEADER_TIMEOUT + 8} s later")
    if closed_after:
        report.figure("slow clients: slowloris closed after seconds (min / max)",
                      f"{min(closed_after):.1f} / {max(closed_after):.1f}")
        report.check(min(closed_after) >= HEADER_TIMEOUT - 1,
                     f"slow clients: a slowloris socket was closed after "
                     f"{min(closed_after):.1f} s, before the header timeout")
    report.add("slow clients: requests served during slowloris", len(served.latencies))
    report.check(not served.failures,
                 f"slow clients: requests failed during slowloris: {served.failures[:5]}")
    p50, p99 = percentile(served.latencies, 0.5), percentile(served.latencies, 0.99)
    report.figure("slow clients: latency p50 ms, before / during slowloris",
                  f"{baseline * 1000:.1f} / {p50 * 1000:.1f}")
    report.figure("slow clients: latency p99 ms during slowloris", round(p99 * 1000, 1))
    report.check(len(served.latencies) >= 10,
                 f"slow clients: only {len(served.latencies)} requests served during slowloris")
    report.check(p99 < 2.0, f"slow clients: p99 latency {p99:.2f} s during slowloris")


def _stalled_upload(report: Report, gw: GatewayProcess, s3: Any) -> None:
    """Content-Length 10 MiB, 1 MiB sent, then nothing."""
    address, path = target_of(presigned(s3, "put_object", "slow", "stalled"))
    sock = connect(address)
    sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                 f"Content-Length: {10 * MiB}\r\n\r\n".encode())
    sock.sendall(os.urandom(MiB))
    stalled = time.monotonic()
    report.add("slow clients: stalled uploads")
    closed = until(lambda: closed_by_peer(sock), IDLE_TIMEOUT + 10, interval=0.1)
    sock.close()
    if report.check(closed is not None, f"slow clients: a stalled upload was still open "
                    f"{IDLE_TIMEOUT + 10} s later"):
        report.figure("slow clients: stalled upload closed after seconds",
                      round(time.monotonic() - stalled, 1))
        report.check(closed is not None and closed >= IDLE_TIMEOUT - 1,
                     f"slow clients: a stalled upload was closed after {closed:.1f} s")
    report.check(outcome(lambda: s3.head_object(Bucket="slow", Key="stalled"))[0] == 404,
                 "slow clients: a stalled upload left an object")
    staging = until(lambda: not staging_files(gw.data_dir / "objects"), 5)
    report.check(staging is not None, "slow clients: a stalled upload left staging files: "
                 f"{staging_files(gw.data_dir / 'objects')}")
    usage = run_cli_here(gw.data_dir, "quota", "get", "slow", "--json")
    import json

    reserved = json.loads(usage.stdout).get("reserved_bytes") if usage.returncode == 0 else None
    report.check(reserved == 0, f"slow clients: a stalled upload still holds quota: {reserved}")


def _unread_download(report: Report, gw: GatewayProcess, s3: Any, size: int) -> None:
    """A GET of ``size`` bytes whose client stops reading after the first 64 KiB."""
    s3.put_object(Bucket="slow", Key="large", Body=os.urandom(size))
    assert gw.proc is not None
    pid = gw.proc.pid
    before = rss_mb(pid)
    address, path = target_of(presigned(s3, "get_object", "slow", "large"))
    sock = connect(address, rcvbuf=64 * KiB)
    client_port = sock.getsockname()[1]
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode())
    status, _, _ = read_head(sock)
    report.check(status == 200, f"slow clients: the unread GET answered {status}")
    stopped = time.monotonic()
    report.add("slow clients: unread downloads")
    peak = before
    closed_at: float | None = None
    with _Served(s3) as served:
        while time.monotonic() - stopped < IDLE_TIMEOUT + 10:
            peak = max(peak, rss_mb(pid))
            if not server_has_connection(pid, client_port):
                closed_at = time.monotonic() - stopped
                break
            time.sleep(0.2)
    received = 0
    sock.settimeout(10)
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except OSError:
        pass
    sock.close()
    if report.check(closed_at is not None, f"slow clients: an unread download was still open "
                    f"{IDLE_TIMEOUT + 10} s later"):
        report.figure("slow clients: unread download closed after seconds",
                      round(closed_at or 0, 1))
    report.check(received < size, "slow clients: the unread download was delivered whole")
    report.figure("slow clients: server RSS MB before / peak during the unread download",
                  f"{before:.0f} / {peak:.0f}")
    report.check(peak - before < 32, f"slow clients: server RSS grew {peak - before:.0f} MB "
                 "while a download was not read")
    report.add("slow clients: requests served during the unread download",
               len(served.latencies))
    report.check(not served.failures, f"slow clients: requests failed during the unread "
                 f"download: {served.failures[:5]}")
