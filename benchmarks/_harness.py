"""Start the servers a measurement compares, watch their memory and CPU."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from tempfile import TemporaryDirectory

import boto3
import psutil
from botocore.config import Config

from tests._server import GatewayProcess, free_port, wait_until_ready


@contextmanager
def running_gateway(**env: str) -> Iterator[GatewayProcess]:
    with TemporaryDirectory(prefix="gw-bench-") as tmp:
        server = GatewayProcess(Path(tmp) / "data", env_extra=env).start()
        try:
            yield server
        finally:
            server.stop()


class BareProcess:
    """:mod:`benchmarks.bare_app` on uvicorn with the gateway's settings (uvloop and
    httptools where installed, no access log, no server header, a date header)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BareProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log",
             "--no-server-header"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until_ready(self.proc, self.url + "/ready", lambda status: status == 200,
                         "bare app", lambda: "", self.stop, 30)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@contextmanager
def running_bare() -> Iterator[BareProcess]:
    server = BareProcess().start()
    try:
        yield server
    finally:
        server.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers) so far."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def client(server: GatewayProcess) -> object:
    return boto3.client("s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1",
                        config=Config(signature_version="s3v4"))


class PeakRSS:
    """Samples a process's resident set (with its children) every few milliseconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            with suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())
