"""Tools of the faults campaign: a TCP proxy that can be cut, a small tmpfs, status
tallies, and clients that speak plain HTTP/1.1 over sockets (slow ones included)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from campaigns._report import Report
from gateway.settings import Settings
from tests._server import GatewayProcess, run_cli_here

KiB = 1024
MiB = 1024 * KiB
API = "/api/v1/storage"

# -- outcomes ------------------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a boto3 call; status 0 when no answer came."""
    try:
        result = call()
    except ClientError as exc:
        meta = exc.response.get("ResponseMetadata", {})
        return int(meta.get("HTTPStatusCode", 0)), str(exc.response.get("Error", {})
                                                        .get("Code", ""))
    except (BotoCoreError, OSError) as exc:
        return 0, type(exc).__name__
    meta = result.get("ResponseMetadata", {}) if isinstance(result, dict) else {}
    return int(meta.get("HTTPStatusCode", 200)), ""


def xml_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>")
    return body[start + 6:end].decode(errors="replace") if 0 <= start < end else ""


@dataclass
class Phase:
    """One fault's figures: what was injected, what requests met while it lasted, and how
    long the service took to recover once it was lifted."""

    report: Report
    name: str
    statuses: Counter[int] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)

    def injected(self, count: int = 1) -> None:
        self.report.add(f"{self.name}: faults injected", count)

    def saw(self, what: str, status: int, allowed: Iterable[int], detail: str = "") -> bool:
        """Count a request made during the fault; a failure unless ``status`` is allowed."""
        self.statuses[status] += 1
        allowed = tuple(allowed)
        return self.report.check(status in allowed,
                                 f"{self.name}: {what} answered {status or 'nothing'}"
                                 f"{f' ({detail})' if detail else ''}, expected "
                                 f"{' or '.join(map(str, allowed))}")

    def recovered(self, seconds: float) -> None:
        self.recoveries.append(seconds)

    def close(self) -> None:
        self.report.figure(f"{self.name}: requests during fault", sum(self.statuses.values()))
        self.report.figure(f"{self.name}: statuses during fault", ", ".join(
            f"{status or 'none'} x{n}" for status, n in sorted(self.statuses.items())))
        if self.recoveries:
            self.report.figure(f"{self.name}: recovery seconds (max)",
                               round(max(self.recoveries), 2))


def until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` held, or None if it never did within ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # not yet: look again
            pass
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


# -- a proxy that can be cut ---------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``cut()`` closes every connection and
    the listener (new connections are refused); ``restore()`` listens again on the same
    port. ``lose_commit_ack(marker)``: the next PostgreSQL transaction that sends
    ``marker`` has its COMMIT delivered, then its connection reset before the answer comes
    back (the client cannot know whether it committed). Runs its own event loop in a
    thread."""

    def __init__(self, target: tuple[str, int], port: int) -> None:
        self.target = target
        self.port = port
        self.connections = 0
        self.commit_lost = threading.Event()
        self._commit_marker: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        marked = dropping = False

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       outgoing: bool) -> None:
            nonlocal marked, dropping
            try:
                while data := await src.read(256 * 1024):
                    marker = self._commit_marker
                    if outgoing and marker is not None:
                        marked = marked or marker in data
                        if marked and b"ROLLBACK" in data:
                            marked = False
                        elif marked and b"COMMIT" in data:
                            self._commit_marker = None
                            dropping = True  # the server's answer never goes back
                            dst.write(data)
                            await dst.drain()
                            writer.transport.abort()
                            self.commit_lost.set()
                            await asyncio.sleep(0.3)  # while the server commits
                            up_writer.transport.abort()
                            return
                    if dropping:
                        return
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        except asyncio.CancelledError:
            pass  # closing; a handler ending cancelled would be reported by asyncio
        finally:
            self._writers.difference_update((writer, up_writer))

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(OSError):
                sock = transport.get_extra_info("socket")
                if sock is not None:  # a reset, as a dead host's network would give
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
            transport.abort()
        self._writers.clear()

    def lose_commit_ack(self, marker: bytes) -> None:
        self.commit_lost.clear()
        self._commit_marker = marker

    def start(self) -> TcpProxy:
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    async def _close(self) -> None:
        await self._cut()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


# -- a small disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[str | None]:
    """A tmpfs of ``size`` mounted on ``path`` (unmounted after); yields None when mounting
    is not permitted here, with why as the value of the error instead."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        yield (done.stderr.strip() or f"mount exited {done.returncode}")
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path, chunk: int = 64 * 1024) -> int:
    """Write ``path`` until the medium is full; the bytes it took."""
    written = 0
    block = b"\0" * chunk
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                n = out.write(block[:chunk])
            except OSError:
                if chunk <= 512:
                    break
                chunk //= 2
                continue
            written += n or 0
    return written


def stray_files(root: Path, *, skip: Callable[[Path], bool] = lambda _: False) -> list[str]:
    """Regular files under ``root`` (relative names), except what ``skip`` accepts."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not skip(p))


# -- raw HTTP -------------------------------------------------------------------------------


def target_of(url: str) -> tuple[tuple[str, int], str]:
    """((host, port), path with query) of a URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname or "127.0.0.1", parts.port or 80), path


def connect(address: tuple[str, int], *, rcvbuf: int | None = None,
            timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting: it sets the window the server sees
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and the bytes of the body read with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head ({len(data)} bytes)")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """A whole response with a Content-Length body."""
    status, headers, body = read_head(sock)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(min(1 << 20, length - len(body)))
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk
    return status, headers, body


def _without_blocking(sock: socket.socket, probe: Callable[[socket.socket], bool]) -> bool:
    """``probe(sock)`` on a non-blocking socket: nothing to read yet is False, an error
    (a reset) True; the socket's timeout is restored."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        return probe(sock)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _drained_to_eof(sock: socket.socket) -> bool:
    while sock.recv(65536):
        pass
    return True


def closed_by_peer(sock: socket.socket) -> bool:
    """Without blocking: has the other end closed (or reset) the connection? Reads and
    drops whatever it sent before (an error answer)."""
    return _without_blocking(sock, _drained_to_eof)


def answered(sock: socket.socket) -> bool:
    """Without blocking or consuming anything: has the peer sent something, or closed?"""
    return _without_blocking(sock, lambda s: s.recv(1, socket.MSG_PEEK) is not None)


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def server_has_connection(pid: int, client_port: int) -> bool:
    """Whether the server process still holds its end of the connection from
    ``client_port`` open (not yet closed by it)."""
    import psutil

    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == client_port:
            return conn.status in (psutil.CONN_ESTABLISHED, psutil.CONN_CLOSE_WAIT)
    return False


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


# -- gateway helpers -------------------------------------------------------------------------------


def api_token(data_dir: Path, env: dict[str, str] | None = None) -> str:
    """A JSON API token of the root admin (storage read and write)."""
    done = run_cli_here(data_dir, "token", "create", "--user", "admin", "--name",
                        f"faults-{os.urandom(4).hex()}", "--permission=storage:read",
                        "--permission=storage:write", "--json",
                        env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"token create failed: {done.stderr}")
    return str(json.loads(done.stdout)["token"])


def api_client(server: GatewayProcess, token: str, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=server.url + API, timeout=timeout,
                        headers={"Authorization": f"Bearer {token}"})


def presigned(s3: Any, method: str, bucket: str, key: str, **params: Any) -> str:
    return str(s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key,
                                                         **params}, ExpiresIn=3600))


def http_status(call: Callable[[], httpx.Response]) -> tuple[int, httpx.Response | None]:
    try:
        response = call()
    except httpx.HTTPError:
        return 0, None
    return response.status_code, response


def head_status(s3: Any, bucket: str, key: str) -> int:
    return outcome(partial(s3.head_object, Bucket=bucket, Key=key))[0]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def internal_errors(server: GatewayProcess) -> int:
    """Requests the gateway answered with InternalError (each is logged with its cause)."""
    log = server.log()
    return log.count("internal error")


def check_no_internal_errors(report: Report, name: str, server: GatewayProcess) -> None:
    count = internal_errors(server)
    report.add(f"{name}: internal errors logged", count)
    if count:
        log = server.log()
        at = log.find("internal error")
        report.fail(f"{name}: the gateway logged {count} internal error(s):\n"
                    f"{log[at:at + 1500]}")


def staging_files(root: Path) -> list[str]:
    """Files in the local backend's staging areas (its instances' lock files aside)."""
    return stray_files(root / "tmp", skip=lambda p: p.suffix == ".lock")


def has_setting(name: str) -> bool:
    return any(f.name == name for f in fields(Settings))


def answer(response: httpx.Response) -> tuple[int, str, dict[str, str]]:
    code = xml_code(response.content)
    if not code and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        code = str(body.get("code") or body.get("error") or "")
    return response.status_code, code, {k.lower(): v for k, v in response.headers.items()}


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        value = call()
    except httpx.HTTPError as exc:
        value = (0, type(exc).__name__, {})
    return value, time.monotonic() - started


def trickle(size: int, chunk: int, pause: float, started: threading.Event | None = None,
             ) -> tuple[bytes, Callable[[], Iterator[bytes]]]:
    data = os.urandom(size)

    def body() -> Iterator[bytes]:
        for offset in range(0, size, chunk):
            yield data[offset:offset + chunk]
            if started is not None:
                started.set()
            time.sleep(pause)

    return data, body


class SlowUpload:
    """A presigned PUT of ``size`` random bytes trickled in 256 KiB pieces (10 a second), in
    a thread: a write in flight when a fault strikes. ``started`` is set once ``after``
    pieces have gone; ``status`` is its answer (0: none)."""

    def __init__(self, url: str, size: int, *, after: int = 1) -> None:
        self.url, self.size, self.after = url, size, after
        self.started = threading.Event()
        self.status = 0
        self._thread = threading.Thread(target=self._run)

    def _body(self) -> Iterator[bytes]:
        for n in range(self.size // (256 * KiB)):
            if n == self.after:
                self.started.set()
            time.sleep(0.1)
            yield os.urandom(256 * KiB)

    def _run(self) -> None:
        self.status, _ = http_status(lambda: httpx.put(
            self.url, content=self._body(), headers={"Content-Length": str(self.size)},
            timeout=60))

    def start(self, wait: float = 10) -> SlowUpload:
        self._thread.start()
        self.started.wait(wait)
        return self

    def join(self, timeout: float = 60) -> int:
        self._thread.join(timeout)
        return self.status

