"""Request headers parsed once into typed values (DESIGN §2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from gateway.auth.policy import validate_acl
from gateway.errors import (
    InvalidArgument,
    InvalidRequest,
    InvalidStorageClass,
    MetadataTooLarge,
    NotImplemented_,
)
from gateway.types import (
    STORED_HEADERS,
    ObjectAttributes,
    RangeKind,
    RangeSpec,
    ReadConditions,
    WriteConditions,
)

META_PREFIX = "x-amz-meta-"
MAX_METADATA_BYTES = 2048
STORAGE_CLASSES = frozenset({
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "EXPRESS_ONEZONE", "SNOW",
})

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(value: str | None) -> RangeSpec | None:
    """One byte range. Anything else (several ranges, other units, junk) is ignored, as
    RFC 7233 allows and S3 does: the whole object is returned."""
    if not value:
        return None
    m = _RANGE.match(value)
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first and last:
        a, b = int(first), int(last)
        if b < a:
            return None
        return RangeSpec(RangeKind.BOUNDED, a, b, value)
    if first:
        return RangeSpec(RangeKind.OPEN, int(first), None, value)
    if last:
        return RangeSpec(RangeKind.SUFFIX, int(last), None, value)
    return None


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date; an unparseable one is ignored (RFC 7232 §3.3)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def _etag_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    tags = []
    for part in value.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tag = tag.strip('"')
        if tag:
            tags.append(tag)
    return tuple(tags)


def read_conditions(headers: Mapping[str, str], prefix: str = "") -> ReadConditions:
    """``If-*`` headers, or ``x-amz-copy-source-if-*`` with ``prefix='x-amz-copy-source-'``."""
    return ReadConditions(
        if_match=_etag_list(headers.get(prefix + "if-match")),
        if_none_match=_etag_list(headers.get(prefix + "if-none-match")),
        if_modified_since=parse_http_date(headers.get(prefix + "if-modified-since")),
        if_unmodified_since=parse_http_date(headers.get(prefix + "if-unmodified-since")),
    )


def write_conditions(headers: Mapping[str, str]) -> WriteConditions:
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidArgument("If-None-Match on a write accepts only '*'",
                              name="If-None-Match", value=if_none_match)
    if_match = headers.get("if-match")
    tag = None
    if if_match is not None:
        tag = if_match.strip().strip('"')
        if not tag:
            raise InvalidArgument("If-Match needs an ETag", name="If-Match", value=if_match)
    return WriteConditions(if_match=tag, if_none_match_any=if_none_match is not None)


def object_attributes(headers: Mapping[str, str]) -> ObjectAttributes:
    """Content-Type, the stored system headers, x-amz-meta-* and the storage class."""
    user: dict[str, str] = {}
    total = 0
    for name, value in headers.items():
        if name.startswith(META_PREFIX):
            meta_name = name[len(META_PREFIX):]
            user[meta_name] = value
            total += len(meta_name.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise MetadataTooLarge(
            f"Your metadata headers are {total} bytes; the limit is {MAX_METADATA_BYTES}.",
            fields={"Size": str(total), "MaxSizeAllowed": str(MAX_METADATA_BYTES)})
    stored: dict[str, str] = {}
    for canonical in STORED_HEADERS:
        found = headers.get(canonical.lower())
        if found is None:
            continue
        value = found
        if canonical == "Content-Encoding":
            value = strip_aws_chunked(value)
            if not value:
                continue
        stored[canonical] = value
    if any(name.startswith("x-amz-grant-") for name in headers):
        raise NotImplemented_("Explicit x-amz-grant-* headers are not supported; use a "
                              "canned ACL (x-amz-acl).")
    storage_class = headers.get("x-amz-storage-class", "STANDARD") or "STANDARD"
    if storage_class not in STORAGE_CLASSES:
        raise InvalidStorageClass(fields={"StorageClassRequested": storage_class})
    return ObjectAttributes(
        content_type=headers.get("content-type"),
        user_metadata=user,
        headers=stored,
        storage_class=storage_class,
        acl=validate_acl(headers.get("x-amz-acl")),
    )


def strip_aws_chunked(content_encoding: str) -> str:
    """The transfer framing is not part of the object: drop ``aws-chunked`` from the list."""
    parts = [p.strip() for p in content_encoding.split(",")]
    return ",".join(p for p in parts if p and p.lower() != "aws-chunked")


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """``x-amz-copy-source``: ``[/]bucket/key[?versionId=v]``, the key URL-encoded."""
    raw = value.strip()
    version_id = None
    if "?" in raw:
        raw, _, query = raw.partition("?")
        for pair in query.split("&"):
            name, _, val = pair.partition("=")
            if name == "versionId":
                version_id = unquote(val)
    path = unquote(raw)
    if path.startswith("/"):
        path = path[1:]
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise InvalidArgument("Copy Source must mention the source bucket and key: "
                              "sourcebucket/sourcekey",
                              name="x-amz-copy-source", value=value)
    return bucket, key, version_id


def metadata_directive(headers: Mapping[str, str]) -> str:
    directive = headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.", name="x-amz-metadata-directive",
                              value=directive)
    return directive


def content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidRequest("Content-Length is not a number") from None
    if n < 0:
        raise InvalidRequest("Content-Length is negative")
    return n
