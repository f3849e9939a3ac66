"""Start a real gateway process on a free port, for black-box tests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT_ACCESS_KEY = "GWTESTROOTACCESSKEY1"
ROOT_SECRET_KEY = "test-root-secret-key-0123456789abcdefghij"


def run_cli(data: Path, *args: str, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gateway <args> --data-dir <data>``, as an operator runs it; the caller checks the
    exit code."""
    if database_for(data) and "GATEWAY_DATABASE_URL" not in (env or {}):
        env = {**(os.environ if env is None else env),
               "GATEWAY_DATABASE_URL": database_for(data)}
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--data-dir", str(data)],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          check=False, env=env)


#: ``GATEWAY_TEST_DATABASE=postgresql``: every gateway a test starts (and the CLI run on its
#: data dir) uses a fresh PostgreSQL database instead of SQLite in its data dir, so any
#: module can be run on PostgreSQL.
_DATABASES: dict[str, str] = {}


def database_for(data: Path) -> str:
    """The database URL tests use with the data dir ``data`` ("" for its own SQLite)."""
    if os.environ.get("GATEWAY_TEST_DATABASE", "sqlite") != "postgresql":
        return ""
    key = str(Path(data).resolve())
    if key not in _DATABASES:
        from tests import _postgres

        _DATABASES[key] = _postgres.create_database()
    return _DATABASES[key]


def run_cli_here(data: Path, *args: str, stdin: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli` by the CLI's own ``main`` in this process: the same parsing, exit
    codes and output (what it logs at WARNING or above lands on its standard error, as in
    a process without logging configured), with the environment the spawned command would
    get (``env``, else this process's), without an interpreter start-up (~0.7 s) each time.
    Tests keep at least one spawned :func:`run_cli` per command family."""
    from gateway.cli import main

    environ = dict(os.environ if env is None else env)
    if database_for(data) and "GATEWAY_DATABASE_URL" not in (env or {}):
        environ["GATEWAY_DATABASE_URL"] = database_for(data)
    argv = [*args, "--data-dir", str(data)]
    saved_env, saved_stdin = dict(os.environ), sys.stdin
    out, err = io.StringIO(), io.StringIO()
    logged = logging.StreamHandler(err)
    logged.setLevel(logging.WARNING)
    root = logging.getLogger()
    try:
        os.environ.clear()
        os.environ.update(environ)
        sys.stdin = io.StringIO(stdin or "")
        root.addHandler(logged)
        with redirect_stdout(out), redirect_stderr(err):
            code = _call_main(main, argv)
    finally:
        root.removeHandler(logged)
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _call_main(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """``main(argv)``'s exit code; in a thread of its own when called from a running event
    loop (the CLI runs its own)."""

    def call() -> int:
        try:
            return main(argv)
        except SystemExit as exc:  # argparse's usage errors
            return exc.code if isinstance(exc.code, int) else 1

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def cli_json(data: Path, *args: str) -> dict[str, Any]:
    """A CLI command that must succeed, with ``--json``; its object ({} for none). Run in
    this process (:func:`run_cli_here`): fixtures set up users and tokens with it; the
    commands themselves are tested spawned elsewhere."""
    result = run_cli_here(data, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    out = result.stdout.strip()
    return dict(json.loads(out)) if out.startswith("{") else {}


#: Ports for test servers: below Linux's ephemeral range (32768-60999), so no outgoing
#: connection takes one between its check and its server's bind; one block per pytest-xdist
#: worker, so parallel workers never hand out the same port.
_PORT_BLOCK = 1500
_ports: Iterator[int] | None = None


def _port_candidates() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = 17000 + (index % 10) * _PORT_BLOCK
    start = random.randrange(_PORT_BLOCK)
    while True:
        for offset in range(_PORT_BLOCK):
            yield base + (start + offset) % _PORT_BLOCK


def free_port() -> int:
    """A port no server of this test process has had, and free right now."""
    global _ports
    if _ports is None:
        _ports = _port_candidates()
    for port in _ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("unreachable")


def wait_until_ready(proc: subprocess.Popen[bytes], url: str, ready: Callable[[int], bool],
                     what: str, log: Callable[[], str], stop: Callable[[], None],
                     timeout: float) -> None:
    """Poll ``url`` until its status is ``ready``; raise with the server's log if the
    process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log()}")
        try:
            if ready(httpx.get(url, timeout=1).status_code):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"{what} did not become ready:\n{log()}")


@dataclass
class GatewayProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env_extra: dict[str, str] = field(default_factory=dict)
    access_key: str = ROOT_ACCESS_KEY
    secret_key: str = ROOT_SECRET_KEY
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "GATEWAY_DATA_DIR": str(self.data_dir),
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_ROOT_ACCESS_KEY": self.access_key,
            "GATEWAY_ROOT_SECRET_KEY": self.secret_key,
            "GATEWAY_LOG_LEVEL": "warning",
            # The reference's quota defaults (100 MiB objects, 10,000 per bucket) and rate
            # limits are tested where they matter (test_quotas, test_ratelimit); the other
            # suites move gigabytes and thousands of requests.
            "GATEWAY_QUOTA_BUCKET_BYTES": "unlimited",
            "GATEWAY_QUOTA_BUCKET_OBJECTS": "unlimited",
            "GATEWAY_QUOTA_MAX_OBJECT_SIZE": "unlimited",
            "GATEWAY_RATE_LIMITS": "off",
        })
        if database_for(self.data_dir):
            env["GATEWAY_DATABASE_URL"] = database_for(self.data_dir)
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"],
                                     env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until_ready(self.proc, self.url + "/readyz", lambda status: status == 200,
                         "gateway", self.log, self.stop, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """kill -9: no shutdown handlers run."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
