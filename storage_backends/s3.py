"""An upstream S3 server (MinIO, Ceph RGW, AWS S3, another gateway) as the blob store.

Requests are signed with botocore's SigV4 signer and sent with httpx, not made through
aiobotocore: every body here is an async stream, and botocore's request pipeline wants
bodies it can read synchronously, seek and checksum (its default flexible checksums rewrite
a streaming upload into aws-chunked with a trailer computed by reading the body). Owning the
wire keeps bodies streaming both ways with bounded memory, lets a failing body abort the
upstream request before its last byte leaves (so nothing is committed), and keeps retries to
the requests that can safely be replayed. The signer, the part that must be exactly right,
stays botocore's.

Blob keys map onto ``<prefix><blob key>`` in the upstream bucket. Multipart uploads are the
upstream's own: parts go straight through, completion is one upstream request, and copies
(whole blobs and part ranges) are server-side.

S3 keeps one part per part number (the last uploaded), so this backend has no part
attempts (``capabilities.part_attempts`` is false): an older attempt's token no longer
matches at completion (``InvalidPart``) and ``delete_part`` has nothing to delete.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from itertools import pairwise
from typing import Any, Self
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element

import anyio
import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from defusedxml import ElementTree

from storage_backends._keys import check_part_list, check_part_number, validate_blob_key
from storage_backends.errors import (
    BackendUnavailable,
    BlobNotFound,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidPart,
    StorageError,
    UploadNotFound,
)
from storage_backends.protocol import (
    CHUNK_SIZE,
    BlobInfo,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)

log = logging.getLogger("storage_backends.s3")

#: The largest single PUT or CopyObject S3 accepts; larger blobs go by multipart.
MAX_SINGLE = 5 * 1024**3
#: Part size for blobs above MAX_SINGLE written or copied by this backend itself.
LARGE_PART = 512 * 1024**2
#: Bodies of unknown size are spooled to disk beyond this many bytes, then sent.
SPOOL_IN_MEMORY = 8 * 1024 * 1024
#: Pieces of an upstream answer handed on as they arrive (smaller than CHUNK_SIZE: many
#: GETs stream at once, and each holds one piece while the client takes the last).
_READ_CHUNK = 256 * 1024
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
#: Upstream answers worth retrying: throttling and transient server trouble.
_RETRY_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "XMinioServerNotInitialized",
})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_FULL_CODES = frozenset({"XMinioStorageFull", "StorageFull", "InsufficientStorage"})


@dataclass(frozen=True, slots=True)
class S3Options:
    """How to reach the upstream (``GATEWAY_S3_*``)."""

    endpoint: str = ""  # empty: AWS S3 in ``region``
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    region: str = "us-east-1"
    max_connections: int = 64
    connect_timeout: float = 10.0
    #: Longest wait for the upstream to accept or return the next piece of a body.
    io_timeout: float = 120.0
    #: Tries of a request that can be replayed (no body, or a small one in memory).
    max_attempts: int = 4
    backoff_base: float = 0.1
    backoff_cap: float = 2.0
    #: ``opaque``: blobs under ``<prefix>b/…`` with names of the gateway's choosing.
    #: ``keys``: each object at ``<prefix><bucket>/<key>``, readable by other tools; needs
    #: versioning enabled on the upstream bucket (see ``S3Backend.blob_name``).
    placement: str = "opaque"


class _UpstreamError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"upstream answered {status} {code}: {message}".rstrip(": "))
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.code in _RETRY_CODES or (self.status in _RETRY_STATUSES and
                                             self.code not in _FULL_CODES)


class _Signer(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 signer; a body in memory is signed, a stream is ``UNSIGNED-PAYLOAD``."""

    def _should_sha256_sign_payload(self, request: AWSRequest) -> bool:
        return bool(request.context.get("sign_payload"))


@dataclass
class _Outgoing:
    """A request body that holds back its last chunk until the source has ended.

    If the source fails, the upstream has received fewer bytes than ``Content-Length`` and
    keeps nothing; a body that yields more or fewer bytes than announced fails the same way.
    """

    source: AsyncIterable[bytes]
    size: int
    started: bool = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held = b""
        total = 0
        async for chunk in self.source:
            if not chunk:
                continue
            self.started = True
            total += len(chunk)
            if total > self.size:
                raise StorageError(f"the body is longer than the {self.size} bytes announced")
            if held:
                yield held
            held = bytes(chunk)
        if total != self.size:
            raise StorageError(f"the body ended after {total} of {self.size} bytes")
        if held:
            yield held


class _Reader:
    """A streaming upstream GET: the response is open, its body not yet read."""

    def __init__(self, response: httpx.Response, size: int, byte_range: ByteRange | None,
                 key: str) -> None:
        self._response = response
        self._size = size
        self._range = byte_range
        self._key = key
        self._iterated = False
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def range(self) -> ByteRange | None:
        return self._range

    @property
    def content_length(self) -> int:
        return self._range.length if self._range is not None else self._size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterated or self._closed:
            raise RuntimeError("a blob reader can be iterated only once")
        self._iterated = True
        received = 0
        try:
            with _transport_errors():
                async for chunk in self._response.aiter_raw(_READ_CHUNK):
                    received += len(chunk)
                    yield chunk
            if received != self.content_length:
                raise BackendUnavailable(
                    f"the upstream sent {received} of {self.content_length} bytes of "
                    f"{self._key}")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextmanager
def _transport_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:  # connect, read, write, pool, protocol, timeouts
        raise BackendUnavailable(f"the upstream did not answer: {type(exc).__name__}") from exc


def _text(element: Element | None, name: str) -> str:
    if element is None:
        return ""
    for child in element:
        if child.tag.rsplit("}", 1)[-1] == name:
            return child.text or ""
    return ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if child.tag.rsplit("}", 1)[-1] == name]


def _parse_xml(data: bytes) -> Element:
    try:
        root: Element = ElementTree.fromstring(data)
    except Exception as exc:  # defusedxml refusals and plain parse errors alike
        raise BackendUnavailable("the upstream answered with XML that does not parse") from exc
    return root


def _error_from(status: int, data: bytes) -> _UpstreamError:
    code, message = "", ""
    if data.strip():
        try:
            root = ElementTree.fromstring(data)
            code, message = _text(root, "Code"), _text(root, "Message")
        except Exception:  # not XML: a proxy's page, say
            message = data[:200].decode("utf-8", "replace")
    if not code:
        code = {404: "NotFound", 403: "AccessDenied", 503: "ServiceUnavailable"}.get(
            status, f"HTTP{status}")
    return _UpstreamError(status, code, message)


def _etag(value: str | None) -> str:
    return (value or "").strip().strip('"')


def _last_modified(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _spool(body: AsyncIterable[bytes]) -> tuple[Any, int]:
    """A body of unknown size, spooled (to disk beyond a few MiB) so its size is known."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > SPOOL_IN_MEMORY:  # on disk from here (the file rolls over): a thread
                await anyio.to_thread.run_sync(spool.write, chunk)
            else:
                spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, size


async def _from_spool(spool: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(spool.read, CHUNK_SIZE):
            yield chunk
    finally:
        spool.close()


async def _take(chunks: AsyncIterator[bytes], pushback: list[bytes], n: int
                ) -> AsyncIterator[bytes]:
    """The next ``n`` bytes of ``chunks``; what is read beyond them goes to ``pushback``."""
    left = n
    while left > 0:
        chunk = pushback.pop() if pushback else await anext(chunks, b"")
        if not chunk:
            return
        if len(chunk) > left:
            pushback.append(chunk[left:])
            chunk = chunk[:left]
        left -= len(chunk)
        yield chunk


def multipart_etag(md5s: Sequence[str]) -> str:
    """The ETag S3 gives an object completed from parts with these MD5s (hex)."""
    digest = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s))
    return f"{digest.hexdigest()}-{len(md5s)}"


class S3Backend:
    name = "s3"
    capabilities = Capabilities(server_side_copy=True, native_multipart=True,
                                part_attempts=False, part_copy_md5=True)

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        options = options or S3Options()
        if not bucket:
            raise ValueError("an s3 backend needs a bucket: s3://bucket[/prefix]")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.options = options
        endpoint = options.endpoint.rstrip("/") or f"https://s3.{options.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"GATEWAY_S3_ENDPOINT must be an http(s) URL, not {endpoint!r}")
        if not (options.access_key and options.secret_key):
            raise ValueError("an s3 backend needs GATEWAY_S3_ACCESS_KEY and "
                             "GATEWAY_S3_SECRET_KEY for its upstream")
        if options.placement not in ("opaque", "keys"):
            raise ValueError(f"GATEWAY_S3_PLACEMENT is 'opaque' or 'keys', not "
                             f"{options.placement!r}")
        self._versioning_checked = False
        self.endpoint = endpoint
        self._credentials = Credentials(options.access_key, options.secret_key)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.io_timeout, connect=options.connect_timeout,
                                  pool=options.io_timeout),
            limits=httpx.Limits(max_connections=options.max_connections,
                                max_keepalive_connections=min(options.max_connections, 32),
                                # Below common servers' idle timeouts (uvicorn: 5 s), so a
                                # pooled connection is not closed under a new request.
                                keepalive_expiry=2.0),
            follow_redirects=False)

    @classmethod
    def from_url(cls, url: str, options: S3Options | None = None) -> S3Backend:
        parts = urlsplit(url)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise ValueError(f"not an s3 backend URL: {url!r} (s3://bucket[/prefix])")
        return cls(parts.netloc, parts.path, options)

    def __repr__(self) -> str:
        return f"S3Backend(s3://{self.bucket}/{self.prefix} at {self.endpoint})"

    # -- the wire -------------------------------------------------------------------------

    def _url(self, key: str | None, query: Sequence[tuple[str, str]] = ()) -> str:
        path = f"/{quote(self.bucket, safe='')}"
        if key is not None:
            name, version = self._split(key)
            path += "/" + quote(self.prefix + name, safe="/~")
            if version is not None:
                query = [*query, ("versionId", version)]
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(
                quote(k, safe="-_.~") + ("=" + quote(v, safe="-_.~") if v != "" else "")
                for k, v in query)
        return url

    def _copy_source(self, key: str) -> str:
        name, version = self._split(key)
        source = f"/{quote(self.bucket, safe='')}/{quote(self.prefix + name, safe='/~')}"
        return source if version is None else f"{source}?versionId={quote(version, safe='')}"

    # -- placement ------------------------------------------------------------------------
    # In ``keys`` placement a write returns ``v:<length>:<version id>:<name>``: reads, copies
    # and deletes address exactly that version, so a write that loses (a failed condition,
    # a crash before the commit) never changes what the gateway serves, and deleting the
    # old version after an overwrite leaves the upstream's latest version = the committed one.

    def blob_name(self, bucket: str, key: str) -> str | None:
        """``<bucket>/<key>`` in ``keys`` placement, for keys an S3 server stores as they are;
        others (empty, ``.`` or ``..`` segments, control characters, too long) stay opaque."""
        if self.options.placement != "keys":
            return None
        name = f"{bucket}/{key}"
        segments = key.split("/")
        if (any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", "..")
                or any(ord(c) < 0x20 or c == "\x7f" for c in key)
                or len((self.prefix + name).encode()) > 1024):
            return None
        return name

    @staticmethod
    def _versioned(name: str, version: str) -> str:
        return f"v:{len(version)}:{version}:{name}"

    def _split(self, key: str) -> tuple[str, str | None]:
        """A blob key's name and version; checks the name is one this backend makes."""
        version = None
        if key.startswith("v:") and self.options.placement == "keys":
            length, _, rest = key[2:].partition(":")
            if not length.isdigit() or len(rest) <= int(length) or rest[int(length)] != ":":
                raise InvalidBlobKey(key)
            version, key = rest[:int(length)], rest[int(length) + 1:]
        if not self._named(key):
            validate_blob_key(key)
        return key, version

    def _named(self, name: str) -> bool:
        bucket, _, key = name.partition("/")
        return (self.options.placement == "keys" and _BUCKET.fullmatch(bucket) is not None
                and self.blob_name(bucket, key) == name)

    def _written(self, name: str, response: httpx.Response) -> str:
        if self.options.placement != "keys":
            return name
        version = response.headers.get("x-amz-version-id", "")
        if not version or version == "null":
            raise BackendUnavailable("the upstream did not version a write: enable versioning "
                                     "on the upstream bucket for GATEWAY_S3_PLACEMENT=keys")
        return self._versioned(name, version)

    async def _check_versioning(self) -> None:
        if self.options.placement != "keys" or self._versioning_checked:
            return
        with self._edge():
            response = await self._send("GET", None, query=[("versioning", "")])
        if _text(_parse_xml(response.content), "Status") != "Enabled":
            log.error("GATEWAY_S3_PLACEMENT=keys needs versioning enabled on the upstream "
                      "bucket %s", self.bucket)
            raise BackendUnavailable("versioning is not enabled on the upstream bucket")
        self._versioning_checked = True

    def _sign(self, method: str, url: str, headers: dict[str, str],
              content: bytes | None) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=headers, data=content or b"")
        request.context["sign_payload"] = content is not None
        _Signer(self._credentials, "s3", self.options.region).add_auth(request)
        return dict(request.headers.items())

    async def _backoff(self, attempt: int) -> None:
        cap = min(self.options.backoff_cap, self.options.backoff_base * 2**attempt)
        await anyio.sleep(random.uniform(0, cap))

    async def _send(
        self, method: str, key: str | None, *, query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None, content: bytes | None = None,
        body: _Outgoing | None = None, stream: bool = False, error_in_body: bool = False,
    ) -> httpx.Response:
        """One upstream request, retried with backoff while it can be replayed.

        Raises ``_UpstreamError`` for an error answer and ``BackendUnavailable`` when the
        upstream did not answer. With ``stream`` the caller owns (and closes) the response;
        otherwise its body has been read. ``error_in_body``: S3 may answer 200 and still
        fail (CopyObject, CompleteMultipartUpload), so the body is checked for ``<Error>``.
        """
        url = self._url(key, query)
        attempts = self.options.max_attempts
        for attempt in range(attempts):
            replayable = body is None or not body.started
            last = attempt == attempts - 1 or not replayable
            wire = dict(headers or {})
            if body is not None:
                wire["Content-Length"] = str(body.size)
            elif content is not None:
                wire["Content-Length"] = str(len(content))
            signed = self._sign(method, url, wire, content)
            request = self._client.build_request(
                method, url, headers=signed,
                content=body if body is not None else content)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                if (body is not None and body.started) or last:
                    raise BackendUnavailable(
                        f"the upstream did not answer: {type(exc).__name__}") from exc
                await self._backoff(attempt)
                continue
            try:
                if response.status_code >= 300 and response.status_code != 304:
                    with _transport_errors():
                        data = await response.aread()
                    error = _error_from(response.status_code, data)
                elif error_in_body or not stream:
                    with _transport_errors():
                        data = await response.aread()
                    error = None
                    if error_in_body and b"<Error" in data[:512]:
                        error = _error_from(response.status_code, data)
                        error.status = 500 if error.code in _RETRY_CODES else error.status
                else:
                    return response
            except BaseException:
                await response.aclose()
                raise
            if error is None:
                return response
            await response.aclose()
            # A streamed body is replayable only if none of it went out before the answer.
            if error.retryable and not last and (body is None or not body.started):
                log.info("upstream %s %s: %s; retrying", method, key, error.code)
                await self._backoff(attempt)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _edge(self, key: str | None = None, *, source: str | None = None,
              upload_id: str | None = None, part_number: int = 0) -> Iterator[None]:
        """Upstream errors become storage errors here, once."""
        try:
            yield
        except _UpstreamError as exc:
            code = exc.code
            if code == "NoSuchUpload":
                raise UploadNotFound(upload_id or "") from None
            if code in ("NoSuchKey", "NotFound") or (exc.status == 404 and code != "NoSuchBucket"):
                raise BlobNotFound(source or key or "") from None
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
                raise InvalidPart(part_number, f"the upstream refused it: {code}") from None
            if code in _FULL_CODES or exc.status == 507:
                raise InsufficientStorage(str(exc)) from None
            if exc.status in (401, 403) or code == "NoSuchBucket":
                log.error("the upstream refuses the gateway (%s %s): check GATEWAY_BACKEND "
                          "and GATEWAY_S3_*", exc.status, code)
            else:
                log.warning("upstream error for %s: %s", key, exc)
            raise BackendUnavailable(str(exc)) from None

    # -- blobs ----------------------------------------------------------------------------

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo:
        self._split(key)
        await self._check_versioning()
        if size is None:
            spool, size = await _spool(body)
            body = _from_spool(spool)
        if size > MAX_SINGLE:
            return await self._put_multipart(key, body, size)
        outgoing = _Outgoing(body, size)
        with self._edge(key):
            response = await self._send(
                "PUT", key, headers={"Content-Type": "application/octet-stream"},
                body=outgoing)
        written = self._written(key, response)
        await self._check_md5(written, body, response.headers.get("etag"))
        return BlobInfo(written, size, _last_modified(response.headers.get("last-modified")
                                                      or response.headers.get("date")))

    async def _check_md5(self, key: str, body: object, etag: str | None) -> None:
        """A body that knows its MD5 (the gateway's verified bodies do) is checked against
        the ETag the upstream computed, where that ETag is a plain MD5."""
        md5 = getattr(body, "md5_hex", None)
        upstream = _etag(etag)
        if isinstance(md5, str) and _MD5_ETAG.fullmatch(upstream) and md5 != upstream:
            with anyio.CancelScope(shield=True):
                await self.delete(key)
            raise BackendUnavailable(f"the upstream stored other bytes for {key} "
                                     f"(MD5 {upstream}, sent {md5})")

    async def _put_multipart(self, key: str, body: AsyncIterable[bytes], size: int
                             ) -> BlobInfo:
        part_size = max(LARGE_PART, -(-size // 10_000))
        upload_id = await self.create_multipart(key)
        try:
            chunks = aiter(body)
            pushback: list[bytes] = []
            refs = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                length = min(part_size, size - offset)
                info = await self.put_part(key, upload_id, number,
                                           _take(chunks, pushback, length), size=length)
                refs.append(PartRef(number, length, info.token))
            extra = pushback[0] if pushback else await anext(chunks, b"")
            if extra:
                raise StorageError(f"the body is longer than the {size} bytes announced")
            return await self.complete_multipart(key, upload_id, refs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort_multipart(key, upload_id)
            raise

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> _Reader:
        self._split(key)
        headers = {}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range.start}-{byte_range.end - 1}"
        with self._edge(key):
            try:
                response = await self._send("GET", key, headers=headers, stream=True)
            except _UpstreamError as exc:
                if exc.status == 416:  # the range starts beyond the blob
                    raise ValueError(f"range {byte_range} beyond blob {key}") from None
                raise
        try:
            size = self._size_of(response, byte_range)
        except BaseException:
            await response.aclose()
            raise
        return _Reader(response, size, byte_range, key)

    @staticmethod
    def _size_of(response: httpx.Response, byte_range: ByteRange | None) -> int:
        if response.status_code == 206:
            match = _RANGE.fullmatch(response.headers.get("content-range", ""))
            if match is None:
                raise BackendUnavailable("the upstream sent a range without Content-Range")
            start, last, size = (int(g) for g in match.groups())
            if byte_range is None or (start, last + 1) != (byte_range.start, byte_range.end):
                if byte_range is not None and byte_range.end > size:
                    raise ValueError(f"range {byte_range} beyond blob size {size}")
                raise BackendUnavailable("the upstream sent another range than asked for")
            return size
        size = int(response.headers.get("content-length", "-1"))
        if size < 0:
            raise BackendUnavailable("the upstream sent no Content-Length")
        if byte_range is not None:
            # A whole-object answer to a ranged request: S3 does this for empty objects.
            raise ValueError(f"range {byte_range} beyond blob size {size}")
        return size

    async def head(self, key: str) -> BlobInfo:
        self._split(key)
        with self._edge(key):
            response = await self._send("HEAD", key)
        return BlobInfo(key, int(response.headers.get("content-length", "0")),
                        _last_modified(response.headers.get("last-modified")))

    async def delete(self, key: str) -> None:
        name, version = self._split(key)
        if self.options.placement == "keys" and version is None:
            if not self._named(name):  # an opaque name: every version of it
                async for blob in self._versions(name):
                    if self._split(blob.key)[0] == name:
                        await self.delete(blob.key)
            # A name without a version is never deleted: that would hide the live object.
            return
        try:
            with self._edge(key):
                await self._send("DELETE", key)
        except BlobNotFound:
            pass

    async def copy(self, src: str, dst: str) -> BlobInfo:
        self._split(src)
        self._split(dst)
        await self._check_versioning()
        source = await self.head(src)
        if source.size > MAX_SINGLE:
            return await self._copy_multipart(src, dst, source.size)
        with self._edge(dst, source=src):
            response = await self._send(
                "PUT", dst, headers={"x-amz-copy-source": self._copy_source(src)},
                error_in_body=True)
        root = _parse_xml(response.content)
        return BlobInfo(self._written(dst, response), source.size,
                        _iso(_text(root, "LastModified")))

    async def _copy_multipart(self, src: str, dst: str, size: int) -> BlobInfo:
        upload_id = await self.create_multipart(dst)
        try:
            part_size = max(LARGE_PART, -(-size // 10_000))
            refs = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                piece = ByteRange(offset, min(size, offset + part_size))
                info = await self.copy_part(dst, upload_id, number, src, piece)
                refs.append(PartRef(number, info.size, info.token))
            return await self.complete_multipart(dst, upload_id, refs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort_multipart(dst, upload_id)
            raise

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        if self.options.placement == "keys":
            async for blob in self._versions(prefix):
                yield blob
            return
        token = ""
        while True:
            query = [("list-type", "2"), ("prefix", self.prefix + prefix)]
            if token:
                query.append(("continuation-token", token))
            with self._edge():
                response = await self._send("GET", None, query=sorted(query))
            root = _parse_xml(response.content)
            for item in _children(root, "Contents"):
                key = _text(item, "Key")
                if not key.startswith(self.prefix):
                    continue
                yield BlobInfo(key[len(self.prefix):], int(_text(item, "Size") or 0),
                               _iso(_text(item, "LastModified")))
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return

    async def _versions(self, prefix: str) -> AsyncIterator[BlobInfo]:
        """Every version (and delete marker) under ``prefix``, each as a versioned key."""
        markers: list[tuple[str, str]] = []
        while True:
            query = [("prefix", self.prefix + prefix), ("versions", "")]
            for name, value in markers:
                query.append((name, value))
            with self._edge():
                response = await self._send("GET", None, query=sorted(query))
            root = _parse_xml(response.content)
            for item in root:
                if item.tag.rsplit("}", 1)[-1] not in ("Version", "DeleteMarker"):
                    continue
                key = _text(item, "Key")
                if not key.startswith(self.prefix):
                    continue
                yield BlobInfo(self._versioned(key[len(self.prefix):], _text(item, "VersionId")),
                               int(_text(item, "Size") or 0), _iso(_text(item, "LastModified")))
            if _text(root, "IsTruncated") != "true":
                return
            markers = [("key-marker", _text(root, "NextKeyMarker")),
                       ("version-id-marker", _text(root, "NextVersionIdMarker"))]

    # -- multipart --------------------------------------------------------------------------

    async def create_multipart(self, key: str) -> str:
        self._split(key)
        await self._check_versioning()
        with self._edge(key):
            response = await self._send(
                "POST", key, query=[("uploads", "")],
                headers={"Content-Type": "application/octet-stream"})
        upload_id = _text(_parse_xml(response.content), "UploadId")
        if not upload_id:
            raise BackendUnavailable("the upstream created an upload without an id")
        return upload_id

    @staticmethod
    def _check_upload_id(upload_id: str) -> None:
        # An empty id would turn a part upload into a plain PUT of the blob.
        if not isinstance(upload_id, str) or not upload_id.strip():
            raise UploadNotFound(str(upload_id))

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int | None = None,
    ) -> PartInfo:
        self._split(key)
        self._check_upload_id(upload_id)
        check_part_number(part_number)
        if size is None:
            spool, size = await _spool(body)
            body = _from_spool(spool)
        query = [("partNumber", str(part_number)), ("uploadId", upload_id)]
        try:
            with self._edge(key, upload_id=upload_id, part_number=part_number):
                response = await self._send("PUT", key, query=query,
                                            body=_Outgoing(body, size))
        except BackendUnavailable:
            # A server may refuse a part (NoSuchUpload) before reading its body and close
            # the connection: the answer is lost, so ask whether the upload is still there.
            await self._raise_if_upload_gone(key, upload_id)
            raise
        etag = _etag(response.headers.get("etag"))
        md5 = getattr(body, "md5_hex", None)
        if isinstance(md5, str) and _MD5_ETAG.fullmatch(etag) and md5 != etag:
            raise BackendUnavailable(f"the upstream stored other bytes for part {part_number}")
        return PartInfo(part_number, size, etag)

    async def copy_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        src: str,
        byte_range: ByteRange | None = None,
    ) -> PartInfo:
        self._split(key)
        self._split(src)
        self._check_upload_id(upload_id)
        check_part_number(part_number)
        headers = {"x-amz-copy-source": self._copy_source(src)}
        if byte_range is None:
            size = (await self.head(src)).size
        else:
            size = byte_range.length
            headers["x-amz-copy-source-range"] = f"bytes={byte_range.start}-{byte_range.end - 1}"
        query = [("partNumber", str(part_number)), ("uploadId", upload_id)]
        with self._edge(key, source=src, upload_id=upload_id, part_number=part_number):
            response = await self._send("PUT", key, query=query, headers=headers,
                                        error_in_body=True)
        etag = _etag(_text(_parse_xml(response.content), "ETag"))
        return PartInfo(part_number, size, etag, md5=etag if _MD5_ETAG.fullmatch(etag) else None)

    async def _raise_if_upload_gone(self, key: str, upload_id: str) -> None:
        """UploadNotFound if the upload has ended (or ends within a moment: a completion in
        flight); otherwise nothing."""
        for delay in (0.0, 0.05, 0.2):
            await anyio.sleep(delay)
            try:
                with self._edge(key, upload_id=upload_id):
                    await self._send("GET", key, query=[("max-parts", "1"),
                                                        ("uploadId", upload_id)])
            except UploadNotFound:
                raise
            except StorageError:
                return

    async def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        listed: dict[int, tuple[str, int]] = {}
        marker = "0"
        while True:
            query = [("max-parts", "1000"), ("part-number-marker", marker),
                     ("uploadId", upload_id)]
            with self._edge(key, upload_id=upload_id):
                response = await self._send("GET", key, query=query)
            root = _parse_xml(response.content)
            for part in _children(root, "Part"):
                listed[int(_text(part, "PartNumber"))] = (_etag(_text(part, "ETag")),
                                                          int(_text(part, "Size") or 0))
            marker = _text(root, "NextPartNumberMarker")
            if _text(root, "IsTruncated") != "true" or not marker:
                return listed

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        self._split(key)
        self._check_upload_id(upload_id)
        check_part_list(parts)
        for before, after in pairwise(parts):
            if after.part_number < before.part_number:
                raise InvalidPart(after.part_number, "parts are completed in ascending order")
        try:
            listed = await self._list_parts(key, upload_id)
        except UploadNotFound:
            done = await self._completed_already(key, parts)
            if done is None:
                raise
            return done
        chosen: list[tuple[int, str]] = []
        total = 0
        for ref in parts:
            have = listed.get(ref.part_number)
            if have is None:
                raise InvalidPart(ref.part_number)
            etag, size = have
            if ref.token is not None and ref.token != etag:
                raise InvalidPart(ref.part_number, "another upload of this part replaced it")
            if ref.size is not None and ref.size != size:
                raise InvalidPart(ref.part_number, f"{size} bytes, not {ref.size}")
            chosen.append((ref.part_number, etag))
            total += size
        document = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>\"{etag}\"</ETag></Part>"
            for n, etag in chosen)
        content = f"<CompleteMultipartUpload>{document}</CompleteMultipartUpload>".encode()
        try:
            with self._edge(key, upload_id=upload_id, part_number=parts[0].part_number):
                response = await self._send(
                    "POST", key, query=[("uploadId", upload_id)], content=content,
                    headers={"Content-Type": "application/xml"}, error_in_body=True)
        except InvalidPart:
            # A part replaced between the listing and the completion: name that one.
            now = await self._list_parts(key, upload_id)
            for number, etag in chosen:
                if now.get(number, ("", 0))[0] != etag:
                    raise InvalidPart(number, "another upload of this part replaced it"
                                      ) from None
            raise
        return BlobInfo(self._written(key, response), total)

    async def _completed_already(self, key: str, parts: Sequence[PartRef]) -> BlobInfo | None:
        """A completion whose answer was lost is not completed twice: if the blob is there
        with the ETag these very parts make, the upload is done."""
        if any(ref.token is None or not _MD5_ETAG.fullmatch(ref.token) for ref in parts):
            return None
        expected = multipart_etag([ref.token for ref in parts if ref.token])
        try:
            with self._edge(key):
                response = await self._send("HEAD", key)
        except BlobNotFound:
            return None
        if _etag(response.headers.get("etag")) != expected:
            return None
        return BlobInfo(self._written(key, response),
                        int(response.headers.get("content-length", "0")),
                        _last_modified(response.headers.get("last-modified")))

    async def delete_part(self, key: str, upload_id: str, part_number: int, token: str) -> None:
        """S3 cannot drop one part; the next upload of the number replaces it, completion or
        abort drops it."""

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._split(key)
        if not isinstance(upload_id, str) or not upload_id.strip():
            return
        try:
            with self._edge(key, upload_id=upload_id):
                await self._send("DELETE", key, query=[("uploadId", upload_id)])
        except (UploadNotFound, BlobNotFound):
            pass

    async def aclose(self) -> None:
        await self._client.aclose()

