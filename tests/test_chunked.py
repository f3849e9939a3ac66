from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore import httpchecksum
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.auth.chunked import decode_aws_chunked
from gateway.auth.sigv4 import ChunkSigner, PayloadMode, RequestView, authenticate
from gateway.checksums import DigestingStream, checksum_request
from tests import _awschunked as ac

AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_DATE = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_KEY = ac.derive_key(SECRET, "20130524", "us-east-1")
DOC_DATA = b"a" * 66560


def doc_signing(seed: str) -> ac.Signing:
    return ac.Signing(DOC_KEY, DOC_DATE, DOC_SCOPE, seed)


def signer_for(signing: ac.Signing, *, trailer: bool = False) -> ChunkSigner:
    return ChunkSigner(signing.key, signing.amz_date, signing.scope, signing.seed_signature,
                       expects_trailer=trailer)


async def feed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


async def decode(wire: bytes | list[bytes], signer: ChunkSigner | None,
                 trailers: dict[str, str] | None = None, **kw: int) -> bytes:
    pieces = [wire] if isinstance(wire, bytes) else wire
    out = bytearray()
    async for data in decode_aws_chunked(feed(pieces), chunk_signer=signer,
                                         trailers=trailers if trailers is not None else {},
                                         **kw):
        out += data
    return bytes(out)


# -- the AWS documentation's examples ----------------------------------------------------
DOC_SIGNED = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    b"\r\n" + b"a" * 65536 + b"\r\n"
    b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    b"\r\n" + b"a" * 1024 + b"\r\n"
    b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    b"\r\n\r\n")
DOC_SIGNED_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_TRAILER = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"
    b"\r\n" + b"a" * 65536 + b"\r\n"
    b"400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"
    b"\r\n" + b"a" * 1024 + b"\r\n"
    b"0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
    b"\r\n\r\n")
DOC_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"


def test_encoder_reproduces_the_aws_examples() -> None:
    assert ac.encode(DOC_DATA, signing=doc_signing(DOC_SIGNED_SEED)) == DOC_SIGNED
    trailers = [("x-amz-checksum-crc32c", "sOO8/Q==")]
    assert ac.encode(DOC_DATA, signing=doc_signing(DOC_TRAILER_SEED),
                     trailers=trailers) == DOC_TRAILER


async def test_aws_example_signed() -> None:
    signer = signer_for(doc_signing(DOC_SIGNED_SEED))
    assert await decode(DOC_SIGNED, signer) == DOC_DATA


async def test_aws_example_signed_trailer_from_the_request() -> None:
    """The whole chain: the example request's seed signature, then chunks and trailer."""
    headers = [
        ("Host", "s3.amazonaws.com"), ("x-amz-date", DOC_DATE),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
        ("Content-Encoding", "aws-chunked"), ("x-amz-decoded-content-length", "66560"),
        ("x-amz-trailer", "x-amz-checksum-crc32c"), ("Content-Length", str(len(DOC_TRAILER))),
        ("Authorization", f"AWS4-HMAC-SHA256 Credential={AK}/{DOC_SCOPE},SignedHeaders="
         "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
         f"x-amz-storage-class;x-amz-trailer,Signature={DOC_TRAILER_SEED}"),
    ]

    async def lookup(access_key: str) -> str | None:
        return SECRET if access_key == AK else None

    ctx = await authenticate(RequestView("PUT", "/examplebucket/chunkObject.txt", "", headers),
                             lookup, now=datetime(2013, 5, 24, tzinfo=UTC))
    assert ctx is not None and ctx.chunk_signer is not None
    assert ctx.payload_mode is PayloadMode.STREAMING_SIGNED_TRAILER
    trailers: dict[str, str] = {}
    assert await decode(split(DOC_TRAILER, range(1, len(DOC_TRAILER), 777)),
                        ctx.chunk_signer, trailers) == DOC_DATA
    assert trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


# -- round trips -------------------------------------------------------------------------
SIGNING = ac.Signing(ac.derive_key("secret", "20240101", "eu-west-1"), "20240101T120000Z",
                     "20240101/eu-west-1/s3/aws4_request", "ab" * 32)
MODES = ["signed", "signed-trailer", "unsigned-trailer", "unsigned"]


def encode_mode(mode: str, data: bytes, chunk_size: int) -> tuple[bytes, ChunkSigner | None]:
    trailers = [("x-amz-checksum-crc32", ac.crc32_b64(data))] if "trailer" in mode else None
    signing = SIGNING if mode.startswith("signed") else None
    wire = ac.encode(data, chunk_size=chunk_size, signing=signing, trailers=trailers)
    signer = signer_for(SIGNING, trailer="trailer" in mode) if signing else None
    return wire, signer


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mode=st.sampled_from(MODES), data=st.binary(max_size=3000),
       chunk_size=st.integers(1, 1500), cuts=st.lists(st.integers(0, 10**6), max_size=30))
async def test_round_trip_any_split(mode: str, data: bytes, chunk_size: int,
                                    cuts: list[int]) -> None:
    wire, signer = encode_mode(mode, data, chunk_size)
    trailers: dict[str, str] = {}
    assert await decode(split(wire, cuts), signer, trailers) == data
    if "trailer" in mode:
        assert trailers == {"x-amz-checksum-crc32": ac.crc32_b64(data)}
    else:
        assert trailers == {}


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), chunk_size=st.integers(1, 700),
       cuts=st.lists(st.integers(0, 10**6), max_size=10))
async def test_botocore_unsigned_trailer_body(data: bytes, chunk_size: int,
                                              cuts: list[int]) -> None:
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=httpchecksum.CrtCrc32Checksum,
        checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    wire = wrapper.read()
    trailers: dict[str, str] = {}
    assert await decode(split(wire, cuts), None, trailers) == data
    assert trailers == {"x-amz-checksum-crc32": ac.crc32_b64(data)}


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mode=st.sampled_from(MODES), data=st.binary(max_size=600),
       chunk_size=st.integers(1, 300), cut=st.integers(0, 10**6))
async def test_truncated_before_final_chunk(mode: str, data: bytes, chunk_size: int,
                                            cut: int) -> None:
    wire, signer = encode_mode(mode, data, chunk_size)
    final = wire.rindex(b"\r\n0") + 2 if data else 0
    end_of_final_line = wire.index(b"\r\n", final) + 2
    truncated = wire[:cut % end_of_final_line]
    with pytest.raises(errors.IncompleteBody):
        await decode(truncated, signer)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mode=st.sampled_from(MODES), data=st.binary(max_size=600),
       chunk_size=st.integers(1, 300), cut=st.integers(0, 10**6))
async def test_truncation_never_passes_silently(mode: str, data: bytes, chunk_size: int,
                                                cut: int) -> None:
    wire, signer = encode_mode(mode, data, chunk_size)
    truncated = wire[:cut % len(wire)]
    trailers: dict[str, str] = {}
    try:
        decoded = await decode(truncated, signer, trailers)
    except (errors.IncompleteBody, errors.SignatureDoesNotMatch, errors.InvalidRequest):
        return
    # Only a cut inside the trailer section can decode, and then the data is complete; the
    # missing or cut trailer is for DigestingStream to notice.
    assert decoded == data


# -- tampering ---------------------------------------------------------------------------
def flip_hex(wire: bytes, marker: bytes, occurrence: int = 0) -> bytes:
    index = -1
    for _ in range(occurrence + 1):
        index = wire.index(marker, index + 1)
    pos = index + len(marker) + 5
    digit = b"0" if wire[pos:pos + 1] != b"0" else b"1"
    return wire[:pos] + digit + wire[pos + 1:]


@pytest.mark.parametrize("occurrence", [0, 1, 2])
async def test_tampered_chunk_signature(occurrence: int) -> None:
    wire = flip_hex(DOC_SIGNED, b"chunk-signature=", occurrence)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(wire, signer_for(doc_signing(DOC_SIGNED_SEED)))


@pytest.mark.parametrize("position", [100, 65536 + 120])
async def test_tampered_data(position: int) -> None:
    wire = DOC_SIGNED[:position] + b"b" + DOC_SIGNED[position + 1:]
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(wire, signer_for(doc_signing(DOC_SIGNED_SEED)))


async def test_signed_chunks_cannot_be_reordered_or_dropped() -> None:
    signing = doc_signing(DOC_SIGNED_SEED)
    first, second = DOC_SIGNED.split(b"\r\n400;")
    dropped = b"400;" + second
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(dropped, signer_for(signing))
    assert first  # the first chunk alone is a truncation
    with pytest.raises(errors.IncompleteBody):
        await decode(first + b"\r\n", signer_for(signing))


async def test_tampered_trailer_signature_and_value() -> None:
    signing = doc_signing(DOC_TRAILER_SEED)
    bad_signature = flip_hex(DOC_TRAILER, b"x-amz-trailer-signature:")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(bad_signature, signer_for(signing, trailer=True))
    bad_value = DOC_TRAILER.replace(b"sOO8/Q==", b"AAAAAA==")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(bad_value, signer_for(signing, trailer=True))
    no_signature = DOC_TRAILER[:DOC_TRAILER.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(no_signature, signer_for(signing, trailer=True))
    # Not hex at all, Latin-1 bytes included: refused like any wrong signature.
    at = DOC_TRAILER.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
    for junk in (b"\xe9" * 64, b"d81f\xff", b""):
        garbled = DOC_TRAILER[:at] + junk + b"\r\n\r\n"
        with pytest.raises(errors.SignatureDoesNotMatch):
            await decode(garbled, signer_for(signing, trailer=True))


async def test_unsigned_trailer_signature_is_ignored_and_not_reported() -> None:
    wire = ac.encode(b"xyz", chunk_size=2, trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
    wire = wire[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    trailers: dict[str, str] = {}
    assert await decode(wire, None, trailers) == b"xyz"
    assert trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


async def test_trailers_rejected_without_trailer_mode() -> None:
    wire = ac.encode(b"xyz", signing=SIGNING, trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
    with pytest.raises(errors.InvalidRequest):
        await decode(wire, signer_for(SIGNING, trailer=False))


# -- framing -----------------------------------------------------------------------------
async def test_blank_line_between_final_chunk_and_trailers_is_tolerated() -> None:
    signing = doc_signing(DOC_TRAILER_SEED)
    wire = DOC_TRAILER.replace(b"f992\r\nx-amz", b"f992\r\n\r\nx-amz")
    trailers: dict[str, str] = {}
    assert await decode(wire, signer_for(signing, trailer=True), trailers) == DOC_DATA
    assert trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


async def test_missing_final_blank_line_is_tolerated() -> None:
    assert await decode(b"3\r\nabc\r\n0\r\n", None) == b"abc"
    trailers: dict[str, str] = {}
    assert await decode(b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n", None,
                        trailers) == b"abc"
    assert trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


@pytest.mark.parametrize("wire", [
    b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",  # empty size
    b"3\nabc\r\n0\r\n\r\n",  # bare LF
    b"3\r\nabcd\r\n0\r\n\r\n",  # more data than announced
    b"3\r\nabc\r\n0\r\nx-a:1\r\n\r\nextra",  # bytes after the end
    b"3\r\nabc\r\n0\r\n\r\nextra\r\n",
    b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n",
    b"3\r\nabc\r\n0\r\nbad name:x\r\n\r\n",
    b"1" * 5000 + b"\r\n",  # line too long
    b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n",  # larger than max_chunk_size below
])
async def test_malformed(wire: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        await decode(wire, None, max_chunk_size=1000)


async def test_signed_chunk_without_signature() -> None:
    with pytest.raises(errors.SignatureDoesNotMatch):
        await decode(b"3\r\nabc\r\n0\r\n\r\n", signer_for(SIGNING))


async def test_streams_before_the_chunk_is_complete() -> None:
    wire = ac.encode(b"x" * 1000, chunk_size=1000)
    got: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        yield wire[:300]
        assert b"".join(got), "data should flow before the chunk is complete"
        yield wire[300:]

    async for data in decode_aws_chunked(source(), chunk_signer=None, trailers={}):
        got.append(data)
    assert b"".join(got) == b"x" * 1000


# -- end to end with a botocore-signed request -------------------------------------------
class _StreamingAuth(S3SigV4Auth):  # type: ignore[misc]
    """botocore signs S3 requests but cannot produce STREAMING-AWS4-HMAC-SHA256-* seeds."""

    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    def payload(self, request: AWSRequest) -> str:
        return self.mode


@pytest.mark.parametrize("trailer", [False, True])
async def test_botocore_seed_then_chunks_then_digests(trailer: bool) -> None:
    data = bytes(range(256)) * 300
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    request = AWSRequest("PUT", "http://127.0.0.1:9000/bucket/some%20key", headers=headers)
    auth = _StreamingAuth(Credentials("AKID", "SECRET"), "s3", "eu-central-1")
    auth.mode = mode
    when = datetime(2024, 6, 1, 12, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        auth.add_auth(request)
    prepared = request.prepare()
    view = RequestView("PUT", "/bucket/some%20key", "",
                       [("Host", "127.0.0.1:9000"), *prepared.headers.items()])

    async def lookup(access_key: str) -> str | None:
        return "SECRET" if access_key == "AKID" else None

    ctx = await authenticate(view, lookup, now=when.replace(tzinfo=UTC))
    assert ctx is not None and ctx.chunk_signer is not None
    assert ctx.payload_mode.value == mode and ctx.payload_mode.is_aws_chunked

    signing = ac.Signing.from_authorization(prepared.headers["Authorization"],
                                            prepared.headers["X-Amz-Date"], "SECRET")
    wire = ac.encode(data, chunk_size=8192, signing=signing,
                     trailers=[("x-amz-checksum-crc32", ac.crc32_b64(data))] if trailer else None)

    # The endpoint's wiring: decode, then digest (trailer checksum read at the end).
    lower = {k.lower(): v for k, v in headers.items()}
    algorithm, expected, trailer_name = checksum_request(lower)
    trailers: dict[str, str] = {}
    body = decode_aws_chunked(feed(split(wire, range(0, len(wire), 1000))),
                              chunk_signer=ctx.chunk_signer, trailers=trailers)
    stream = DigestingStream(body, expected_size=len(data), checksum_algorithm=algorithm,
                             expected_checksum=expected,
                             trailers=trailers if trailer_name else None)
    assert b"".join([piece async for piece in stream]) == data
    assert stream.checksum_value == (ac.crc32_b64(data) if trailer else None)
