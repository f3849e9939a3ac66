"""HTTP/1.1 as bytes, for hostile input: requests are written to a socket exactly as given
(any header value, any body framing) and the answer is read back by hand.

Also a small SigV4 signer, written from the AWS documentation, so that the fuzzer can sign
requests whose other parts it then breaks (unsigned headers, bodies, chunk signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

Header = tuple[str | bytes, str | bytes]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeats joined with ","
    body: bytes
    seconds: float

    @property
    def error_code(self) -> str | None:
        """The S3 XML ``<Code>`` of an error body, if it has one."""
        start = self.body.find(b"<Code>")
        end = self.body.find(b"</Code>", start)
        if start < 0 or end < 0:
            return None
        return self.body[start + 6:end].decode("utf-8", "replace")


def build_request(method: str | bytes, target: str | bytes, headers: Sequence[Header],
                  body: bytes = b"", *, host: str, content_length: bool = True) -> bytes:
    """A request with ``Host`` and ``Connection: close`` first, then ``headers`` as given,
    then (unless told not to) a ``Content-Length`` matching ``body``."""
    lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1",
             b"Host: " + host.encode(), b"Connection: close"]
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in headers]
    if content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out)
        size = int(body[pos:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def send(port: int, data: bytes, *, timeout: float = 30.0,
         shut_write: bool = False) -> RawResponse | None:
    """Send one request on a fresh connection and read the answer until the server closes
    it. Reading goes on while sending, so that an answer given before the body was taken
    (and the reset that follows) is not lost. None: the connection closed (or stayed
    silent for ``timeout``) without an answer."""
    started = time.monotonic()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setblocking(False)
        view, sent = memoryview(data), 0
        deadline = started + timeout
        writing = True
        while time.monotonic() < deadline:
            wanted = [sock] if writing else []
            readable, writable, _ = select.select([sock], wanted, [], 0.5)
            if writable:
                try:
                    sent += sock.send(view[sent:sent + 65536])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    writing = False  # the server stopped reading: its answer follows
                if writing and sent >= len(data):
                    writing = False
                    if shut_write:
                        sock.shutdown(socket.SHUT_WR)
            if readable:
                try:
                    piece = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
                if not piece:
                    break
                received += piece
    seconds = time.monotonic() - started
    return parse_response(bytes(received), seconds)


def parse_response(received: bytes, seconds: float) -> RawResponse | None:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return None
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        lname, value = name.strip().lower(), value.strip()
        headers[lname] = f"{headers[lname]},{value}" if lname in headers else value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return RawResponse(status, headers, body, seconds)


# -- SigV4 ---------------------------------------------------------------------------------

ALGORITHM = "AWS4-HMAC-SHA256"
REGION = "us-east-1"
UNSIGNED = "UNSIGNED-PAYLOAD"


def derive_key(secret: str, date: str, region: str = REGION, service: str = "s3") -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(params: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{n}={v}" for n, v in sorted((_encode(n), _encode(v)) for n, v in params))


@dataclass
class Signed:
    """What a signer produced: the request target and the headers to send."""

    target: str
    headers: list[Header] = field(default_factory=list)
    signature: str = ""
    amz_date: str = ""
    scope: str = ""
    key: bytes = b""


@dataclass(frozen=True)
class Signer:
    access_key: str
    secret: str
    host: str  # as sent in the Host header, e.g. 127.0.0.1:17123

    def _scope(self, when: datetime) -> tuple[str, str, bytes]:
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
        return amz_date, scope, derive_key(self.secret, amz_date[:8])

    def _signature(self, key: bytes, amz_date: str, scope: str, canonical: str) -> str:
        sts = "\n".join((ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()))
        return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
             headers: Sequence[tuple[str, str]] = (), payload: str = UNSIGNED,
             when: datetime | None = None) -> Signed:
        """Authorization-header SigV4. ``path``: already canonical (unreserved characters
        and '/'); ``headers`` are all signed, besides host, x-amz-date and
        x-amz-content-sha256."""
        amz_date, scope, key = self._scope(when or datetime.now(UTC))
        signed = {"host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload}
        signed.update({n.lower(): v.strip() for n, v in headers})
        names = sorted(signed)
        query = canonical_query(params)
        canonical = "\n".join((method, path, query,
                               "".join(f"{n}:{signed[n]}\n" for n in names),
                               ";".join(names), payload))
        signature = self._signature(key, amz_date, scope, canonical)
        authorization = (f"{ALGORITHM} Credential={self.access_key}/{scope}, "
                         f"SignedHeaders={';'.join(names)}, Signature={signature}")
        out: list[Header] = [(n, signed[n]) for n in names if n != "host"]
        out.append(("Authorization", authorization))
        return Signed(path + (f"?{query}" if query else ""), out, signature, amz_date, scope,
                      key)

    def presign(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
                expires: int = 300, when: datetime | None = None) -> list[tuple[str, str]]:
        """The query parameters of a SigV4 presigned URL (only ``host`` signed)."""
        amz_date, scope, key = self._scope(when or datetime.now(UTC))
        query = [*params, ("X-Amz-Algorithm", ALGORITHM),
                 ("X-Amz-Credential", f"{self.access_key}/{scope}"),
                 ("X-Amz-Date", amz_date), ("X-Amz-Expires", str(expires)),
                 ("X-Amz-SignedHeaders", "host")]
        canonical = "\n".join((method, path, canonical_query(query), f"host:{self.host}\n",
                               "host", UNSIGNED))
        return [*query, ("X-Amz-Signature", self._signature(key, amz_date, scope, canonical))]
