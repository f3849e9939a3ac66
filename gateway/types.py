"""Typed values shared by the protocol layers and the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: an authenticated user, through one of their access keys."""

    user_id: int
    name: str
    role: str
    access_key: str | None = None
    #: The groups the user belongs to (their grants apply too).
    group_ids: tuple[int, ...] = ()
    #: Set when the access key is scoped to one bucket (a bot's package key): the request
    #: reaches that bucket alone, and never with administrator powers.
    bucket_scope: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.bucket_scope is None

    @property
    def is_anonymous(self) -> bool:
        return self.role == "anonymous"


@dataclass(frozen=True, slots=True)
class Owner:
    """How S3 answers name a user: a canonical id and a display name."""

    canonical_id: str
    display_name: str


#: The largest integer SQL stores (BIGINT; SQLite's INTEGER): bigger ones never reach SQL.
MAX_SQL_INT = 2**63 - 1

#: Whoever sends a request without credentials.
ANONYMOUS = Principal(user_id=0, name="anonymous", role="anonymous")


@dataclass(frozen=True, slots=True)
class BucketRecord:
    id: int
    name: str
    owner_id: int
    region: str
    created_at: datetime
    acl: str = "private"
    cors: list[dict[str, Any]] | None = None
    # Quota limits as stored: None follows the settings' default, negative is unlimited.
    quota_bytes: int | None = None
    quota_objects: int | None = None
    max_object_size: int | None = None
    used_bytes: int = 0
    used_objects: int = 0
    reserved_bytes: int = 0
    reserved_objects: int = 0
    #: None (never configured), ``Enabled`` or ``Suspended``.
    versioning: str | None = None
    tags: dict[str, str] | None = None
    lifecycle: list[dict[str, Any]] | None = None
    encryption: dict[str, Any] | None = None

    @property
    def versioned(self) -> bool:
        """New writes get version ids (and deletes leave delete markers)."""
        return self.versioning == "Enabled"


@dataclass(frozen=True, slots=True)
class ListedObject:
    """What a listing shows of an object: a page holds up to 1,000, so only these columns
    are read (no JSON to decode)."""

    key: str
    size: int
    etag: str  # hex, without quotes
    last_modified: datetime
    storage_class: str
    checksum_algorithm: str | None

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    id: int
    bucket_id: int
    key: str
    version_id: str
    size: int
    etag: str  # hex, without quotes
    last_modified: datetime
    blob_key: str | None
    content_type: str | None
    user_metadata: dict[str, str]
    headers: dict[str, str]
    checksum_algorithm: str | None
    checksum_value: str | None
    storage_class: str
    is_delete_marker: bool = False
    parts_count: int | None = None
    acl: str = "private"
    is_latest: bool = True
    tags: dict[str, str] | None = None
    encryption: dict[str, Any] | None = None

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A multipart upload in progress."""

    id: str
    bucket_id: int
    key: str
    blob_key: str
    backend_upload_id: str
    owner_id: int
    initiated_at: datetime
    state: str
    content_type: str | None
    user_metadata: dict[str, str]
    headers: dict[str, str]
    storage_class: str
    checksum_algorithm: str | None
    checksum_type: str | None
    acl: str = "private"
    #: Tags the completed object gets (``x-amz-tagging`` of CreateMultipartUpload).
    tags: dict[str, str] | None = None
    #: Encryption parameters of the parts and the completed object (``service.encryption``).
    encryption: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PartRecord:
    part_number: int
    size: int
    etag: str  # hex MD5, without quotes
    checksum_value: str | None
    token: str
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class ObjectPart:
    """One part of a completed multipart object: where it lies in the object."""

    part_number: int
    offset: int
    size: int
    etag: str
    checksum_value: str | None


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object row that holds a blob, as maintenance (migrate, fsck) walks them."""

    id: int
    bucket: str
    key: str
    version_id: str
    size: int
    etag: str  # hex MD5, or md5(part MD5s)-N for a multipart object; without quotes
    blob_key: str
    #: The part layout of a completed multipart object (empty: none recorded).
    parts: tuple[ObjectPart, ...] = ()
    #: Encryption parameters: the blob holds ciphertext (``service.encryption``).
    encryption: dict[str, Any] | None = None


class RangeKind(Enum):
    BOUNDED = "bounded"  # bytes=a-b
    OPEN = "open"  # bytes=a-
    SUFFIX = "suffix"  # bytes=-n


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """A Range header as sent; the service resolves it against the object's size."""

    kind: RangeKind
    first: int
    last: int | None = None
    raw: str = ""


@dataclass(frozen=True, slots=True)
class ReadConditions:
    """RFC 7232 preconditions of a GET/HEAD (or of a copy source)."""

    if_match: tuple[str, ...] | None = None  # ETags without quotes; ("*",) for any
    if_none_match: tuple[str, ...] | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    @property
    def empty(self) -> bool:
        return (self.if_match is None and self.if_none_match is None
                and self.if_modified_since is None and self.if_unmodified_since is None)


@dataclass(frozen=True, slots=True)
class WriteConditions:
    """Conditional writes: ``If-None-Match: *`` (create only), ``If-Match: <etag>`` (swap)."""

    if_match: str | None = None
    if_none_match_any: bool = False

    @property
    def empty(self) -> bool:
        return self.if_match is None and not self.if_none_match_any


#: The stored system headers, by their canonical HTTP names.
STORED_HEADERS: tuple[str, ...] = (
    "Content-Encoding",
    "Content-Disposition",
    "Content-Language",
    "Cache-Control",
    "Expires",
)


@dataclass(frozen=True, slots=True)
class ObjectAttributes:
    """What a writer says about an object besides its bytes."""

    content_type: str | None = None
    user_metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    acl: str = "private"
    #: Object tags (``x-amz-tagging``), or None for none.
    tags: dict[str, str] | None = None
