"""Encryption at rest: SSE-S3 and SSE-C, on every backend (the backend only sees ciphertext).

**Keys.** Every encrypted object (or multipart upload) has its own random 256-bit *data
key*. The data key is stored only *wrapped* (AES-256-GCM) in the object's ``encryption``
parameters: under a server *master key* for SSE-S3, under the customer's key for SSE-C.
Rotating the master key therefore re-wraps 60 bytes per object in the database and never
rewrites a blob (:func:`rewrap`, ``gateway encryption rotate-master-key``). A wrong SSE-C key
fails the unwrap (its GCM tag), so it is refused before any byte is read.

Master keys (a :class:`Keyring`): ``GATEWAY_MASTER_KEY`` — base64 of 32 bytes, or several
separated by commas, the first encrypting and all decrypting — else a key file
``<data dir>/master.keys`` (mode 0600, one ``<id> <base64 key>`` per line, oldest first,
the last encrypting), created at the first encryption. Keys of the file always decrypt,
also when the variable is set. A key's id is derived from the key (an HMAC), never chosen.

**Format.** A *segment* is what one write encrypts: a whole object from PutObject, or one
part of a multipart upload (the backend joins the parts' segments). A segment is::

    header   "GWE1" + 8-byte random nonce prefix           (HEADER_SIZE = 12 bytes)
    chunk 0  AES-256-GCM(plaintext[0 : C]) + 16-byte tag
    chunk 1  ...
    chunk n-1  (the final chunk: 1..C bytes of plaintext; an empty segment has one empty
               final chunk, so even an empty object is authenticated)

with ``C`` the chunk size (:data:`CHUNK_SIZE`, recorded in the parameters as ``chunk``).
Chunk ``i`` uses the nonce ``prefix || i`` (32-bit big-endian) and the associated data
``segment || i || final``, where ``segment`` is 0 for a whole object and the part number for
a part. So a flipped bit, a dropped or swapped chunk, a truncated segment, a chunk moved
between parts or a part moved in the object all fail authentication. Nonces never repeat
under one data key: each segment, including every retried part upload, draws a fresh
prefix. The header makes every segment self-describing; a single-segment object also
records its prefix in the parameters (``nonce``) so that a ranged read needs one backend
read: the ciphertext of the whole chunks covering the range (:func:`cipher_range`).

**Parameters** (JSON, ``objects.encryption`` / ``multipart_uploads.encryption``)::

    {"v": 1, "alg": "AES256", "mode": "sse-s3" | "sse-c",
     "kid": <master key id> (sse-s3), "key_md5": <base64 MD5 of the customer key> (sse-c),
     "wrapped": <base64 nonce || wrapped data key>, "chunk": 65536,
     "nonce": <base64 nonce prefix of segment 0> (single-segment objects only)}

The customer key is never stored. Its MD5 is, because S3 echoes it back
(``x-amz-server-side-encryption-customer-key-MD5``, also on CompleteMultipartUpload, whose
request carries no key); it tells an attacker nothing the wrapped data key (a GCM-sealed
value under the same key) does not already let them test.

**SSE-C over plain HTTP.** S3 refuses SSE-C on plain HTTP. The gateway accepts it: it is
commonly run on plain HTTP behind a TLS-terminating proxy, which it cannot tell apart from
a plain-text client. Deployments exposed without TLS send customer keys in clear.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import stat
import struct
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import errors

log = logging.getLogger("gateway.encryption")

#: Plaintext bytes per chunk of new objects (existing ones keep theirs: ``params["chunk"]``).
CHUNK_SIZE = 64 * 1024
MIN_CHUNK = 16
MAX_CHUNK = 16 * 1024 * 1024
TAG_SIZE = 16
MAGIC = b"GWE1"
NONCE_PREFIX_SIZE = 8
HEADER_SIZE = len(MAGIC) + NONCE_PREFIX_SIZE
KEY_SIZE = 32
#: Chunk indexes are 32-bit (in the nonce): 256 TiB per segment at 64 KiB chunks.
MAX_CHUNKS = 2**32
FORMAT_VERSION = 1
ALGORITHM = "AES256"
SSE_S3: Literal["sse-s3"] = "sse-s3"
SSE_C: Literal["sse-c"] = "sse-c"
Mode = Literal["sse-s3", "sse-c"]

KEY_FILE = "master.keys"
ENV_NAME = "GATEWAY_MASTER_KEY"
_WRAP_NONCE = 12
_WRAP_AAD = {SSE_S3: b"gateway sse data key v1 sse-s3", SSE_C: b"gateway sse data key v1 sse-c"}

# -- S3 headers and their errors -----------------------------------------------------------

H_SSE = "x-amz-server-side-encryption"
H_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
H_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
H_KEY = "x-amz-server-side-encryption-customer-key"
H_KEY_MD5 = "x-amz-server-side-encryption-customer-key-md5"
#: The spelling S3 answers with.
H_KEY_MD5_OUT = "x-amz-server-side-encryption-customer-key-MD5"
COPY_SOURCE_PREFIX = "x-amz-copy-source-"


def copy_source_header(name: str) -> str:
    """The copy source's spelling of an SSE-C header:
    ``x-amz-copy-source-server-side-encryption-customer-…``."""
    return COPY_SOURCE_PREFIX + name.removeprefix("x-amz-")

MSG_UNSUPPORTED_METHOD = "The encryption method specified is not supported"
MSG_KMS_KEY_WITHOUT_KMS = ("Server Side Encryption with AWS KMS managed key requires HTTP "
                           "header x-amz-server-side-encryption : aws:kms")
MSG_SSE_C_INCOMPATIBLE = ("Server Side Encryption with Customer provided key is incompatible "
                          "with the encryption method specified")
MSG_NEED_ALGORITHM = ("Requests specifying Server Side Encryption with Customer provided keys "
                      "must provide a valid encryption algorithm.")
MSG_NEED_KEY = ("Requests specifying Server Side Encryption with Customer provided keys must "
                "provide an appropriate secret key.")
MSG_NEED_KEY_MD5 = ("Requests specifying Server Side Encryption with Customer provided keys "
                    "must provide the client calculated MD5 of the secret key.")
MSG_BAD_ALGORITHM = "The Encryption request you specified is not valid. Supported value: AES256."
MSG_BAD_KEY = "The secret key was invalid for the specified algorithm."
MSG_KEY_MD5_MISMATCH = ("The calculated MD5 hash of the key did not match the hash that was "
                        "provided.")
MSG_KEY_REQUIRED = ("The object was stored using a form of Server Side Encryption. The correct "
                    "parameters must be provided to retrieve the object.")
MSG_WRONG_KEY = ("Requests specifying Server Side Encryption with Customer provided keys must "
                 "provide the correct secret key.")
MSG_NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
MSG_PART_KEY_REQUIRED = ("The multipart upload initiate requested encryption. Subsequent part "
                         "requests must include the appropriate encryption parameters.")
MSG_PART_WRONG_KEY = "The provided encryption parameters did not match the ones used originally."


class DecryptionError(errors.InternalError):
    """Stored ciphertext failed authentication: corrupted, truncated or tampered with."""

    default_message = "An encrypted object failed its integrity check."


class MissingMasterKey(errors.InternalError):
    """An object's data key is wrapped under a master key this gateway does not have."""

    default_message = ("The master key this object was encrypted with is not configured "
                       "(GATEWAY_MASTER_KEY or <data dir>/master.keys).")


# -- the chunk format ----------------------------------------------------------------------


def _check_chunk(chunk: int) -> int:
    if not isinstance(chunk, int) or not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk size must be {MIN_CHUNK}..{MAX_CHUNK} bytes, not {chunk!r}")
    return chunk


def chunk_count(plain_size: int, chunk: int = CHUNK_SIZE) -> int:
    """Chunks of a segment of ``plain_size`` bytes: at least one (an empty final chunk)."""
    if plain_size < 0:
        raise ValueError(f"negative size {plain_size}")
    return max(1, -(-plain_size // _check_chunk(chunk)))


def ciphertext_size(plain_size: int, chunk: int = CHUNK_SIZE) -> int:
    """The stored size of a segment of ``plain_size`` plaintext bytes (header included)."""
    return HEADER_SIZE + plain_size + TAG_SIZE * chunk_count(plain_size, chunk)


def object_ciphertext_size(plain_sizes: Sequence[int], chunk: int = CHUNK_SIZE) -> int:
    """The stored size of a multipart object whose parts hold ``plain_sizes`` bytes."""
    return sum(ciphertext_size(size, chunk) for size in plain_sizes)


@dataclass(frozen=True, slots=True)
class CipherRange:
    """The ciphertext to read for the plaintext ``[start, end)`` of one segment.

    ``offset``/``end_offset`` are relative to the segment's first byte; the read covers whole
    chunks ``first_chunk..last_chunk`` and starts with the header when ``first_chunk`` is 0.
    """

    start: int
    end: int
    plain_size: int
    chunk: int
    first_chunk: int
    last_chunk: int
    offset: int
    end_offset: int

    @property
    def length(self) -> int:
        return self.end_offset - self.offset

    @property
    def with_header(self) -> bool:
        return self.first_chunk == 0


def cipher_range(plain_size: int, start: int = 0, end: int | None = None,
                 chunk: int = CHUNK_SIZE) -> CipherRange:
    """Map the plaintext range ``[start, end)`` (default: all) of a segment to its chunks.

    An empty range is valid only for an empty segment (``0, 0``): its one empty chunk is
    still read and authenticated."""
    end = plain_size if end is None else end
    if not (0 <= start < end <= plain_size or start == end == plain_size == 0):
        raise ValueError(f"invalid plaintext range [{start}, {end}) of {plain_size} bytes")
    n = chunk_count(plain_size, chunk)
    first = start // chunk
    last = max(first, (end - 1) // chunk) if end > 0 else 0
    slot = chunk + TAG_SIZE
    offset = 0 if first == 0 else HEADER_SIZE + first * slot
    last_len = _chunk_len(last, n, plain_size, chunk)
    end_offset = HEADER_SIZE + last * slot + last_len + TAG_SIZE
    return CipherRange(start, end, plain_size, chunk, first, last, offset, end_offset)


def _chunk_len(index: int, count: int, plain_size: int, chunk: int) -> int:
    return chunk if index < count - 1 else plain_size - (count - 1) * chunk


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_PREFIX_SIZE)


def segment_header(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_PREFIX_SIZE:
        raise ValueError("a nonce prefix is 8 bytes")
    return MAGIC + nonce


def parse_segment_header(header: bytes) -> bytes:
    """The nonce prefix in a segment's first :data:`HEADER_SIZE` bytes."""
    if len(header) != HEADER_SIZE or header[:len(MAGIC)] != MAGIC:
        raise DecryptionError("An encrypted object's segment header is damaged.")
    return bytes(header[len(MAGIC):])


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= MAX_CHUNKS:
        raise ValueError("too many chunks in one segment")
    return prefix + struct.pack(">I", index)


def _aad(segment: int, index: int, final: bool) -> bytes:
    return struct.pack(">IQ?", segment, index, final)


def _check_segment(segment: int) -> int:
    if not 0 <= segment < 2**32:
        raise ValueError(f"segment number out of range: {segment}")
    return segment


async def encrypt_stream(source: AsyncIterable[bytes], data_key: bytes, *,
                         chunk: int = CHUNK_SIZE, segment: int = 0,
                         nonce: bytes | None = None) -> AsyncIterator[bytes]:
    """The ciphertext segment of ``source`` (any piece sizes): the header, then each sealed
    chunk as soon as it is known not to be the last. Holds at most one chunk besides the
    piece being read. ``nonce``: the segment's prefix (a whole object's is recorded in its
    parameters, :func:`params_nonce`); by default a fresh one (each part upload)."""
    _check_chunk(chunk)
    _check_segment(segment)
    prefix = new_nonce() if nonce is None else nonce
    aead = AESGCM(data_key)
    yield segment_header(prefix)
    buf = bytearray()
    index = 0
    async for piece in source:
        view = memoryview(piece)
        pos = 0
        while pos < len(view):
            if len(buf) == chunk:  # more bytes follow: this chunk is not the last
                yield aead.encrypt(_nonce(prefix, index), bytes(buf), _aad(segment, index, False))
                buf.clear()
                index += 1
            if not buf and len(view) - pos > chunk:  # a whole chunk, and more after it
                yield aead.encrypt(_nonce(prefix, index), view[pos:pos + chunk],
                                   _aad(segment, index, False))
                pos += chunk
                index += 1
                continue
            take = min(chunk - len(buf), len(view) - pos)
            buf += view[pos:pos + take]
            pos += take
    yield aead.encrypt(_nonce(prefix, index), bytes(buf), _aad(segment, index, True))


class _Exact:
    """Exactly-sized reads from an async byte stream, copying each byte about once."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._it = aiter(source)
        self._buf = bytearray()
        self._pos = 0

    async def take(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            piece = await anext(self._it, None)
            if piece is None:
                raise DecryptionError("An encrypted object's ciphertext is truncated.")
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._buf += piece
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return out

    async def expect_end(self) -> None:
        if len(self._buf) > self._pos:
            raise DecryptionError("An encrypted object's ciphertext is longer than expected.")
        async for piece in self._it:
            if piece:
                raise DecryptionError(
                    "An encrypted object's ciphertext is longer than expected.")


async def _decrypt_segment(reader: _Exact, data_key: bytes, rng: CipherRange, *,
                           segment: int, nonce: bytes | None) -> AsyncIterator[bytes]:
    if rng.with_header:
        found = parse_segment_header(await reader.take(HEADER_SIZE))
        if nonce is not None and not hmac.compare_digest(found, nonce):
            raise DecryptionError("An encrypted object's segment header is damaged.")
        nonce = found
    elif nonce is None:
        raise ValueError("a read that skips the segment header needs its nonce prefix")
    aead = AESGCM(data_key)
    count = chunk_count(rng.plain_size, rng.chunk)
    for index in range(rng.first_chunk, rng.last_chunk + 1):
        size = _chunk_len(index, count, rng.plain_size, rng.chunk)
        sealed = await reader.take(size + TAG_SIZE)
        try:
            plain = aead.decrypt(_nonce(nonce, index), sealed,
                                 _aad(segment, index, index == count - 1))
        except InvalidTag:
            raise DecryptionError() from None
        base = index * rng.chunk
        lo, hi = max(rng.start - base, 0), min(rng.end - base, size)
        if lo or hi < size:
            plain = plain[lo:hi]
        if plain:
            yield plain


async def decrypt_stream(source: AsyncIterable[bytes], data_key: bytes, *, plain_size: int,
                         start: int = 0, end: int | None = None, chunk: int = CHUNK_SIZE,
                         segment: int = 0, nonce: bytes | None = None) -> AsyncIterator[bytes]:
    """The plaintext ``[start, end)`` of one segment, from ``source`` yielding exactly the
    ciphertext ``cipher_range(plain_size, start, end, chunk)`` names (from ``offset`` to
    ``end_offset``). ``nonce`` is needed when that read skips the header (``first_chunk``
    > 0); when it does not, a given ``nonce`` must match the header's. Raises
    :class:`DecryptionError` on any damage, including a short or long source."""
    rng = cipher_range(plain_size, start, end, chunk)
    reader = _Exact(source)
    async for piece in _decrypt_segment(reader, data_key, rng, segment=segment, nonce=nonce):
        yield piece
    await reader.expect_end()


# -- reading whole objects (one segment, or one per part) ------------------------------------

#: Opens the stored blob's bytes ``[start, end)``: e.g. ``backend.get(key, byte_range=...)``.
#: Whatever it returns is closed with ``aclose()`` when it has one.
ReadBlob = Callable[[int, int], Awaitable[AsyncIterable[bytes]]]


@dataclass(frozen=True, slots=True)
class SegmentRead:
    segment: int
    base: int  # the segment's offset in the blob
    rng: CipherRange


def plan_read(plain_size: int, start: int = 0, end: int | None = None, *,
              chunk: int = CHUNK_SIZE,
              parts: Sequence[tuple[int, int]] | None = None) -> list[SegmentRead]:
    """The segments (and chunks of each) holding the object's plaintext ``[start, end)``.
    ``parts``: ``(part_number, plain_size)`` of a multipart object's parts, in order."""
    end = plain_size if end is None else end
    if parts is None:
        return [SegmentRead(0, 0, cipher_range(plain_size, start, end, chunk))]
    if sum(size for _, size in parts) != plain_size:
        raise ValueError("the parts' sizes do not add up to the object's size")
    if not (0 <= start < end <= plain_size or start == end == plain_size == 0):
        raise ValueError(f"invalid plaintext range [{start}, {end}) of {plain_size} bytes")
    if not parts:
        raise ValueError("a multipart object has at least one part")
    layout = []  # (part number, size, plaintext offset, ciphertext offset)
    plain_base = cipher_base = 0
    for number, size in parts:
        layout.append((_check_segment(number), size, plain_base, cipher_base))
        plain_base += size
        cipher_base += ciphertext_size(size, chunk)
    if start == end:  # an empty object (of empty parts): authenticate them all
        return [SegmentRead(n, cb, cipher_range(0, 0, 0, chunk)) for n, _, _, cb in layout]
    touched = [i for i, (_, size, pb, _) in enumerate(layout)
               if max(start, pb) < min(end, pb + size)]
    plan: list[SegmentRead] = []
    # Every segment between the first and the last touched is inside the one read, empty
    # ones included, so each is decrypted (and authenticated) in turn.
    for number, size, pb, cb in layout[touched[0]:touched[-1] + 1]:
        lo, hi = min(max(start - pb, 0), size), max(min(end - pb, size), 0)
        plan.append(SegmentRead(number, cb, cipher_range(size, lo, hi, chunk)
                                 if lo < hi else cipher_range(0, 0, 0, chunk)))
    return plan


class DecryptedBody:
    """A decrypting reader of a stored object's plaintext ``[start, end)``.

    Made by :func:`open_decrypted`, which has already opened the backend read(s), so a
    missing blob raises before a response starts. Iterate once; ``aclose()`` releases the
    backend reader (also after a partial iteration)."""

    def __init__(self, source: AsyncIterable[bytes], data_key: bytes,
                 plan: list[SegmentRead], first_nonce: bytes | None,
                 content_length: int) -> None:
        self._source = source
        self._key = data_key
        self._plan = plan
        self._first_nonce = first_nonce
        self.content_length = content_length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = _Exact(self._source)
        for i, read in enumerate(self._plan):
            nonce = self._first_nonce if i == 0 else None
            async for piece in _decrypt_segment(reader, self._key, read.rng,
                                                segment=read.segment, nonce=nonce):
                yield piece
        await reader.expect_end()

    async def aclose(self) -> None:
        await _aclose(self._source)


async def _aclose(source: object) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


async def _read_all(read: ReadBlob, start: int, end: int) -> bytes:
    source = await read(start, end)
    try:
        return await _Exact(source).take(end - start)
    finally:
        await _aclose(source)


async def open_decrypted(read: ReadBlob, data_key: bytes, params: Mapping[str, Any], *,
                         plain_size: int, start: int = 0, end: int | None = None,
                         parts: Sequence[tuple[int, int]] | None = None) -> DecryptedBody:
    """Open the plaintext ``[start, end)`` (default: all) of a stored encrypted object.

    One backend read covers every chunk needed (even across parts); a second, of 12 bytes,
    fetches the first segment's header when the range starts past it and the parameters
    do not record its nonce (ranged reads into a multipart object's parts). ``parts``: as in
    :func:`plan_read`, for objects completed from a multipart upload."""
    chunk = params_chunk(params)
    plan = plan_read(plain_size, start, end, chunk=chunk, parts=parts)
    first = plan[0]
    nonce = params_nonce(params) if parts is None else None
    if not first.rng.with_header and nonce is None:
        nonce = parse_segment_header(await _read_all(read, first.base,
                                                     first.base + HEADER_SIZE))
    last = plan[-1]
    source = await read(first.base + first.rng.offset, last.base + last.rng.end_offset)
    length = sum(r.rng.end - r.rng.start for r in plan)
    return DecryptedBody(source, data_key, plan, nonce, length)


# -- master keys ---------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A master key's id: derived from the key, so no two keys share one by mistake."""
    return "mk-" + hmac.new(key, b"gateway master key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class MasterKey:
    kid: str
    key: bytes = field(repr=False)

    @classmethod
    def of(cls, key: bytes) -> MasterKey:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a master key is {KEY_SIZE} bytes, not {len(key)}")
        return cls(key_id(key), bytes(key))

    @classmethod
    def generate(cls) -> MasterKey:
        return cls.of(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def from_base64(cls, text: str, *, source: str = ENV_NAME) -> MasterKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{source}: a master key is base64 of 32 bytes "
                             "(e.g. `openssl rand -base64 32`)") from None
        if len(raw) != KEY_SIZE:
            raise ValueError(f"{source}: a master key is base64 of 32 bytes, not {len(raw)}")
        return cls.of(raw)

    def line(self) -> str:
        return f"{self.kid} {base64.b64encode(self.key).decode()}"


def parse_env_keys(setting: str) -> list[MasterKey]:
    """``GATEWAY_MASTER_KEY``: base64 keys separated by commas, the encrypting one first."""
    return [MasterKey.from_base64(part) for part in setting.split(",") if part.strip()]


def key_file_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def read_key_file(path: Path) -> list[MasterKey]:
    """The keys of a key file, oldest first; [] when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); setting 0600", path, mode)
        path.chmod(0o600)
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kid, _, encoded = line.partition(" ")
        key = MasterKey.from_base64(encoded, source=f"{path}:{number}")
        if key.kid != kid.strip():
            raise ValueError(f"{path}:{number}: the id {kid!r} is not the key's "
                             f"({key.kid}); the file is damaged")
        keys.append(key)
    return keys


_FILE_HEADER = ("# Gateway master keys, oldest first; the last one encrypts new objects.\n"
                "# Every key that still wraps a data key must stay: see `gateway encryption "
                "status`.\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_key_file(path: Path, keys: Sequence[MasterKey]) -> None:
    """Written whole under another name, fsynced, then renamed into place."""
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (_FILE_HEADER + "".join(k.line() + "\n" for k in keys)).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def add_master_key(data_dir: Path, key: MasterKey | None = None) -> MasterKey:
    """Append a (new) key to the key file, which then encrypts; the others still decrypt."""
    path = key_file_path(data_dir)
    new = key or MasterKey.generate()
    with _locked(path):
        keys = read_key_file(path)
        if any(k.kid == new.kid for k in keys):
            keys = [k for k in keys if k.kid != new.kid]
        _write_key_file(path, [*keys, new])
    return new


class Keyring:
    """Master keys by id: :attr:`current` wraps new data keys, any of them unwraps.

    Built by :meth:`load`, it follows the key file: an unknown id re-reads it (another
    process rotated), and :attr:`current` notices a rotation within
    :attr:`reload_seconds`. Without ``GATEWAY_MASTER_KEY`` the file is created on the first
    :attr:`current`, not before: a gateway that never encrypts leaves no key file.
    """

    reload_seconds = 5.0

    def __init__(self, keys: Sequence[MasterKey] = (), *, env_keys: Sequence[MasterKey] = (),
                 path: Path | None = None) -> None:
        self._env = list(env_keys)
        self._file = list(keys)
        self.path = path
        self._stamp: tuple[int, int] | None = self._stat()
        self._checked = time.monotonic()

    @classmethod
    def load(cls, setting: str, data_dir: Path) -> Keyring:
        """From ``GATEWAY_MASTER_KEY`` (``setting``) and the data dir's key file."""
        path = key_file_path(data_dir)
        return cls(read_key_file(path), env_keys=parse_env_keys(setting), path=path)

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def reload(self) -> None:
        if self.path is not None:
            self._stamp = self._stat()
            self._file = read_key_file(self.path)
            self._checked = time.monotonic()

    def _maybe_reload(self) -> None:
        if self.path is None or time.monotonic() - self._checked < self.reload_seconds:
            return
        self._checked = time.monotonic()
        if self._stat() != self._stamp:
            self.reload()

    @property
    def uses_env(self) -> bool:
        return bool(self._env)

    def from_env(self, kid: str) -> bool:
        return any(key.kid == kid for key in self._env)

    @property
    def keys(self) -> list[MasterKey]:
        """Every key, the encrypting one first."""
        seen: dict[str, MasterKey] = {}
        for key in [*self._env, *reversed(self._file)]:
            seen.setdefault(key.kid, key)
        return list(seen.values())

    @property
    def current(self) -> MasterKey:
        if self._env:
            return self._env[0]
        self._maybe_reload()
        if not self._file:
            if self.path is None:
                raise MissingMasterKey("No master key is configured.")
            self._file = [_create_key_file(self.path)]
            self._stamp = self._stat()
        return self._file[-1]

    def get(self, kid: str) -> MasterKey:
        for key in [*self._env, *self._file]:
            if key.kid == kid:
                return key
        if self.path is not None:
            self.reload()
            for key in self._file:
                if key.kid == kid:
                    return key
        raise MissingMasterKey(f"The master key {kid} is not configured "
                               "(GATEWAY_MASTER_KEY or <data dir>/master.keys).")


def _create_key_file(path: Path) -> MasterKey:
    with _locked(path):
        keys = read_key_file(path)  # another process may have made it meanwhile
        if keys:
            return keys[-1]
        key = MasterKey.generate()
        _write_key_file(path, [key])
        log.info("created the master key file %s (back it up: objects encrypted at rest "
                 "cannot be read without it)", path)
        return key


# -- customer keys (SSE-C) and request headers -----------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """A validated SSE-C key; ``md5`` is the base64 MD5 S3 echoes back."""

    key: bytes = field(repr=False)
    md5: str

    @classmethod
    def of(cls, key: bytes) -> CustomerKey:
        return cls(key, base64.b64encode(hashlib.md5(key).digest()).decode())

    def headers(self, *, copy_source: bool = False) -> dict[str, str]:
        """The request headers carrying this key (for clients and tests)."""
        name = copy_source_header if copy_source else str
        return {name(H_ALGORITHM): ALGORITHM,
                name(H_KEY): base64.b64encode(self.key).decode(),
                name(H_KEY_MD5_OUT): self.md5}


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()
            if "server-side-encryption" in name.lower()}


def _invalid(message: str, value: str | None = None) -> errors.GatewayError:
    return errors.InvalidArgument(message, name=H_SSE, value=value)


def customer_key_from_headers(headers: Mapping[str, str], *,
                              copy_source: bool = False) -> CustomerKey | None:
    """The SSE-C key a request presents (``x-amz-server-side-encryption-customer-*``, or the
    ``x-amz-copy-source-…`` ones), validated as S3 does; None when it presents none."""
    h = _lower(headers)
    name = copy_source_header if copy_source else str
    algorithm = h.get(name(H_ALGORITHM))
    encoded = h.get(name(H_KEY))
    md5 = h.get(name(H_KEY_MD5))
    if algorithm is None and encoded is None and md5 is None:
        return None
    if not algorithm:
        raise _invalid(MSG_NEED_ALGORITHM)
    if not encoded:
        raise _invalid(MSG_NEED_KEY)
    if algorithm != ALGORITHM:
        raise errors.InvalidEncryptionAlgorithmError(
            MSG_BAD_ALGORITHM, fields={"ArgumentName": H_SSE, "ArgumentValue": algorithm})
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(MSG_BAD_KEY) from None
    if len(key) != KEY_SIZE:
        raise _invalid(MSG_BAD_KEY)
    if not md5:
        raise _invalid(MSG_NEED_KEY_MD5)
    customer = CustomerKey.of(key)
    if not hmac.compare_digest(customer.md5.encode(), md5.strip().encode()):
        raise _invalid(MSG_KEY_MD5_MISMATCH)
    return customer


@dataclass(frozen=True, slots=True)
class WriteEncryption:
    """What a write (PutObject, CreateMultipartUpload, CopyObject's target, POST) asked
    for: ``mode`` None (nothing: the bucket default applies), ``sse-s3`` or ``sse-c``."""

    mode: Mode | None = None
    customer: CustomerKey | None = None

    def resolve(self, bucket_default: str | None) -> Mode | None:
        """The mode to write with, given the bucket's default algorithm (``AES256`` or
        None, from GetBucketEncryption's ``SSEAlgorithm``)."""
        if self.mode is not None:
            return self.mode
        return SSE_S3 if bucket_default == ALGORITHM else None


def write_encryption_from_headers(headers: Mapping[str, str]) -> WriteEncryption:
    """Validate a write's encryption headers with S3's errors: ``x-amz-server-side-encryption``
    must be ``AES256`` (``aws:kms`` and ``aws:kms:dsse`` are NotImplemented), and the SSE-C
    headers as :func:`customer_key_from_headers`; both at once are refused."""
    h = _lower(headers)
    method = h.get(H_SSE)
    customer = customer_key_from_headers(headers)
    if method is not None and customer is not None:
        raise _invalid(MSG_SSE_C_INCOMPATIBLE, method)
    if H_KMS_KEY in h and method not in ("aws:kms", "aws:kms:dsse"):
        raise errors.InvalidArgument(MSG_KMS_KEY_WITHOUT_KMS, name=H_KMS_KEY, value=h[H_KMS_KEY])
    if customer is not None:
        return WriteEncryption(SSE_C, customer)
    if method is None:
        return WriteEncryption()
    if method == ALGORITHM:
        return WriteEncryption(SSE_S3)
    if method in ("aws:kms", "aws:kms:dsse"):
        raise errors.NotImplemented_("Server-side encryption with AWS KMS keys is not "
                                     "implemented; use AES256 or customer-provided keys.")
    raise _invalid(MSG_UNSUPPORTED_METHOD, method)


# -- parameters ----------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"An object's encryption parameters are damaged ({what}).") \
            from None


def _seal_key(wrapping_key: bytes, data_key: bytes, mode: Mode) -> str:
    nonce = secrets.token_bytes(_WRAP_NONCE)
    return _b64(nonce + AESGCM(wrapping_key).encrypt(nonce, data_key, _WRAP_AAD[mode]))


def _open_key(wrapping_key: bytes, wrapped: Any, mode: Mode) -> bytes:
    raw = _unb64(wrapped, "wrapped key")
    try:
        key = AESGCM(wrapping_key).decrypt(raw[:_WRAP_NONCE], raw[_WRAP_NONCE:],
                                           _WRAP_AAD[mode])
    except (InvalidTag, ValueError):
        raise InvalidTag() from None
    if len(key) != KEY_SIZE:
        raise InvalidTag()
    return key


def wrap_params(data_key: bytes, *, keyring: Keyring | None = None,
                customer: CustomerKey | None = None, chunk: int = CHUNK_SIZE,
                nonce: bytes | None = None) -> dict[str, Any]:
    """Parameters recording ``data_key``: wrapped under ``customer`` (SSE-C) or else the
    keyring's current master key (SSE-S3). ``nonce``: segment 0's prefix, for objects
    written whole (not for multipart uploads, whose parts draw their own)."""
    params: dict[str, Any] = {"v": FORMAT_VERSION, "alg": ALGORITHM}
    if customer is not None:
        params.update(mode=SSE_C, key_md5=customer.md5,
                      wrapped=_seal_key(customer.key, data_key, SSE_C))
    elif keyring is not None:
        master = keyring.current
        params.update(mode=SSE_S3, kid=master.kid,
                      wrapped=_seal_key(master.key, data_key, SSE_S3))
    else:
        raise ValueError("wrap_params needs a keyring or a customer key")
    params["chunk"] = _check_chunk(chunk)
    if nonce is not None:
        if len(nonce) != NONCE_PREFIX_SIZE:
            raise ValueError("a nonce prefix is 8 bytes")
        params["nonce"] = _b64(nonce)
    return params


def new_params(*, keyring: Keyring | None = None, customer: CustomerKey | None = None,
               chunk: int = CHUNK_SIZE, multipart: bool = False
               ) -> tuple[dict[str, Any], bytes]:
    """A fresh data key and its parameters, for one object (``multipart=False``: with its
    segment's nonce, pass ``params_nonce(params)`` to :func:`encrypt_stream`) or one
    multipart upload (each part: :func:`encrypt_stream` with ``segment=part_number``)."""
    data_key = secrets.token_bytes(KEY_SIZE)
    params = wrap_params(data_key, keyring=keyring, customer=customer, chunk=chunk,
                         nonce=None if multipart else new_nonce())
    return params, data_key


def params_mode(params: Mapping[str, Any] | None) -> Mode | None:
    """``sse-s3``, ``sse-c``, or None for an object stored in clear (NULL or JSON null)."""
    if not params:
        return None
    mode = params.get("mode")
    if mode not in (SSE_S3, SSE_C) or params.get("v") != FORMAT_VERSION:
        raise DecryptionError(f"Unknown encryption parameters (mode {mode!r}).")
    return mode  # type: ignore[no-any-return]


def params_chunk(params: Mapping[str, Any]) -> int:
    return _check_chunk(int(params.get("chunk", CHUNK_SIZE)))


def params_nonce(params: Mapping[str, Any]) -> bytes | None:
    """Segment 0's nonce prefix of an object written whole; None for multipart ones."""
    nonce = params.get("nonce")
    if nonce is None:
        return None
    raw = _unb64(nonce, "nonce")
    if len(raw) != NONCE_PREFIX_SIZE:
        raise DecryptionError("An object's encryption parameters are damaged (nonce).")
    return raw


Purpose = Literal["read", "part"]


def data_key_for(params: Mapping[str, Any] | None, *, keyring: Keyring | None,
                 customer: CustomerKey | None, purpose: Purpose = "read") -> bytes | None:
    """The data key of a stored object (or upload), checking the request's SSE-C key as S3
    does; None for an object stored in clear. ``purpose``: ``read`` (GET, HEAD, the source
    of a copy: S3's errors for objects), ``part`` (UploadPart, UploadPartCopy's target:
    S3's errors for multipart uploads).

    Errors: an SSE-C object without a key, InvalidRequest (400); with a wrong key,
    AccessDenied (403) — for parts, InvalidRequest; a key for an object that has none,
    InvalidRequest; an SSE-S3 object whose master key is gone, :class:`MissingMasterKey`."""
    mode = params_mode(params)
    if mode is None or params is None:
        if customer is not None:
            raise errors.InvalidRequest(MSG_NOT_APPLICABLE)
        return None
    if mode == SSE_S3:
        if customer is not None:
            raise errors.InvalidRequest(MSG_NOT_APPLICABLE)
        if keyring is None:
            raise MissingMasterKey()
        master = keyring.get(str(params.get("kid")))
        try:
            return _open_key(master.key, params.get("wrapped"), SSE_S3)
        except InvalidTag:
            raise DecryptionError("An object's wrapped data key does not open with its "
                                  f"master key {master.kid}.") from None
    if customer is None:
        raise errors.InvalidRequest(MSG_PART_KEY_REQUIRED if purpose == "part"
                                    else MSG_KEY_REQUIRED)
    wrong = (errors.InvalidRequest(MSG_PART_WRONG_KEY) if purpose == "part"
             else errors.AccessDenied(MSG_WRONG_KEY))
    if not hmac.compare_digest(str(params.get("key_md5", "")).encode(), customer.md5.encode()):
        raise wrong
    try:
        return _open_key(customer.key, params.get("wrapped"), SSE_C)
    except InvalidTag:
        raise wrong from None


def rewrap(params: dict[str, Any], keyring: Keyring) -> dict[str, Any]:
    """``params`` with the data key wrapped under the keyring's current master key: the same
    object when there is nothing to do (SSE-C, or already under the current key), so
    ``rewrap(p, k) is p`` tells. Blobs are untouched: the data key does not change."""
    if params_mode(params) != SSE_S3:
        return params
    current = keyring.current
    if params.get("kid") == current.kid:
        return params
    old = keyring.get(str(params.get("kid")))
    try:
        data_key = _open_key(old.key, params.get("wrapped"), SSE_S3)
    except InvalidTag:
        raise DecryptionError(f"A wrapped data key does not open with master key "
                              f"{old.kid}.") from None
    return {**params, "kid": current.kid, "wrapped": _seal_key(current.key, data_key, SSE_S3)}


def response_headers(params: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers S3 answers an encrypted object's GET, HEAD, PUT, copy or upload with."""
    mode = params_mode(params)
    if mode == SSE_S3:
        return {H_SSE: ALGORITHM}
    if mode == SSE_C and params is not None:
        return {H_ALGORITHM: ALGORITHM, H_KEY_MD5_OUT: str(params.get("key_md5", ""))}
    return {}
