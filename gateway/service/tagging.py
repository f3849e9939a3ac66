"""Object and bucket tags: S3's rules for a tag set, the ``x-amz-tagging`` header, and the
Put/Get/Delete{Object,Bucket}Tagging operations.

A tag set is validated as S3 does, in S3's order: the count first (``BadRequest``), then
each tag in turn (an invalid key, an invalid value, a repeated key: ``InvalidTag``), then
the reserved ``aws:`` prefix. Lengths count UTF-16 code units, as S3 does (a character
outside the Basic Multilingual Plane counts twice). Tags live in the metadata database
(``objects.tags``, ``buckets.tags``, ``multipart_uploads.tags``): NULL for none.

Who may do what: reading an object's tags takes read access to its bucket (never anonymous:
a public ACL opens an object's bytes, not its tags); changing them takes write access. A
bucket's own tags are its configuration, like its CORS rules: owner, admins, ``full``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal
from urllib.parse import unquote_plus

from gateway import errors
from gateway.auth.policy import require_bucket_access, require_full
from gateway.metadata import repo
from gateway.metadata.models import NULL_VERSION
from gateway.service.context import Context
from gateway.service.groups import caller_grants
from gateway.service.objects import validate_key
from gateway.types import BucketRecord, ObjectRecord, Principal

MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
#: Besides letters, numbers and spaces (Unicode separators).
_SPECIAL = frozenset("+-=._:/@")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEADER_MESSAGE = ("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL "
                   "query parameters without tag name duplicates.")
_WRITE_ATTEMPTS = 5

Tags = dict[str, str]
Resource = Literal["object", "bucket"]


def _utf16_length(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _valid_text(text: str, low: int, high: int) -> bool:
    if not low <= _utf16_length(text) <= high:
        return False
    return all(ch in _SPECIAL or unicodedata.category(ch)[0] in "LNZ" for ch in text)


def validate_tags(pairs: Sequence[tuple[str, str]], resource: Resource = "object") -> Tags:
    """The tag set as a dict, or the S3 error the first broken rule gives."""
    if resource == "object" and len(pairs) > MAX_OBJECT_TAGS:
        raise errors.BadRequest(f"Object tags cannot be greater than {MAX_OBJECT_TAGS}")
    if resource == "bucket" and len(pairs) > MAX_BUCKET_TAGS:
        raise errors.BadRequest(f"Bucket tag count cannot be greater than {MAX_BUCKET_TAGS}")
    tags: Tags = {}
    for key, value in pairs:
        if not _valid_text(key, 1, MAX_KEY_LENGTH):
            raise errors.InvalidTag("The TagKey you have provided is invalid",
                                    fields={"TagKey": key})
        if not _valid_text(value, 0, MAX_VALUE_LENGTH):
            raise errors.InvalidTag("The TagValue you have provided is invalid",
                                    fields={"TagKey": key})
        if key in tags:
            raise errors.InvalidTag("Cannot provide multiple Tags with the same key",
                                    fields={"TagKey": key})
        tags[key] = value
    for key in tags:
        if resource == "object" and key.startswith("aws:"):
            raise errors.InvalidTag("Your TagKey cannot be prefixed with aws:",
                                    fields={"TagKey": key})
        if resource == "bucket" and key[:4].lower() == "aws:":
            raise errors.InvalidTag("System tags cannot be added/updated by requester"
                                    if key.startswith("aws:") else
                                    'Invalid Tag. Tags cannot start with "aws:"(case '
                                    'insensitive) unless they are System Tags that start with '
                                    '"aws:"(case sensitive)', fields={"TagKey": key})
    return tags


def _unescape(text: str) -> str | None:
    if _BAD_ESCAPE.search(text):
        return None
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        return None


def parse_tagging_header(value: str | None) -> Tags | None:
    """``x-amz-tagging`` (``a=1&b=2``, URL query encoding) as a validated tag set; None when
    the header is absent or names no tag."""
    if value is None:
        return None
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in value.split("&"):
        if not part:
            continue
        raw_key, _sep, raw_value = part.partition("=")
        key, text = _unescape(raw_key), _unescape(raw_value)
        if key is None or text is None or not key or key in seen:
            raise errors.InvalidArgument(_HEADER_MESSAGE, name="x-amz-tagging", value=value)
        seen.add(key)
        pairs.append((key, text))
    return validate_tags(pairs, "object") or None


def tagging_directive(value: str | None) -> str:
    """``x-amz-tagging-directive`` of a CopyObject: ``COPY`` (the default) or ``REPLACE``."""
    directive = (value or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument("Unknown tagging directive.",
                                     name="x-amz-tagging-directive", value=value)
    return directive


@dataclass(frozen=True, slots=True)
class TaggedObject:
    """An object version's tags, and the version id its answers name (None: no header)."""

    tags: Tags
    version_id: str | None


def _version_header(obj: ObjectRecord, requested: str | None) -> str | None:
    """A real version is named in the answer; the ``null`` one only when asked for."""
    if obj.version_id != NULL_VERSION or requested is not None:
        return obj.version_id
    return None


class TaggingService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def _bucket(self, name: str) -> BucketRecord:
        bucket = await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, name))
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": name})
        return bucket

    async def _accessible(self, principal: Principal, name: str, *,
                          write: bool) -> BucketRecord:
        bucket = await self._bucket(name)
        if principal.is_anonymous:
            raise errors.AccessDenied()
        require_bucket_access(principal, bucket, write=write,
                              grants=await caller_grants(self.ctx, principal, bucket))
        return bucket

    async def _version(self, bucket: BucketRecord, key: str,
                       version_id: str | None) -> ObjectRecord:
        obj = await self.ctx.db.read(
            lambda conn: repo.object_version(conn, bucket.id, key, version_id))
        if obj is None:
            if version_id is not None:
                raise errors.NoSuchVersion(fields={"Key": key, "VersionId": version_id})
            raise errors.NoSuchKey(fields={"Key": key})
        if obj.is_delete_marker:
            # As S3, whether the marker was named or is the latest version.
            raise errors.MethodNotAllowed(fields={"ResourceType": "DeleteMarker"},
                                          headers={"x-amz-delete-marker": "true"})
        return obj

    # -- objects ---------------------------------------------------------------------------

    async def get_object_tags(self, principal: Principal, bucket_name: str, key: str,
                              version_id: str | None = None) -> TaggedObject:
        validate_key(key)
        bucket = await self._accessible(principal, bucket_name, write=False)
        obj = await self._version(bucket, key, version_id)
        return TaggedObject(dict(obj.tags or {}), _version_header(obj, version_id))

    async def put_object_tags(self, principal: Principal, bucket_name: str, key: str,
                              version_id: str | None,
                              pairs: Sequence[tuple[str, str]]) -> TaggedObject:
        """Replace the version's whole tag set (an empty one removes them all)."""
        validate_key(key)
        bucket = await self._accessible(principal, bucket_name, write=True)
        tags = validate_tags(pairs, "object")
        return await self._set_object_tags(bucket, key, version_id, tags or None)

    async def delete_object_tags(self, principal: Principal, bucket_name: str, key: str,
                                 version_id: str | None = None) -> TaggedObject:
        validate_key(key)
        bucket = await self._accessible(principal, bucket_name, write=True)
        return await self._set_object_tags(bucket, key, version_id, None)

    async def _set_object_tags(self, bucket: BucketRecord, key: str, version_id: str | None,
                               tags: Tags | None) -> TaggedObject:
        """Compare-and-set on the row read: its id, still a version (not a delete marker),
        and, when no version was named, still the latest. A row that changed meanwhile is
        read again."""
        for _attempt in range(_WRITE_ATTEMPTS):
            obj = await self._version(bucket, key, version_id)
            if await self.ctx.db.write(partial(repo.set_object_tags, object_id=obj.id,
                                               tags=tags, latest_only=version_id is None)):
                return TaggedObject(dict(tags or {}), _version_header(obj, version_id))
        raise errors.ConditionalRequestConflict()

    # -- buckets ---------------------------------------------------------------------------

    async def _owned(self, principal: Principal, name: str) -> BucketRecord:
        bucket = await self._bucket(name)
        require_full(principal, bucket, await caller_grants(self.ctx, principal, bucket))
        return bucket

    async def get_bucket_tags(self, principal: Principal, name: str) -> Tags:
        bucket = await self._owned(principal, name)
        if not bucket.tags:
            raise errors.NoSuchTagSet(fields={"BucketName": name})
        return dict(bucket.tags)

    async def put_bucket_tags(self, principal: Principal, name: str,
                              pairs: Sequence[tuple[str, str]]) -> Tags:
        bucket = await self._owned(principal, name)
        tags = validate_tags(pairs, "bucket")
        await self._set_bucket_tags(bucket, tags or None)
        return tags

    async def delete_bucket_tags(self, principal: Principal, name: str) -> None:
        bucket = await self._owned(principal, name)
        await self._set_bucket_tags(bucket, None)

    async def _set_bucket_tags(self, bucket: BucketRecord, tags: Tags | None) -> None:
        if not await self.ctx.db.write(
                lambda conn: repo.set_bucket_tags(conn, bucket.id, tags)):
            raise errors.NoSuchBucket(fields={"BucketName": bucket.name})
