"""Encryption at rest where the service meets it: a bucket's default encryption, what a
write encrypts with, and reading the plaintext of an encrypted blob back.

The format, the keys and S3's header rules are :mod:`gateway.service.encryption`'s. Here:

- **Which writes encrypt.** A write's own headers decide (``x-amz-server-side-encryption:
  AES256``: SSE-S3; the ``-customer-*`` ones: SSE-C); without them the bucket's default
  (PutBucketEncryption) does; without one the object is stored in clear.
- **Sizes.** Whatever the gateway records and reports — ``objects.size``, part sizes,
  quotas, listings, ETags, checksums — is about the plaintext. Only the backend holds (and
  sees) ciphertext, whose size :func:`stored_size` derives from the plaintext's.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.metadata import repo
from gateway.service import encryption as enc
from gateway.service.context import Context
from gateway.service.encryption import CustomerKey, Keyring, WriteEncryption
from gateway.types import BucketRecord, ObjectRecord, StoredObject
from storage_backends import Backend, BlobNotFound, BlobReader, ByteRange

KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
MSG_KMS_NOT_CONFIGURED = "Server side encryption specified but KMS is not configured"


# -- the bucket default ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketEncryption:
    """A bucket's default encryption (its one ``ServerSideEncryptionConfiguration`` rule)."""

    algorithm: str = enc.ALGORITHM
    #: Stored and echoed back; S3 Bucket Keys are an SSE-KMS matter, without effect here.
    bucket_key_enabled: bool = False

    @classmethod
    def validated(cls, algorithm: str, *, kms_key_id: str | None = None,
                  bucket_key_enabled: bool = False) -> BucketEncryption:
        """S3's checks of a PutBucketEncryption rule. Without a KMS, ``aws:kms`` (and
        ``aws:kms:dsse``) are NotImplemented, as MinIO answers, and as PutObject answers the
        same header here: the request is well-formed, the gateway lacks the feature."""
        if algorithm in KMS_ALGORITHMS:
            raise errors.NotImplemented_(MSG_KMS_NOT_CONFIGURED)
        if algorithm != enc.ALGORITHM:
            raise errors.MalformedXML()
        if kms_key_id is not None:
            raise errors.InvalidArgument(
                "a KMSMasterKeyID is not applicable if the default sse algorithm is not "
                "aws:kms or aws:kms:dsse", name="ApplyServerSideEncryptionByDefault")
        return cls(algorithm, bucket_key_enabled)

    def as_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "bucket_key_enabled": self.bucket_key_enabled}

    @classmethod
    def of(cls, bucket: BucketRecord) -> BucketEncryption | None:
        stored = bucket.encryption
        if not stored:
            return None
        return cls(str(stored.get("algorithm", enc.ALGORITHM)),
                   bool(stored.get("bucket_key_enabled", False)))


def bucket_default(bucket: BucketRecord) -> str | None:
    """The algorithm new objects of ``bucket`` get when a write names none."""
    config = BucketEncryption.of(bucket)
    return config.algorithm if config is not None else None


# -- writes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sealing:
    """The encryption of one write: its parameters (stored with the row) and data key."""

    params: dict[str, Any]
    data_key: bytes = field(repr=False)

    @property
    def chunk(self) -> int:
        return enc.params_chunk(self.params)

    def seal(self, source: AsyncIterable[bytes], *, segment: int = 0) -> AsyncIterator[bytes]:
        """The ciphertext of ``source`` as one segment (a whole object, or part
        ``segment`` of a multipart upload, whose parameters record no nonce)."""
        return enc.encrypt_stream(source, self.data_key, chunk=self.chunk, segment=segment,
                                  nonce=enc.params_nonce(self.params))

    def stored_size(self, plain_size: int | None) -> int | None:
        return None if plain_size is None else enc.ciphertext_size(plain_size, self.chunk)


def new_sealing(keyring: Keyring, write: WriteEncryption, bucket: BucketRecord, *,
                multipart: bool = False) -> Sealing | None:
    """A fresh data key for a write into ``bucket`` (None: stored in clear)."""
    mode = write.resolve(bucket_default(bucket))
    if mode is None:
        return None
    params, data_key = enc.new_params(keyring=keyring if mode == enc.SSE_S3 else None,
                                      customer=write.customer if mode == enc.SSE_C else None,
                                      multipart=multipart)
    return Sealing(params, data_key)


def reuse_sealing(source: ObjectRecord, data_key: bytes | None, write: WriteEncryption,
                  bucket: BucketRecord, keyring: Keyring) -> Sealing | None:
    """For a copy: the source's data key, re-wrapped for the target, when the target is to
    be encrypted the same way (SSE-S3 to SSE-S3, or SSE-C under the same customer key) and
    the source is one segment — then its blob is copied as it is. None: the bytes must go
    through the gateway (decrypted, then encrypted anew or not)."""
    params = source.encryption
    if params is None or data_key is None or source.parts_count is not None:
        return None
    mode = write.resolve(bucket_default(bucket))
    if mode != enc.params_mode(params):
        return None
    if mode == enc.SSE_C and (write.customer is None or not hmac.compare_digest(
            write.customer.md5.encode(), str(params.get("key_md5", "")).encode())):
        return None
    wrapped = enc.wrap_params(data_key, keyring=keyring if mode == enc.SSE_S3 else None,
                              customer=write.customer if mode == enc.SSE_C else None,
                              chunk=enc.params_chunk(params), nonce=enc.params_nonce(params))
    return Sealing(wrapped, data_key)


def part_size(params: dict[str, Any] | None, plain_size: int) -> int:
    """What the backend holds for a part of ``plain_size`` bytes of an upload."""
    if params is None:
        return plain_size
    return enc.ciphertext_size(plain_size, enc.params_chunk(params))


def data_key(params: dict[str, Any] | None, keyring: Keyring,
             customer: CustomerKey | None, *, purpose: enc.Purpose = "read") -> bytes | None:
    """:func:`encryption.data_key_for`, loading nothing for an object stored in clear."""
    if params is None:
        if customer is not None:
            raise errors.InvalidRequest(enc.MSG_NOT_APPLICABLE)
        return None
    return enc.data_key_for(params, keyring=keyring, customer=customer, purpose=purpose)


# -- reads -----------------------------------------------------------------------------------


class PlainReader:
    """A :class:`storage_backends.BlobReader` of an encrypted blob's plaintext ``range``
    (None: all of it): what a reader of a blob in clear is, for the layers above."""

    def __init__(self, body: enc.DecryptedBody, size: int, byte_range: ByteRange | None
                 ) -> None:
        self._body = body
        self._size = size
        self._range = byte_range

    @property
    def size(self) -> int:
        return self._size

    @property
    def range(self) -> ByteRange | None:
        return self._range

    @property
    def content_length(self) -> int:
        return self._body.content_length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._body:
            yield piece

    async def aclose(self) -> None:
        await self._body.aclose()


async def open_plain(backend: Backend, blob_key: str, params: dict[str, Any], key: bytes, *,
                     plain_size: int, byte_range: ByteRange | None = None,
                     parts: Sequence[tuple[int, int]] | None = None) -> PlainReader:
    """Open the plaintext ``byte_range`` of an encrypted blob: one backend read of the
    chunks that hold it (and, for a range inside a multipart object, one of 12 bytes).
    ``parts``: ``(part number, plain size)`` of a blob completed from a multipart upload.
    Raises ``BlobNotFound`` as ``backend.get`` does, before any byte is read."""

    async def read(start: int, end: int) -> AsyncIterable[bytes]:
        return await backend.get(blob_key, byte_range=ByteRange(start, end))

    start, end = (byte_range.start, byte_range.end) if byte_range is not None else (0, None)
    body = await enc.open_decrypted(read, key, params, plain_size=plain_size, start=start,
                                    end=end, parts=parts)
    return PlainReader(body, plain_size, byte_range)


async def segments(ctx: Context, obj: ObjectRecord) -> list[tuple[int, int]] | None:
    """An encrypted multipart object's parts as ``(part number, plain size)``: each part
    is its own segment of ciphertext. None for an object written whole."""
    if obj.parts_count is None:
        return None
    layout = await ctx.db.read(lambda conn: repo.object_layout(conn, obj.id))
    if len(layout) != obj.parts_count or sum(p.size for p in layout) != obj.size:
        # Replaced in place since the row was read: its blob is going too.
        raise BlobNotFound(obj.blob_key or "")
    return [(p.part_number, p.size) for p in layout]


async def open_object(ctx: Context, obj: ObjectRecord, byte_range: ByteRange | None,
                      data_key: bytes | None) -> BlobReader:
    """A reader of an object's plaintext ``byte_range`` (None: all of it), decrypted with
    ``data_key`` when it is encrypted. Raises ``BlobNotFound`` as ``backend.get`` does."""
    assert obj.blob_key is not None
    if obj.encryption is None:
        return await ctx.backend.get(obj.blob_key, byte_range=byte_range)
    if data_key is None:
        raise ValueError("an encrypted object is read with its data key")
    return await open_plain(ctx.backend, obj.blob_key, obj.encryption, data_key,
                            plain_size=obj.size, byte_range=byte_range,
                            parts=await segments(ctx, obj))


def stored_size(obj: StoredObject) -> int | None:
    """The size of an object's blob: its plaintext size, or for an encrypted one the
    ciphertext's (None: a multipart object whose layout is not known)."""
    if obj.encryption is None:
        return obj.size
    chunk = enc.params_chunk(obj.encryption)
    if enc.params_nonce(obj.encryption) is not None:  # written whole: one segment
        return enc.ciphertext_size(obj.size, chunk)
    if not obj.parts:
        return None
    return enc.object_ciphertext_size([p.size for p in obj.parts], chunk)
