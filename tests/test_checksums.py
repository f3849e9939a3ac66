from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import AsyncIterator, Iterable

import pytest
from botocore import httpchecksum
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.checksums import (
    ALGORITHMS,
    Checksum,
    DigestingStream,
    checksum_request,
    combine_full_object,
    composite,
    header_for,
    is_valid_value,
)

BOTOCORE = {
    "CRC32": httpchecksum.CrtCrc32Checksum,
    "CRC32C": httpchecksum.CrtCrc32cChecksum,
    "CRC64NVME": httpchecksum.CrtCrc64NvmeChecksum,
    "SHA1": httpchecksum.Sha1Checksum,
    "SHA256": httpchecksum.Sha256Checksum,
}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def oracle(algorithm: str, data: bytes) -> str:
    checksum = BOTOCORE[algorithm]()
    checksum.update(data)
    return str(checksum.b64digest())


async def pieces(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def drain(stream: DigestingStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


# -- Checksum ----------------------------------------------------------------------------
@pytest.mark.parametrize(("algorithm", "data", "expected"), [
    ("CRC32", b"hello world", b64(zlib.crc32(b"hello world").to_bytes(4, "big"))),
    ("CRC32", b"", "AAAAAA=="),
    ("CRC32C", b"123456789", b64(bytes.fromhex("e3069283"))),
    ("CRC32C", b"a" * 66560, "sOO8/Q=="),  # the AWS sigv4-streaming-trailers example
    ("CRC64NVME", b"123456789", b64(bytes.fromhex("ae8b14860a799888"))),
    ("SHA1", b"hello world", b64(hashlib.sha1(b"hello world").digest())),
    ("SHA256", b"", b64(hashlib.sha256(b"").digest())),
])
def test_known_vectors(algorithm: str, data: bytes, expected: str) -> None:
    checksum = Checksum(algorithm)
    checksum.update(data)
    assert checksum.digest_b64() == expected
    assert oracle(algorithm, data) == expected


@given(algorithm=st.sampled_from(ALGORITHMS), parts=st.lists(st.binary(max_size=300)))
def test_incremental_matches_botocore(algorithm: str, parts: list[bytes]) -> None:
    checksum = Checksum(algorithm.lower())
    for part in parts:
        checksum.update(part)
    assert checksum.algorithm == algorithm
    assert checksum.digest_b64() == oracle(algorithm, b"".join(parts))


def test_header_for() -> None:
    assert header_for("CRC32") == "x-amz-checksum-crc32"
    assert header_for("crc64nvme") == "x-amz-checksum-crc64nvme"
    with pytest.raises(errors.InvalidRequest):
        header_for("MD5")


def test_is_valid_value() -> None:
    assert is_valid_value("CRC32", "AAAAAA==")
    assert not is_valid_value("CRC32", "AAAAAAAAAAA=")  # 8 bytes
    assert not is_valid_value("CRC32", "not base64!")
    assert is_valid_value("SHA256", b64(bytes(32)))


@given(algorithm=st.sampled_from(["CRC32", "CRC32C", "CRC64NVME"]),
       parts=st.lists(st.binary(max_size=200), min_size=1, max_size=6))
def test_combine_full_object(algorithm: str, parts: list[bytes]) -> None:
    values = [(oracle(algorithm, part), len(part)) for part in parts]
    assert combine_full_object(algorithm, values) == oracle(algorithm, b"".join(parts))


def test_combine_full_object_rejects_sha() -> None:
    with pytest.raises(errors.InvalidRequest):
        combine_full_object("SHA256", [])


def test_composite() -> None:
    parts = [b"part one", b"part two"]
    values = [oracle("SHA1", part) for part in parts]
    raw = b"".join(hashlib.sha1(part).digest() for part in parts)
    assert composite("SHA1", values) == b64(hashlib.sha1(raw).digest()) + "-2"


# -- checksum_request --------------------------------------------------------------------
def test_checksum_request_none() -> None:
    assert checksum_request({}) == (None, None, None)
    assert checksum_request({"x-amz-checksum-mode": "ENABLED"}) == (None, None, None)
    assert checksum_request({"x-amz-checksum-algorithm": "CRC32",
                             "x-amz-checksum-type": "FULL_OBJECT"}) == (None, None, None)


def test_checksum_request_header() -> None:
    headers = {"x-amz-checksum-crc32c": "sOO8/Q==", "x-amz-sdk-checksum-algorithm": "CRC32C"}
    assert checksum_request(headers) == ("CRC32C", "sOO8/Q==", None)


def test_checksum_request_trailer_and_sdk_algorithm() -> None:
    headers = {"x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "crc32"}
    assert checksum_request(headers) == ("CRC32", None, "x-amz-checksum-crc32")
    assert checksum_request({"x-amz-sdk-checksum-algorithm": "SHA1"}) == ("SHA1", None, None)


@pytest.mark.parametrize("headers", [
    {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": b64(bytes(20))},
    {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-trailer": "x-amz-checksum-crc32"},
    {"x-amz-trailer": "x-amz-checksum-crc32, x-amz-checksum-sha1"},
    {"x-amz-checksum-md5": "AAAAAA=="},
    {"x-amz-trailer": "x-amz-checksum-whirlpool"},
    {"x-amz-sdk-checksum-algorithm": "ADLER32"},
    {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "SHA1"},
    {"x-amz-checksum-crc32": "zzz"},
])
def test_checksum_request_rejects(headers: dict[str, str]) -> None:
    with pytest.raises(errors.InvalidRequest):
        checksum_request(headers)


# -- DigestingStream ---------------------------------------------------------------------
DATA = b"The quick brown fox jumps over the lazy dog" * 100
PARTS = [DATA[:1000], b"", DATA[1000:3001], DATA[3001:]]
MD5_B64 = b64(hashlib.md5(DATA).digest())
SHA256_HEX = hashlib.sha256(DATA).hexdigest()


async def test_stream_success_everything() -> None:
    stream = DigestingStream(pieces(PARTS), expected_size=len(DATA), content_md5=MD5_B64,
                             content_sha256=SHA256_HEX.upper(), checksum_algorithm="CRC32",
                             expected_checksum=oracle("CRC32", DATA))
    assert await drain(stream) == DATA
    assert stream.size == len(DATA)
    assert stream.md5_hex == hashlib.md5(DATA).hexdigest()
    assert stream.checksum_algorithm == "CRC32"
    assert stream.checksum_value == oracle("CRC32", DATA)


async def test_stream_computes_without_expectations() -> None:
    stream = DigestingStream(pieces(PARTS), checksum_algorithm="sha256")
    assert await drain(stream) == DATA
    assert stream.checksum_value == oracle("SHA256", DATA)
    plain = DigestingStream(pieces([]))
    assert await drain(plain) == b""
    assert plain.md5_hex == hashlib.md5(b"").hexdigest()
    assert plain.checksum_algorithm is None and plain.checksum_value is None


async def test_stream_trailer_checksum() -> None:
    trailers: dict[str, str] = {}

    async def source() -> AsyncIterator[bytes]:
        yield DATA
        trailers["x-amz-checksum-crc64nvme"] = oracle("CRC64NVME", DATA)

    stream = DigestingStream(source(), checksum_algorithm="CRC64NVME", trailers=trailers)
    assert await drain(stream) == DATA
    assert stream.checksum_value == trailers["x-amz-checksum-crc64nvme"]


@pytest.mark.parametrize("bad", ["", "abc", b64(b"short"), "!!!!"])
def test_stream_invalid_content_md5(bad: str) -> None:
    with pytest.raises(errors.InvalidDigest):
        DigestingStream(pieces(PARTS), content_md5=bad)


async def collect_until_error(stream: DigestingStream) -> list[bytes]:
    seen: list[bytes] = []
    async for chunk in stream:
        seen.append(chunk)
    return seen


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"content_md5": b64(hashlib.md5(b"other").digest())}, errors.BadDigest),
    ({"content_sha256": hashlib.sha256(b"other").hexdigest()},
     errors.XAmzContentSHA256Mismatch),
    ({"checksum_algorithm": "CRC32C", "expected_checksum": "AAAAAA=="},
     errors.InvalidChecksum),
    ({"expected_size": len(DATA) + 1}, errors.IncompleteBody),
    ({"expected_size": len(DATA) - 1}, errors.IncompleteBody),
    ({"checksum_algorithm": "CRC32", "trailers": {}}, errors.InvalidRequest),
    ({"checksum_algorithm": "CRC32", "trailers": {"x-amz-checksum-crc32": "nope"}},
     errors.InvalidRequest),
    ({"checksum_algorithm": "CRC32", "trailers": {"x-amz-checksum-crc32": "AAAAAA=="}},
     errors.InvalidChecksum),
])
async def test_stream_failures(kwargs: dict[str, object], error: type[Exception]) -> None:
    stream = DigestingStream(pieces(PARTS), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        await collect_until_error(stream)
    if error is errors.InvalidChecksum:
        assert info.value.code == "BadDigest"  # type: ignore[attr-defined]


async def test_stream_too_long_fails_before_passing_the_extra_bytes() -> None:
    stream = DigestingStream(pieces([b"abc", b"def"]), expected_size=4)
    seen: list[bytes] = []
    with pytest.raises(errors.IncompleteBody):
        async for chunk in stream:
            seen.append(chunk)
    assert seen == [b"abc"]


async def test_stream_iterates_once() -> None:
    stream = DigestingStream(pieces(PARTS))
    await drain(stream)
    with pytest.raises(RuntimeError):
        stream.__aiter__()


def test_unknown_algorithm_rejected() -> None:
    with pytest.raises(errors.InvalidRequest):
        DigestingStream(pieces(PARTS), checksum_algorithm="MD5")
