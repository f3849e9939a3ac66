"""Body integrity: Content-MD5, x-amz-content-sha256 and the x-amz-checksum-* family.

Checksum values are base64 of the big-endian digest, exactly as AWS sends and returns them.
:class:`DigestingStream` computes everything in one pass while the body streams through and
raises at the end of the stream, before its iterator finishes, so a storage backend that
consumes it aborts and keeps nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence

from awscrt import checksums as _crt

from gateway.errors import (
    BadDigest,
    IncompleteBody,
    InvalidChecksum,
    InvalidDigest,
    InvalidRequest,
    XAmzContentSHA256Mismatch,
)

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
HEADER_PREFIX = "x-amz-checksum-"
#: x-amz-checksum-* names that are not checksum values.
_NOT_VALUES = frozenset({"x-amz-checksum-type", "x-amz-checksum-algorithm",
                         "x-amz-checksum-mode"})
_DIGEST_SIZE = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}
_CRC: dict[str, Callable[[bytes, int], int]] = {
    "CRC32": _crt.crc32, "CRC32C": _crt.crc32c, "CRC64NVME": _crt.crc64nvme,
}
_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    "CRC32": _crt.combine_crc32, "CRC32C": _crt.combine_crc32c,
    "CRC64NVME": _crt.combine_crc64nvme,
}


def normalize_algorithm(name: str) -> str:
    """Upper-case a checksum algorithm name; InvalidRequest if it is not supported."""
    algorithm = name.strip().upper()
    if algorithm not in _DIGEST_SIZE:
        raise InvalidRequest(
            "Checksum algorithm provided is unsupported. Please try again with any of the "
            f"valid types: [{', '.join(ALGORITHMS)}]")
    return algorithm


def header_for(algorithm: str) -> str:
    """``"CRC32"`` -> ``"x-amz-checksum-crc32"``."""
    return HEADER_PREFIX + normalize_algorithm(algorithm).lower()


def is_valid_value(algorithm: str, value: str) -> bool:
    """Whether ``value`` is base64 of a digest of the right size for ``algorithm``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == _DIGEST_SIZE[algorithm]


class Checksum:
    """One incremental x-amz-checksum computation."""

    __slots__ = ("_crc", "_crc_fn", "_hash", "algorithm")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = normalize_algorithm(algorithm)
        self._crc = 0
        self._crc_fn = _CRC.get(self.algorithm)
        self._hash = (hashlib.new(self.algorithm.lower(), usedforsecurity=False)
                      if self._crc_fn is None else None)

    def update(self, data: bytes) -> None:
        if self._crc_fn is not None:
            self._crc = self._crc_fn(data, self._crc)
        elif self._hash is not None:
            self._hash.update(data)

    def digest(self) -> bytes:
        if self._hash is not None:
            return self._hash.digest()
        return self._crc.to_bytes(_DIGEST_SIZE[self.algorithm], "big")

    def digest_b64(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


def composite(algorithm: str, part_values: Sequence[str]) -> str:
    """A multipart COMPOSITE checksum: the checksum of the parts' raw digests, ``-<count>``."""
    checksum = Checksum(algorithm)
    for value in part_values:
        checksum.update(base64.b64decode(value))
    return f"{checksum.digest_b64()}-{len(part_values)}"


def combine_full_object(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """A multipart FULL_OBJECT checksum from the parts' ``(value, size)``, without re-reading
    the bytes. CRC algorithms only (S3 allows FULL_OBJECT for those alone)."""
    algorithm = normalize_algorithm(algorithm)
    combine = _COMBINE.get(algorithm)
    if combine is None:
        raise InvalidRequest(f"The FULL_OBJECT checksum type is not supported for {algorithm}.")
    size = _DIGEST_SIZE[algorithm]
    total = 0
    for value, length in parts:
        total = combine(total, int.from_bytes(base64.b64decode(value), "big"), length)
    return base64.b64encode(total.to_bytes(size, "big")).decode("ascii")


def checksum_request(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """What a request asks to be checked, from its lower-cased headers.

    Returns ``(algorithm to compute, expected value from a header, trailer header name)``.
    The algorithm comes from an ``x-amz-checksum-<alg>`` header, the checksum named in
    ``x-amz-trailer``, or ``x-amz-sdk-checksum-algorithm`` (compute and report only).
    """
    value_headers = [name for name in headers
                     if name.startswith(HEADER_PREFIX) and name not in _NOT_VALUES]
    if len(value_headers) > 1:
        raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum "
                             "Types are not allowed.")

    trailer_names = [name.strip().lower() for name in headers.get("x-amz-trailer", "").split(",")]
    checksum_trailers = [name for name in trailer_names if name.startswith(HEADER_PREFIX)]
    if len(checksum_trailers) > 1 or (checksum_trailers and value_headers):
        raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum "
                             "Types are not allowed.")

    algorithm: str | None = None
    expected: str | None = None
    trailer: str | None = None
    if value_headers:
        name = value_headers[0]
        algorithm = normalize_algorithm(name[len(HEADER_PREFIX):])
        expected = headers[name].strip()
        if not is_valid_value(algorithm, expected):
            raise InvalidRequest(f"Value for {name} header is invalid.")
    elif checksum_trailers:
        trailer = checksum_trailers[0]
        algorithm = normalize_algorithm(trailer[len(HEADER_PREFIX):])

    sdk_algorithm = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk_algorithm is not None and sdk_algorithm.strip():
        declared = normalize_algorithm(sdk_algorithm)
        if algorithm is None:
            algorithm = declared
        elif declared != algorithm:
            raise InvalidRequest("Value for x-amz-sdk-checksum-algorithm header is invalid: it "
                                 f"does not match the {algorithm} checksum sent.")
    return algorithm, expected, trailer


def _parse_content_md5(value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise InvalidDigest(fields={"Content-MD5": value[:64]})
    return raw


class DigestingStream:
    """Pass body chunks through while computing MD5 (always), the SHA-256 when one is
    expected and one x-amz-checksum algorithm when asked; verify at the end of the stream.

    ``trailers``: the mapping :func:`~gateway.auth.chunked.decode_aws_chunked` fills. Pass
    it only when the checksum is declared in ``x-amz-trailer``: the value is then required
    and read from it at the end of the stream.

    After the stream ends: ``size``, ``md5_hex``, ``checksum_algorithm`` and
    ``checksum_value`` (base64) describe the body.
    """

    def __init__(self, source: AsyncIterable[bytes], *, expected_size: int | None = None,
                 content_md5: str | None = None, content_sha256: str | None = None,
                 checksum_algorithm: str | None = None, expected_checksum: str | None = None,
                 trailers: Mapping[str, str] | None = None) -> None:
        self._source = source
        self._expected_size = expected_size
        self._content_md5 = _parse_content_md5(content_md5) if content_md5 is not None else None
        self._content_sha256 = content_sha256.lower() if content_sha256 is not None else None
        self.checksum_algorithm = (normalize_algorithm(checksum_algorithm)
                                   if checksum_algorithm is not None else None)
        if expected_checksum is not None and self.checksum_algorithm is None:
            raise ValueError("expected_checksum needs checksum_algorithm")
        self._expected_checksum = expected_checksum
        self._trailers = trailers
        self._started = False
        self.size = 0
        self.md5_hex = ""
        self.checksum_value: str | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("a DigestingStream can be iterated only once")
        self._started = True
        return self._run()

    async def _run(self) -> AsyncIterator[bytes]:
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256() if self._content_sha256 is not None else None
        checksum = Checksum(self.checksum_algorithm) if self.checksum_algorithm else None
        expected_size = self._expected_size
        size = 0
        async for chunk in self._source:
            if not chunk:
                continue
            size += len(chunk)
            if expected_size is not None and size > expected_size:
                raise IncompleteBody(f"The body is longer than the {expected_size} bytes "
                                     "announced.")
            md5.update(chunk)
            if sha256 is not None:
                sha256.update(chunk)
            if checksum is not None:
                checksum.update(chunk)
            yield chunk
        self.size = size
        if expected_size is not None and size != expected_size:
            raise IncompleteBody()
        digest = md5.digest()
        self.md5_hex = digest.hex()
        if self._content_md5 is not None and digest != self._content_md5:
            raise BadDigest(fields={
                "ExpectedDigest": base64.b64encode(self._content_md5).decode(),
                "CalculatedDigest": base64.b64encode(digest).decode()})
        if sha256 is not None and self._content_sha256 is not None:
            calculated = sha256.hexdigest()
            if not hmac.compare_digest(calculated, self._content_sha256):
                raise XAmzContentSHA256Mismatch(fields={
                    "ClientComputedContentSHA256": self._content_sha256,
                    "S3ComputedContentSHA256": calculated})
        if checksum is not None:
            self.checksum_value = checksum.digest_b64()
            self._verify_checksum(checksum.algorithm, self.checksum_value)

    def _verify_checksum(self, algorithm: str, calculated: str) -> None:
        expected = self._expected_checksum
        name = header_for(algorithm)
        if expected is None and self._trailers is not None:
            trailer_value = self._trailers.get(name)
            if trailer_value is None:
                raise InvalidRequest(f"The {name} trailer declared in x-amz-trailer was not "
                                     "sent.")
            expected = trailer_value.strip()
            if not is_valid_value(algorithm, expected):
                raise InvalidRequest(f"Value for {name} trailing header is invalid.")
        if expected is not None and expected != calculated:
            raise InvalidChecksum(
                f"The {algorithm} you specified did not match the calculated checksum.",
                fields={"ExpectedChecksum": expected, "CalculatedChecksum": calculated})
