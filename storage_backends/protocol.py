"""The narrow seam between the gateway and whatever holds the bytes.

The gateway's database is the index: listings, ownership, ETags and metadata live there.
A backend is a blob store addressed by *blob keys* that the service chooses
(see :func:`storage_backends._keys.validate_blob_key`), never by user-supplied S3 keys.
That is what makes every valid S3 key safe on every backend.

Rules every implementation follows:

* ``put`` is atomic: a reader sees the old blob or the new one, never a torn one. If the
  body iterator raises, nothing is kept and the exception propagates unchanged.
* ``get`` raises (``BlobNotFound``) before any byte is produced; the reader knows its
  size and the range it returns before iteration starts.
* Ranges are already resolved by the caller to ``[start, end)`` within the blob.
* Bodies are streamed; no implementation holds a whole body in memory (``memory`` aside).
* A body may offer ``md5_hex`` (the MD5 of what it yielded, read once it is exhausted; the
  gateway's verified bodies do): a backend whose store reports an MD5 (an S3 ETag) checks the
  two agree, at no cost of hashing twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

#: Bodies are written and read in chunks of this size (or smaller, for the tail).
CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A resolved, non-empty half-open byte range ``[start, end)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid byte range [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One stored attempt of a part.

    ``token`` names exactly the bytes this ``put_part`` or ``copy_part`` call stored; it is
    opaque to callers (the local backend makes a hex string, an S3 upstream would use
    the upstream part's ETag). Uploading the same part number again stores another attempt
    with another token; the earlier attempt stays until it is deleted (``delete_part``) or
    the upload completes or is aborted.
    """

    part_number: int
    size: int
    token: str
    #: The MD5 (hex) of the part's bytes, where the store reports it for a copied part
    #: (see ``Capabilities.part_copy_md5``).
    md5: str | None = None


@dataclass(frozen=True, slots=True)
class PartRef:
    """A part chosen for completion.

    With ``token``, exactly that attempt of the part (see :class:`PartInfo`); without it,
    the attempt of ``part_number`` stored last. ``size`` lets a backend check the attempt
    against what the caller recorded.
    """

    part_number: int
    size: int | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    server_side_copy: bool = False
    native_multipart: bool = False
    #: Each upload of a part number is kept as its own attempt until dropped (see
    #: :class:`PartInfo`); without it, as in S3, the last upload of a number replaces the
    #: earlier ones and ``delete_part`` has nothing to drop.
    part_attempts: bool = True
    #: ``copy_part`` reports the MD5 of what it copied (``PartInfo.md5``), so a part can be
    #: copied server-side without reading its bytes through the gateway.
    part_copy_md5: bool = False


class BlobReader(Protocol):
    """An open blob. ``size`` is the whole blob's size; ``range`` what iteration yields."""

    @property
    def size(self) -> int: ...

    @property
    def range(self) -> ByteRange | None: ...

    @property
    def content_length(self) -> int: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def blob_name(self, bucket: str, key: str) -> str | None:
        """Where a backend that lays objects out by name (1:1) puts the blob of ``key`` in
        ``bucket``; None: the service names the blob. Either way, the key a write returns
        (``BlobInfo.key`` of put, copy, complete_multipart) is the one to read it back by."""

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo: ...

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> BlobReader: ...

    async def head(self, key: str) -> BlobInfo: ...

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing blob is not an error."""

    async def copy(self, src: str, dst: str) -> BlobInfo: ...

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob under ``prefix``; for garbage collection and fsck only."""

    # -- multipart, stateless: the upload id is all the state a caller keeps ---------------
    # Every put_part/copy_part stores a new attempt of its part and returns the attempt's
    # token; complete_multipart joins the attempts its PartRefs name (listed by ascending
    # part number, as S3 requires; the local stores also join another order as given),
    # without copying bytes where the store can avoid it, and drops everything else of the
    # upload. Once an upload is completed or aborted, put_part and copy_part raise
    # UploadNotFound and keep nothing, even when they race the completion.
    async def create_multipart(self, key: str) -> str: ...

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int | None = None,
    ) -> PartInfo: ...

    async def copy_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        src: str,
        byte_range: ByteRange | None = None,
    ) -> PartInfo: ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        """Raises ``InvalidPart`` for an attempt that does not exist (any more) or whose size
        differs from ``PartRef.size``; then nothing of the upload is consumed."""

    async def delete_part(self, key: str, upload_id: str, part_number: int, token: str) -> None:
        """Drop one attempt of a part. Idempotent: an unknown upload or token is not an error."""

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Idempotent: aborting an unknown upload is not an error."""

    async def aclose(self) -> None: ...
