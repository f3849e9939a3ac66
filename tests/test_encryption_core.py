"""Encryption at rest, the core (``gateway.service.encryption``): the chunk format round-trips
any body however it is cut, a range reads only the chunks it needs, any damage to the
ciphertext is detected, keys are checked as S3 checks them, and rotating the master key
(``gateway encryption rotate-master-key``, over a real database) re-wraps data keys without
touching a blob."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from gateway import errors
from gateway.metadata.db import Database
from gateway.metadata.models import buckets, multipart_uploads, objects, users
from gateway.service import encryption as enc
from gateway.settings import Settings
from storage_backends import Backend, ByteRange, PartRef
from storage_backends.registry import open_backend
from tests._server import database_for, run_cli_here
from tests._server import run_cli as gw

FAST = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=150)


async def feed(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (any values, folded into range), empty pieces included."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] + [b""]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


async def seal(data: bytes, key: bytes, *, chunk: int, segment: int = 0,
               nonce: bytes | None = None, cuts: Iterable[int] = ()) -> bytes:
    return await collect(enc.encrypt_stream(feed(split(data, cuts)), key, chunk=chunk,
                                            segment=segment, nonce=nonce))


async def open_all(blob: bytes, key: bytes, *, size: int, chunk: int, segment: int = 0,
                   nonce: bytes | None = None) -> bytes:
    return await collect(enc.decrypt_stream(feed([blob]), key, plain_size=size, chunk=chunk,
                                            segment=segment, nonce=nonce))


class Blob:
    """A stored blob read by ranges, counting what each read returns."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        assert 0 <= start < end <= len(self.data)
        self.reads.append((start, end))
        return feed([self.data[start:end]])

    @property
    def bytes_read(self) -> int:
        return sum(e - s for s, e in self.reads)


KEY = bytes(range(32))
chunks = st.integers(enc.MIN_CHUNK, 300)


# -- the format ------------------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=3000), chunk=chunks,
       cuts=st.lists(st.integers(0, 10**6), max_size=40),
       out_cuts=st.lists(st.integers(0, 10**6), max_size=40))
async def test_round_trip_any_size_and_cutting(data: bytes, chunk: int, cuts: list[int],
                                               out_cuts: list[int]) -> None:
    pieces = [p async for p in enc.encrypt_stream(feed(split(data, cuts)), KEY, chunk=chunk)]
    blob = b"".join(pieces)
    assert len(blob) == enc.ciphertext_size(len(data), chunk)
    # The header, then one sealed chunk per piece: never more than a chunk held at once.
    assert len(pieces) == 1 + enc.chunk_count(len(data), chunk)
    assert all(len(p) <= chunk + enc.TAG_SIZE for p in pieces[1:])
    # The reader takes the ciphertext cut anyhow, too.
    plain = await collect(enc.decrypt_stream(feed(split(blob, out_cuts)), KEY,
                                             plain_size=len(data), chunk=chunk))
    assert plain == data


async def test_encryption_streams_before_the_body_ends() -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1000

    stream = enc.encrypt_stream(endless(), KEY, chunk=4096)
    assert isinstance(stream, AsyncGenerator)
    assert len(await anext(stream)) == enc.HEADER_SIZE
    assert len(await anext(stream)) == 4096 + enc.TAG_SIZE
    assert consumed == 5  # one chunk and one byte past it: enough to know it is not last
    await stream.aclose()


@pytest.mark.parametrize(("size", "chunks_"), [(0, 1), (1, 1), (16, 1), (17, 2), (64, 4),
                                               (65, 5)])
async def test_sizes(size: int, chunks_: int) -> None:
    assert enc.chunk_count(size, 16) == chunks_
    blob = await seal(b"z" * size, KEY, chunk=16)
    assert len(blob) == enc.ciphertext_size(size, 16) == 12 + size + 16 * chunks_
    assert await open_all(blob, KEY, size=size, chunk=16) == b"z" * size


async def test_empty_object_is_one_authenticated_chunk() -> None:
    blob = await seal(b"", KEY, chunk=enc.CHUNK_SIZE)
    assert len(blob) == enc.HEADER_SIZE + enc.TAG_SIZE
    assert await open_all(blob, KEY, size=0, chunk=enc.CHUNK_SIZE) == b""
    with pytest.raises(enc.DecryptionError):  # its tag is checked
        await open_all(blob[:-1] + bytes([blob[-1] ^ 1]), KEY, size=0, chunk=enc.CHUNK_SIZE)
    with pytest.raises(enc.DecryptionError):  # and required
        await open_all(blob[:enc.HEADER_SIZE], KEY, size=0, chunk=enc.CHUNK_SIZE)


async def test_every_range_reads_only_its_chunks() -> None:
    chunk, size = 16, 85  # five full chunks and a 5-byte tail
    data = os.urandom(size)
    params, key = enc.new_params(customer=enc.CustomerKey.of(os.urandom(32)), chunk=chunk)
    blob = Blob(await seal(data, key, chunk=chunk, nonce=enc.params_nonce(params)))
    for start in range(size):
        for end in range(start + 1, size + 1):
            blob.reads.clear()
            body = await enc.open_decrypted(blob.read, key, params, plain_size=size,
                                            start=start, end=end)
            assert body.content_length == end - start
            assert await collect(aiter(body)) == data[start:end]
            first, last = start // chunk, (end - 1) // chunk
            # One read, of exactly the chunks holding the range (and the header with chunk 0).
            assert len(blob.reads) == 1
            (lo, hi), = blob.reads
            assert lo == (0 if first == 0 else enc.HEADER_SIZE + first * (chunk + 16))
            assert hi == enc.HEADER_SIZE + min((last + 1) * (chunk + 16), len(blob.data) - 12)


@FAST
@given(data=st.binary(min_size=1, max_size=2000), chunk=chunks, a=st.integers(0, 2000),
       b=st.integers(0, 2000))
async def test_ranges_without_a_recorded_nonce_read_the_header(data: bytes, chunk: int,
                                                               a: int, b: int) -> None:
    start, end = sorted((a % len(data), b % len(data)))
    end += 1
    params, key = enc.new_params(keyring=enc.Keyring([enc.MasterKey.generate()]), chunk=chunk)
    blob = Blob(await seal(data, key, chunk=chunk, nonce=enc.params_nonce(params)))
    del params["nonce"]  # as for a part: the header alone knows it
    body = await enc.open_decrypted(blob.read, key, params, plain_size=len(data), start=start,
                                    end=end)
    assert await collect(aiter(body)) == data[start:end]
    rng = enc.cipher_range(len(data), start, end, chunk)
    assert blob.bytes_read == rng.length + (0 if rng.with_header else enc.HEADER_SIZE)
    assert len(blob.reads) == (1 if rng.with_header else 2)


@FAST
@given(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=6), chunk=chunks,
       a=st.integers(0, 10**6), b=st.integers(0, 10**6))
async def test_multipart_segments(sizes: list[int], chunk: int, a: int, b: int) -> None:
    """Each part is its own segment (own nonce, bound to its part number); a range across
    parts is one read (plus the first part's header when the range starts inside it)."""
    params, key = enc.new_params(customer=enc.CustomerKey.of(KEY), chunk=chunk,
                                 multipart=True)
    assert "nonce" not in params
    numbers = [3 * i + 1 for i in range(len(sizes))]  # part numbers need not be 1, 2, 3
    parts = [os.urandom(s) for s in sizes]
    blob = Blob(b"".join([await seal(p, key, chunk=chunk, segment=n)
                          for n, p in zip(numbers, parts, strict=True)]))
    data = b"".join(parts)
    assert len(blob.data) == enc.object_ciphertext_size(sizes, chunk)
    layout = list(zip(numbers, sizes, strict=True))
    if data:
        start, end = sorted((a % len(data), b % len(data)))
        end += 1
    else:
        start = end = 0
    body = await enc.open_decrypted(blob.read, key, params, plain_size=len(data), start=start,
                                    end=end, parts=layout)
    assert await collect(aiter(body)) == data[start:end]
    assert len(blob.reads) <= 2
    full = await enc.open_decrypted(blob.read, key, params, plain_size=len(data), parts=layout)
    assert await collect(aiter(full)) == data


async def test_parts_are_bound_to_their_numbers() -> None:
    key, chunk = KEY, 16
    one, two = b"a" * 40, b"b" * 40
    blob1 = await seal(one, key, chunk=chunk, segment=1)
    blob2 = await seal(two, key, chunk=chunk, segment=2)
    layout = [(1, 40), (2, 40)]
    params = {"v": 1, "alg": "AES256", "mode": "sse-c", "chunk": chunk}
    good = Blob(blob1 + blob2)
    body = await enc.open_decrypted(good.read, key, params, plain_size=80, parts=layout)
    assert await collect(aiter(body)) == one + two
    swapped = Blob(blob2 + blob1)  # the backend joined the parts in the wrong order
    body = await enc.open_decrypted(swapped.read, key, params, plain_size=80, parts=layout)
    with pytest.raises(enc.DecryptionError):
        await collect(aiter(body))


# -- damage ----------------------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=600), chunk=chunks, where=st.integers(0, 10**6),
       bit=st.integers(0, 7), recorded=st.booleans())
async def test_any_flipped_bit_is_detected(data: bytes, chunk: int, where: int, bit: int,
                                           recorded: bool) -> None:
    nonce = enc.new_nonce()
    blob = bytearray(await seal(data, KEY, chunk=chunk, nonce=nonce))
    blob[where % len(blob)] ^= 1 << bit
    with pytest.raises(enc.DecryptionError):
        await open_all(bytes(blob), KEY, size=len(data), chunk=chunk,
                       nonce=nonce if recorded else None)


@FAST
@given(data=st.binary(max_size=600), chunk=chunks, keep=st.integers(0, 10**6))
async def test_truncation_and_extension_are_detected(data: bytes, chunk: int,
                                                     keep: int) -> None:
    blob = await seal(data, KEY, chunk=chunk)
    with pytest.raises(enc.DecryptionError):
        await open_all(blob[:keep % len(blob)], KEY, size=len(data), chunk=chunk)
    with pytest.raises(enc.DecryptionError):
        await open_all(blob + b"\0", KEY, size=len(data), chunk=chunk)


async def test_swapped_and_dropped_chunks_are_detected() -> None:
    chunk = 16
    data = b"".join(bytes([i]) * chunk for i in range(4))  # four distinct full chunks
    blob = await seal(data, KEY, chunk=chunk)
    head, body = blob[:12], blob[12:]
    sealed = [body[i:i + 32] for i in range(0, len(body), 32)]
    assert len(sealed) == 4
    swapped = head + sealed[1] + sealed[0] + sealed[2] + sealed[3]
    with pytest.raises(enc.DecryptionError):
        await open_all(swapped, KEY, size=64, chunk=chunk)
    # Dropping the final chunk, with the recorded size changed to match, is still caught:
    # the chunk now last was not sealed as the final one.
    with pytest.raises(enc.DecryptionError):
        await open_all(head + b"".join(sealed[:3]), KEY, size=48, chunk=chunk)
    with pytest.raises(enc.DecryptionError):
        await open_all(head + b"".join(sealed[:3]), KEY, size=64, chunk=chunk)
    # A chunk from another object (same key, another nonce) does not fit either.
    other = await seal(data, KEY, chunk=chunk)
    with pytest.raises(enc.DecryptionError):
        await open_all(head + other[12:44] + b"".join(sealed[1:]), KEY, size=64, chunk=chunk)
    # A ranged read is checked the same way.
    rng = enc.cipher_range(64, 20, 40, chunk)
    window = swapped[rng.offset:rng.end_offset]
    with pytest.raises(enc.DecryptionError):
        await collect(enc.decrypt_stream(feed([window]), KEY, plain_size=64, start=20, end=40,
                                         chunk=chunk, nonce=head[4:]))


@FAST
@given(data=st.binary(max_size=600), chunk=chunks)
async def test_wrong_data_key_fails(data: bytes, chunk: int) -> None:
    blob = await seal(data, KEY, chunk=chunk)
    with pytest.raises(enc.DecryptionError):
        await open_all(blob, os.urandom(32), size=len(data), chunk=chunk)


@FAST
@given(data=st.binary(min_size=16, max_size=3000), chunk=chunks)
async def test_ciphertext_never_contains_the_plaintext(data: bytes, chunk: int) -> None:
    blob = await seal(data, KEY, chunk=chunk)
    assert data not in blob
    assert data[:16] not in blob


# -- keys ------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_master_keys_from_the_environment() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    ring = enc.Keyring(env_keys=enc.parse_env_keys(f" {b64(k2)} , {b64(k1)}"))
    assert ring.current.key == k2 and ring.current.kid == enc.key_id(k2)
    assert ring.get(enc.key_id(k1)).key == k1
    assert enc.key_id(k1).startswith("mk-") and enc.key_id(k1) != enc.key_id(k2)
    assert b64(k1) not in repr(ring.keys)
    for bad in ("not base64!", b64(os.urandom(16))):
        with pytest.raises(ValueError, match="base64 of 32 bytes"):
            enc.parse_env_keys(bad)
    with pytest.raises(enc.MissingMasterKey):
        ring.get("mk-0000000000000000")


def test_key_file_is_created_at_first_use_with_mode_0600(tmp_path: Path) -> None:
    ring = enc.Keyring.load("", tmp_path)
    path = enc.key_file_path(tmp_path)
    assert not path.exists()  # loading alone writes nothing
    first = ring.current
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert enc.read_key_file(path) == [first]
    assert enc.Keyring.load("", tmp_path).current == first  # another process agrees
    second = enc.add_master_key(tmp_path)
    assert enc.read_key_file(path) == [first, second]
    # A running gateway finds a key rotated in by another process: at once for reads, within
    # reload_seconds for writes.
    assert ring.get(second.kid) == second
    ring.reload_seconds = 0
    assert ring.current == second
    # With the variable set, it encrypts; the file's keys still decrypt.
    env = enc.MasterKey.generate()
    both = enc.Keyring.load(b64(env.key), tmp_path)
    assert both.current == env and both.get(first.kid) == first
    assert [k.kid for k in both.keys] == [env.kid, second.kid, first.kid]
    path.write_text(path.read_text().replace(first.kid, "mk-ffffffffffffffff"))
    with pytest.raises(ValueError, match="damaged"):
        enc.read_key_file(path)


async def test_sse_s3_params_and_rotation(tmp_path: Path) -> None:
    ring = enc.Keyring.load("", tmp_path)
    params, key = enc.new_params(keyring=ring)
    json.dumps(params)  # stored in a JSON column
    assert params["mode"] == "sse-s3" and params["kid"] == ring.current.kid
    assert params["chunk"] == enc.CHUNK_SIZE and "key_md5" not in params
    assert b64(key) not in json.dumps(params)
    data = os.urandom(200_000)
    blob = await seal(data, key, chunk=params["chunk"], nonce=enc.params_nonce(params))
    assert enc.data_key_for(params, keyring=ring, customer=None) == key
    assert enc.response_headers(params) == {"x-amz-server-side-encryption": "AES256"}

    assert enc.rewrap(params, ring) is params  # already under the current key
    enc.add_master_key(tmp_path)
    ring.reload()
    rotated = enc.rewrap(params, ring)
    assert rotated["kid"] == ring.current.kid != params["kid"]
    assert rotated["wrapped"] != params["wrapped"]
    assert {k: v for k, v in rotated.items() if k not in ("kid", "wrapped")} == \
        {k: v for k, v in params.items() if k not in ("kid", "wrapped")}
    assert enc.rewrap(rotated, ring) is rotated
    # The blob is unchanged and opens with either wrapping (the old key is kept).
    for p in (rotated, params):
        dk = enc.data_key_for(p, keyring=ring, customer=None)
        assert dk is not None
        body = await enc.open_decrypted(Blob(blob).read, dk, p, plain_size=len(data),
                                        start=70_000, end=140_000)
        assert await collect(aiter(body)) == data[70_000:140_000]
    # Without the old key, only the re-wrapped parameters open.
    newest = enc.Keyring([ring.current])
    assert enc.data_key_for(rotated, keyring=newest, customer=None) == key
    with pytest.raises(enc.MissingMasterKey):
        enc.data_key_for(params, keyring=newest, customer=None)
    with pytest.raises(enc.DecryptionError):  # a damaged wrapping
        enc.data_key_for({**rotated, "wrapped": params["wrapped"]}, keyring=ring,
                         customer=None)


def status_of(exc: pytest.ExceptionInfo[errors.GatewayError]) -> tuple[int, str, str]:
    return exc.value.status, exc.value.code, exc.value.message


def test_sse_c_keys() -> None:
    alice, mallory = enc.CustomerKey.of(os.urandom(32)), enc.CustomerKey.of(os.urandom(32))
    ring = enc.Keyring([enc.MasterKey.generate()])
    params, key = enc.new_params(customer=alice)
    assert params["mode"] == "sse-c" and params["key_md5"] == alice.md5
    assert "kid" not in params and b64(alice.key) not in json.dumps(params)
    assert enc.data_key_for(params, keyring=ring, customer=alice) == key
    assert enc.response_headers(params) == {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key-MD5": alice.md5}
    with pytest.raises(errors.GatewayError) as wrong:
        enc.data_key_for(params, keyring=ring, customer=mallory)
    assert status_of(wrong) == (403, "AccessDenied", enc.MSG_WRONG_KEY)
    # Even with the stored MD5 forged to match, the wrong key cannot unwrap the data key.
    forged = {**params, "key_md5": mallory.md5}
    with pytest.raises(errors.GatewayError) as unwrap:
        enc.data_key_for(forged, keyring=ring, customer=mallory)
    assert status_of(unwrap)[:2] == (403, "AccessDenied")
    with pytest.raises(errors.GatewayError) as missing:
        enc.data_key_for(params, keyring=ring, customer=None)
    assert status_of(missing) == (400, "InvalidRequest", enc.MSG_KEY_REQUIRED)
    with pytest.raises(errors.GatewayError) as part:
        enc.data_key_for(params, keyring=ring, customer=mallory, purpose="part")
    assert status_of(part) == (400, "InvalidRequest", enc.MSG_PART_WRONG_KEY)
    with pytest.raises(errors.GatewayError) as part_missing:
        enc.data_key_for(params, keyring=ring, customer=None, purpose="part")
    assert status_of(part_missing) == (400, "InvalidRequest", enc.MSG_PART_KEY_REQUIRED)
    clear: dict[str, Any] | None
    for clear in (None, {}):
        assert enc.data_key_for(clear, keyring=ring, customer=None) is None
        with pytest.raises(errors.GatewayError) as na:
            enc.data_key_for(clear, keyring=ring, customer=alice)
        assert status_of(na) == (400, "InvalidRequest", enc.MSG_NOT_APPLICABLE)
    sse_s3, _ = enc.new_params(keyring=ring)
    with pytest.raises(errors.GatewayError) as na_s3:
        enc.data_key_for(sse_s3, keyring=ring, customer=alice)
    assert status_of(na_s3)[:2] == (400, "InvalidRequest")
    # Rotation leaves SSE-C parameters alone; copying to another key re-wraps, no re-encrypting.
    assert enc.rewrap(params, ring) is params
    moved = enc.wrap_params(key, customer=mallory, chunk=params["chunk"],
                            nonce=enc.params_nonce(params))
    assert enc.data_key_for(moved, keyring=ring, customer=mallory) == key


def headers_of(key: bytes, **changes: str | None) -> dict[str, str]:
    base = {"X-Amz-Server-Side-Encryption-Customer-Algorithm": "AES256",
            "X-Amz-Server-Side-Encryption-Customer-Key": b64(key),
            "X-Amz-Server-Side-Encryption-Customer-Key-MD5":
                b64(hashlib.md5(key).digest())}
    for name, value in changes.items():
        header = f"X-Amz-Server-Side-Encryption-Customer-{name.replace('_', '-')}"
        if value is None:
            del base[header]
        else:
            base[header] = value
    return base


def test_sse_c_header_validation() -> None:
    key = os.urandom(32)
    got = enc.customer_key_from_headers(headers_of(key))
    assert got is not None and got.key == key and got.md5 == b64(hashlib.md5(key).digest())
    assert enc.customer_key_from_headers({"Content-Type": "text/plain"}) is None
    assert enc.customer_key_from_headers(enc.CustomerKey.of(key).headers()) == \
        enc.CustomerKey.of(key)
    cases: list[tuple[dict[str, str], str, str]] = [
        (headers_of(key, Algorithm=None), "InvalidArgument", enc.MSG_NEED_ALGORITHM),
        (headers_of(key, Key=None), "InvalidArgument", enc.MSG_NEED_KEY),
        (headers_of(key, Algorithm="AES128"), "InvalidEncryptionAlgorithmError",
         enc.MSG_BAD_ALGORITHM),
        (headers_of(key, Key=b64(key[:16]), Key_MD5=b64(hashlib.md5(key[:16]).digest())),
         "InvalidArgument", enc.MSG_BAD_KEY),
        (headers_of(key, Key="%%%not base64"), "InvalidArgument", enc.MSG_BAD_KEY),
        (headers_of(key, Key_MD5=None), "InvalidArgument", enc.MSG_NEED_KEY_MD5),
        (headers_of(key, Key_MD5=b64(hashlib.md5(b"other").digest())), "InvalidArgument",
         enc.MSG_KEY_MD5_MISMATCH),
    ]
    for headers, code, message in cases:
        with pytest.raises(errors.GatewayError) as exc:
            enc.customer_key_from_headers(headers)
        assert (exc.value.status, exc.value.code, exc.value.message) == (400, code, message)
    with pytest.raises(errors.GatewayError) as algo:
        enc.customer_key_from_headers(headers_of(key, Algorithm="AES128"))
    assert algo.value.fields["ArgumentValue"] == "AES128"
    # CopyObject's source key comes in its own headers.
    # (x-amz-copy-source-server-side-encryption-customer-*, as S3 spells them.)
    copy = {"x-amz-copy-source-" + k.lower().removeprefix("x-amz-"): v
            for k, v in headers_of(key).items()}
    assert enc.CustomerKey.of(key).headers(copy_source=True).keys() == {
        "x-amz-copy-source-server-side-encryption-customer-algorithm",
        "x-amz-copy-source-server-side-encryption-customer-key",
        "x-amz-copy-source-server-side-encryption-customer-key-MD5"}
    assert enc.customer_key_from_headers(copy) is None
    source = enc.customer_key_from_headers(copy, copy_source=True)
    assert source is not None and source.key == key


def test_write_headers() -> None:
    key = os.urandom(32)
    assert enc.write_encryption_from_headers({}) == enc.WriteEncryption()
    assert enc.write_encryption_from_headers({}).resolve(None) is None
    assert enc.write_encryption_from_headers({}).resolve("AES256") == "sse-s3"
    sse = enc.write_encryption_from_headers({"x-amz-server-side-encryption": "AES256"})
    assert sse.mode == "sse-s3" and sse.resolve(None) == "sse-s3"
    ssec = enc.write_encryption_from_headers(headers_of(key))
    assert ssec.mode == "sse-c" and ssec.customer is not None and ssec.resolve("AES256") == "sse-c"
    bad: list[tuple[dict[str, str], int, str, str]] = [
        ({"x-amz-server-side-encryption": "AES128"}, 400, "InvalidArgument",
         enc.MSG_UNSUPPORTED_METHOD),
        ({"x-amz-server-side-encryption": "aws:kms"}, 501, "NotImplemented", ""),
        ({"x-amz-server-side-encryption": "AES256",
          "x-amz-server-side-encryption-aws-kms-key-id": "k"}, 400, "InvalidArgument",
         enc.MSG_KMS_KEY_WITHOUT_KMS),
        ({"x-amz-server-side-encryption": "AES256", **headers_of(key)}, 400,
         "InvalidArgument", enc.MSG_SSE_C_INCOMPATIBLE),
    ]
    for headers, status, code, message in bad:
        with pytest.raises(errors.GatewayError) as exc:
            enc.write_encryption_from_headers(headers)
        assert (exc.value.status, exc.value.code) == (status, code)
        if message:
            assert exc.value.message == message


# -- on real backends --------------------------------------------------------------------------


def blob_key() -> str:
    token = uuid.uuid4().hex
    return f"b/1/{token[:2]}/{token}"


@pytest.mark.parametrize("kind", ["fs", "memory"])
async def test_on_a_backend_single_and_multipart(kind: str, tmp_path: Path) -> None:
    backend: Backend = open_backend(kind, data_dir=tmp_path)
    ring = enc.Keyring.load("", tmp_path)
    marker = b"PLAINTEXT-MARKER-" * 4000
    try:
        params, key = enc.new_params(keyring=ring)
        name = blob_key()
        size = len(marker)
        info = await backend.put(name, enc.encrypt_stream(
            feed(split(marker, range(0, size, 7001))), key, chunk=params["chunk"],
            nonce=enc.params_nonce(params)), size=enc.ciphertext_size(size, params["chunk"]))
        assert info.size == enc.ciphertext_size(size)

        async def read(start: int, end: int) -> Any:
            return await backend.get(info.key, byte_range=ByteRange(start, end))

        body = await enc.open_decrypted(read, key, params, plain_size=size, start=40_000,
                                        end=40_500)
        try:
            assert await collect(aiter(body)) == marker[40_000:40_500]
        finally:
            await body.aclose()

        # A multipart upload: each part its own segment; the backend joins the ciphertexts.
        up_params, up_key = enc.new_params(keyring=ring, multipart=True)
        mkey = blob_key()
        upload = await backend.create_multipart(mkey)
        pieces = [marker[:30_000], marker[30_000:]]
        refs = []
        for number, piece in enumerate(pieces, 1):
            sealed_size = enc.ciphertext_size(len(piece))
            part = await backend.put_part(mkey, upload, number, enc.encrypt_stream(
                feed([piece]), up_key, segment=number), size=sealed_size)
            refs.append(PartRef(number, sealed_size, part.token))
        joined = await backend.complete_multipart(mkey, upload, refs)
        assert joined.size == enc.object_ciphertext_size([len(p) for p in pieces])

        async def read_joined(start: int, end: int) -> Any:
            return await backend.get(joined.key, byte_range=ByteRange(start, end))

        layout = [(1, 30_000), (2, size - 30_000)]
        body = await enc.open_decrypted(read_joined, up_key, up_params, plain_size=size,
                                        start=29_000, end=31_000, parts=layout)
        try:
            assert await collect(aiter(body)) == marker[29_000:31_000]
        finally:
            await body.aclose()
    finally:
        await backend.aclose()
    if kind == "fs":  # what lies on disk never shows the plaintext
        files = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert b"PLAINTEXT-MARKER" not in path.read_bytes()


# -- rotation from the shell, over a real database ---------------------------------------------


def settings_for(data: Path, master_key: str = "") -> Settings:
    return Settings(data_dir=data, database_url=database_for(data), master_key=master_key)


async def insert_rows(data: Path, rows: Sequence[dict[str, Any] | None],
                      uploads: Sequence[dict[str, Any]] = ()) -> None:
    """Objects (and uploads) with these encryption parameters, as the gateway stores them."""
    db = Database(settings_for(data).effective_database_url)
    await db.start()
    now = datetime.now(UTC)

    def unit(conn: Any) -> None:
        user = conn.execute(select(users.c.id).where(users.c.name == "rot")).scalar()
        if user is None:
            user = conn.execute(insert(users).values(name="rot", role="admin",
                                                     created_at=now)).inserted_primary_key[0]
            conn.execute(insert(buckets).values(name="rot-bucket", owner_id=user,
                                                region="us-east-1", created_at=now))
        bucket = conn.execute(select(buckets.c.id).where(buckets.c.name == "rot-bucket")
                              ).scalar()
        for params in rows:
            conn.execute(insert(objects).values(
                bucket_id=bucket, key=f"k/{uuid.uuid4().hex}", size=1, etag="e" * 32,
                last_modified=now, blob_key=blob_key(), user_metadata={}, headers={},
                encryption=params))
        for params in uploads:
            conn.execute(insert(multipart_uploads).values(
                id=uuid.uuid4().hex, bucket_id=bucket, key="up", blob_key=blob_key(),
                backend_upload_id="x", owner_id=user, initiated_at=now, state="active",
                user_metadata={}, headers={}, storage_class="STANDARD", encryption=params))

    try:
        await db.write(unit)
    finally:
        await db.aclose()


async def stored(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    db = Database(settings_for(data).effective_database_url)
    await db.start()
    try:
        def unit(conn: Any) -> tuple[list[Any], list[Any]]:
            objs = conn.execute(select(objects.c.encryption).order_by(objects.c.id)).scalars()
            ups = conn.execute(select(multipart_uploads.c.encryption)).scalars()
            return [o for o in objs if o], [u for u in ups if u]
        return await db.read(unit)
    finally:
        await db.aclose()


def cli_env(master_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != enc.ENV_NAME}
    if master_key is not None:
        env[enc.ENV_NAME] = master_key
    return env


def spawn_cli(data: Path, *args: str, master_key: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``gateway encryption <args>``, spawned as an operator runs it."""
    return gw(data, "encryption", *args, env=cli_env(master_key))


def _main_in_process(data: Path, args: Sequence[str], master_key: str | None
                     ) -> subprocess.CompletedProcess[str]:
    return run_cli_here(data, "encryption", *args, env=cli_env(master_key))


async def cli(data: Path, *args: str, master_key: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``gateway encryption <args>`` by the CLI's own ``main`` in this process (in a thread:
    it runs its own event loop), with the environment ``spawn_cli`` would give it: the same
    parsing, exit codes and output, without an interpreter start-up each time."""
    return await asyncio.to_thread(_main_in_process, data, args, master_key)


async def test_rotate_master_key_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_status = await cli(data, "status", "--json")  # creates the database, not a key
    assert first_status.returncode == 0, first_status.stderr
    assert json.loads(first_status.stdout)["keys"] == []
    assert not enc.key_file_path(data).exists()

    ring = enc.Keyring.load("", data)
    customer = enc.CustomerKey.of(os.urandom(32))
    plain = os.urandom(5000)
    made = [enc.new_params(keyring=ring, chunk=1024) for _ in range(230)]
    ssec, _ = enc.new_params(customer=customer)
    upload, upload_key = enc.new_params(keyring=ring, multipart=True)
    sample_params, sample_key = made[7]
    blob = await seal(plain, sample_key, chunk=1024, nonce=enc.params_nonce(sample_params))
    await insert_rows(data, [p for p, _ in made] + [ssec, None], [upload])
    old_kid = ring.current.kid

    done = spawn_cli(data, "rotate-master-key", "--batch", "50", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["generated"] and report["master_key"] != old_kid
    assert report["rewrapped"] == 231 and report["unchanged"] == 1 and report["ok"]
    path = enc.key_file_path(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.kid for k in enc.read_key_file(path)] == [old_kid, report["master_key"]]

    objs, ups = await stored(data)
    assert [o["kid"] for o in objs if o["mode"] == "sse-s3"] == [report["master_key"]] * 230
    assert [o for o in objs if o["mode"] == "sse-c"] == [ssec]  # untouched
    assert ups[0]["kid"] == report["master_key"]
    fresh = enc.Keyring.load("", data)
    # Same data keys: the blobs need no rewrite, and the old parameters still open too.
    for params, key in made:
        assert enc.data_key_for(params, keyring=fresh, customer=None) == key
    for params, (_, key) in zip([o for o in objs if o["mode"] == "sse-s3"], made, strict=True):
        assert enc.data_key_for(params, keyring=fresh, customer=None) == key
    assert enc.data_key_for(ups[0], keyring=fresh, customer=None) == upload_key
    new_params = objs[7]
    assert await open_all(blob, enc.data_key_for(new_params, keyring=fresh, customer=None)
                          or b"", size=len(plain), chunk=1024) == plain

    # A gateway that had not yet noticed the rotation wrote a few more under the old key;
    # status shows them, and --rewrap-only finishes the job without another key.
    stale = enc.Keyring([fresh.get(old_kid)])
    await insert_rows(data, [enc.new_params(keyring=stale)[0] for _ in range(3)])
    status = json.loads((await cli(data, "status", "--json")).stdout)
    counts = {k["id"]: k["objects"] for k in status["keys"]}
    assert counts == {report["master_key"]: 230, old_kid: 3}
    assert status["sse_c"]["objects"] == 1 and status["missing_keys"] == []
    again = json.loads((await cli(data, "rotate-master-key", "--rewrap-only", "--json")).stdout)
    assert (again["generated"], again["rewrapped"], again["unchanged"]) == (False, 3, 232)
    assert again["master_key"] == report["master_key"]
    idem = json.loads((await cli(data, "rotate-master-key", "--rewrap-only", "--json")).stdout)
    assert (idem["rewrapped"], idem["unchanged"]) == (0, 235)
    assert len(enc.read_key_file(path)) == 2

    # Moving to GATEWAY_MASTER_KEY: the variable's first key takes over, nothing generated.
    env_key = enc.MasterKey.generate()
    moved = await cli(data, "rotate-master-key", "--json", master_key=b64(env_key.key))
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["master_key"] == env_key.kid
    assert len(enc.read_key_file(path)) == 2
    objs, _ = await stored(data)
    assert {o.get("kid") for o in objs} == {env_key.kid, None}
    only_env = enc.Keyring(env_keys=[env_key])
    assert enc.data_key_for(objs[7], keyring=only_env, customer=None) == sample_key

    bad = await cli(data, "status", master_key="not-a-key")
    assert bad.returncode == 2 and "base64 of 32 bytes" in bad.stderr
    # A key that is gone is reported, not guessed at.
    orphan = enc.Keyring([enc.MasterKey.generate()])
    await insert_rows(data, [enc.new_params(keyring=orphan)[0]])
    missing = await cli(data, "status", "--json", master_key=b64(env_key.key))
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["missing_keys"] == [orphan.current.kid]
    failed = await cli(data, "rotate-master-key", "--json", master_key=b64(env_key.key))
    assert failed.returncode == 1
    assert orphan.current.kid in json.loads(failed.stdout)["failures"][0]
    # Without any key there is nothing to re-wrap under, and none is made up.
    os.unlink(path)
    none = await cli(data, "rotate-master-key", "--rewrap-only")
    assert none.returncode == 2 and "no master key" in none.stderr
    assert not path.exists()
