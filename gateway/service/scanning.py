"""Malware scanning of upload bodies while they stream through the gateway.

An upload opens a :class:`ScanSession` before its first byte, feeds it every chunk as the
chunk passes on its way to the blob backend, and asks for the :class:`Verdict` after the
last one, before the object is committed. The body is never held in memory: a session
forwards each chunk and keeps nothing of it.

:class:`ClamAVScanner` speaks clamd's ``INSTREAM`` command (clamd(8)): ``zINSTREAM\\0``,
then chunks each prefixed by its length as a 4-byte big-endian integer, then a zero-length
chunk; clamd answers ``stream: OK``, ``stream: <signature> FOUND`` or ``... ERROR``, ended
by a NUL byte. clamd spools the stream to its own temporary file and scans it when the
stream ends, so a signature split across any number of chunks is found.

Anything that keeps the scanner from giving a verdict (clamd unreachable, dying mid-stream,
too slow, answering nonsense) raises :class:`ScannerUnavailable`: the upload path fails
closed, answers 503 and stores nothing. A stream clamd refuses to scan (longer than its
``StreamMaxLength``) gets a verdict that is not clean, with :attr:`Verdict.error` set.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self

if TYPE_CHECKING:
    from gateway.settings import Settings

#: clamd's port when a ``tcp://`` address names none (clamd.conf's usual TCPSocket).
CLAMD_DEFAULT_PORT = 3310
#: The largest chunk sent to clamd in one INSTREAM frame; larger chunks are split.
MAX_FRAME = 64 * 1024
#: A reply longer than this is not clamd's.
_MAX_REPLY = 64 * 1024
_END_OF_STREAM = b"\0\0\0\0"
#: With ``ExtendedDetectionInfo yes`` clamd appends ``(<md5>:<size>)`` to the signature name.
_DETECTION_INFO = re.compile(r"\([0-9a-fA-F]+:\d+\)$")


class ScannerUnavailable(Exception):
    """The scanner could not give a verdict; the upload must not be stored."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the scanner decided about one body.

    ``clean`` is the only thing the upload path needs: anything else is rejected.
    ``signature`` names what was found; ``error`` says why the scanner refused to scan
    (e.g. ``INSTREAM size limit exceeded``: the body is longer than clamd's
    ``StreamMaxLength``), which a client cannot fix by retrying.
    """

    clean: bool
    signature: str | None = None
    error: str | None = None

    @property
    def infected(self) -> bool:
        return self.signature is not None


CLEAN = Verdict(clean=True)


class ScanSession(Protocol):
    """The scan of one body. Use it as an async context manager, so the connection is
    released whether or not the upload finished."""

    @property
    def verdict(self) -> Verdict | None:
        """The verdict, once the scanner decided before :meth:`finish` (clamd refused more
        data); the upload path may stop reading the body then. ``None`` until then."""
        ...

    async def feed(self, chunk: bytes) -> None:
        """Send one chunk; returns once it is handed to the scanner (back-pressure)."""
        ...

    async def finish(self) -> Verdict:
        """End the body and wait for the verdict."""
        ...

    async def aclose(self) -> None:
        """Release the session; a body not finished is abandoned."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...


class Scanner(Protocol):
    async def session(self) -> ScanSession:
        """Start scanning a new body. Raises :class:`ScannerUnavailable`."""
        ...

    async def ping(self) -> None:
        """Readiness: returns when the scanner answers, raises :class:`ScannerUnavailable`
        when it does not."""
        ...


class _SessionBase(ABC):
    """What every session shares: ``async with`` closes it."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def scanner_from_settings(settings: Settings) -> Scanner | None:
    """The scanner ``GATEWAY_CLAMAV`` names, or ``None`` when scanning is off. A malformed
    address raises ``ValueError`` at startup rather than failing every upload later."""
    if not settings.clamav.strip():
        return None
    return ClamAVScanner(settings.clamav)


# --- clamd ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: a unix socket ``path``, or ``host`` and ``port``."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str) -> ClamdAddress:
    """``unix:///run/clamav/clamd.ctl``, a bare socket path, or ``tcp://host[:port]``
    (``tcp://[::1]:3310`` for IPv6). Raises ``ValueError`` for anything else."""
    text = text.strip()
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/"):
            raise ValueError(f"clamd address {text!r}: unix:// needs an absolute path")
        return ClamdAddress("unix", path=path)
    if text.startswith("tcp://"):
        rest = text[len("tcp://"):].rstrip("/")
        if rest.startswith("["):
            host, sep, tail = rest[1:].partition("]")
            if not sep or (tail and not tail.startswith(":")):
                raise ValueError(f"clamd address {text!r}: bad IPv6 host")
            port_text = tail[1:]
        else:
            host, _, port_text = rest.partition(":")
        if not host:
            raise ValueError(f"clamd address {text!r}: no host")
        if not port_text:
            return ClamdAddress("tcp", host=host, port=CLAMD_DEFAULT_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"clamd address {text!r}: bad port {port_text!r}")
        return ClamdAddress("tcp", host=host, port=int(port_text))
    if text.startswith("/"):
        return ClamdAddress("unix", path=text)
    raise ValueError(f"clamd address {text!r}: use unix:///path, /path or tcp://host:port")


def parse_reply(reply: str) -> Verdict:
    """clamd's answer to INSTREAM as a verdict; anything else is a protocol error."""
    text = reply.strip("\0\r\n ")
    body = text[len("stream: "):] if text.startswith("stream: ") else text
    if body == "OK":
        return CLEAN
    if body.endswith(" FOUND"):
        signature = _DETECTION_INFO.sub("", body[:-len(" FOUND")].strip())
        if signature:
            return Verdict(clean=False, signature=signature)
    elif body.endswith("ERROR"):
        return Verdict(clean=False, error=body[:-len("ERROR")].strip().rstrip(".") or text)
    raise ScannerUnavailable(f"clamd answered {text!r}")


class ClamAVScanner:
    """clamd over a unix or TCP socket, one connection per scanned body.

    The socket is driven with the event loop's ``sock_*`` calls rather than asyncio
    streams: when a stream passes ``StreamMaxLength`` clamd answers and closes the
    connection while the body is still being sent, and a stream transport that fails a
    write discards the answer already waiting in the socket. Here a failed send is
    followed by reading that answer from the same socket.
    """

    def __init__(self, address: str, *, connect_timeout: float = 5.0,
                 io_timeout: float = 60.0, scan_timeout: float = 300.0) -> None:
        """``io_timeout`` bounds each send (clamd not reading: overloaded or hung);
        ``scan_timeout`` bounds the wait for the verdict once the body has ended."""
        self.address = parse_address(address)
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.scan_timeout = scan_timeout

    def __repr__(self) -> str:
        return f"ClamAVScanner({str(self.address)!r})"

    async def session(self) -> ScanSession:
        sock = await self._connect()
        session = _ClamdSession(self, sock)
        await session.start()
        return session

    async def ping(self) -> None:
        reply = await self._command(b"zPING\0")
        if reply != "PONG":
            raise ScannerUnavailable(f"clamd at {self.address} answered PING with {reply!r}")

    async def version(self) -> str:
        """clamd's engine and database versions, e.g. ``ClamAV 1.4.6/27000/...``."""
        return await self._command(b"zVERSION\0")

    async def _command(self, command: bytes) -> str:
        sock = await self._connect()
        try:
            await _send(self, sock, command)
            return await _read_reply(self, sock, self.io_timeout)
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {self.address}: {exc}") from exc
        finally:
            sock.close()

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.kind == "unix":
                    targets: list[tuple[int, tuple[str, int] | str]] = [
                        (socket.AF_UNIX, address.path)]
                else:
                    infos = await loop.getaddrinfo(address.host, address.port,
                                                   type=socket.SOCK_STREAM)
                    targets = [(family, (str(sockaddr[0]), int(sockaddr[1])))
                               for family, _, _, _, sockaddr in infos]
                last: OSError | None = None
                for family, target in targets:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, target)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return sock
                raise last or OSError(f"no address for {address.host}")
        except TimeoutError as exc:
            raise ScannerUnavailable(f"clamd at {address}: connect timed out") from exc
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {address}: {exc}") from exc


async def _send(scanner: ClamAVScanner, sock: socket.socket, data: bytes | bytearray) -> None:
    """Hand ``data`` to the kernel; waits while clamd is behind (back-pressure)."""
    try:
        async with asyncio.timeout(scanner.io_timeout):
            await asyncio.get_running_loop().sock_sendall(sock, data)
    except TimeoutError as exc:
        raise ScannerUnavailable(
            f"clamd at {scanner.address} took no data for {scanner.io_timeout:g}s") from exc


async def _read_reply(scanner: ClamAVScanner, sock: socket.socket, wait: float) -> str:
    """One NUL-terminated reply. Stops at the NUL: clamd may reset the connection right
    after it, and whatever follows is not ours to read."""
    loop = asyncio.get_running_loop()
    reply = bytearray()
    try:
        async with asyncio.timeout(wait):
            while b"\0" not in reply:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    break
                reply += data
                if len(reply) > _MAX_REPLY:
                    raise ScannerUnavailable(f"clamd at {scanner.address}: reply too long")
    except TimeoutError as exc:
        raise ScannerUnavailable(
            f"clamd at {scanner.address} gave no answer in {wait:g}s") from exc
    except OSError as exc:
        if not reply:
            raise ScannerUnavailable(f"clamd at {scanner.address}: {exc}") from exc
    if not reply:
        raise ScannerUnavailable(f"clamd at {scanner.address} closed the connection")
    return reply.partition(b"\0")[0].decode("utf-8", "replace").strip()


class _ClamdSession(_SessionBase):
    def __init__(self, scanner: ClamAVScanner, sock: socket.socket) -> None:
        self._scanner = scanner
        self._sock: socket.socket | None = sock
        self._verdict: Verdict | None = None
        self._finished = False

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    async def start(self) -> None:
        await self._frame(b"zINSTREAM\0")

    async def feed(self, chunk: bytes) -> None:
        if self._verdict is not None:
            return  # clamd has decided already; the rest of the body changes nothing
        if self._finished:
            raise RuntimeError("scan session already finished")
        view = memoryview(chunk).cast("B")
        for start in range(0, len(view), MAX_FRAME):
            piece = view[start:start + MAX_FRAME]
            frame = bytearray(4 + len(piece))
            struct.pack_into(">I", frame, 0, len(piece))
            frame[4:] = piece
            await self._frame(frame)
            if self._verdict is not None:
                return

    async def finish(self) -> Verdict:
        if self._finished:
            raise RuntimeError("scan session already finished")
        self._finished = True
        try:
            if self._verdict is None:
                await self._frame(_END_OF_STREAM)
            if self._verdict is None:
                self._verdict = parse_reply(await _read_reply(
                    self._scanner, self._live(), self._scanner.scan_timeout))
            return self._verdict
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise ScannerUnavailable("scan session closed")
        return self._sock

    async def _frame(self, data: bytes | bytearray) -> None:
        """Send; if clamd hung up, its answer (a stream over ``StreamMaxLength``) becomes
        the verdict. Any failure leaves the stream unusable, so the session is closed."""
        sock = self._live()
        try:
            await _send(self._scanner, sock, data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            try:
                reply = await _read_reply(self._scanner, sock, self._scanner.connect_timeout)
                self._verdict = parse_reply(reply)
            except ScannerUnavailable as unavailable:
                await self.aclose()
                raise ScannerUnavailable(
                    f"clamd at {self._scanner.address} hung up: {exc}") from unavailable
            if self._verdict.clean:
                await self.aclose()
                self._verdict = None
                raise ScannerUnavailable(
                    f"clamd at {self._scanner.address} answered OK before the stream ended"
                ) from exc
            await self.aclose()
        except OSError as exc:
            await self.aclose()
            raise ScannerUnavailable(f"clamd at {self._scanner.address}: {exc}") from exc
        except BaseException:
            await self.aclose()
            raise
