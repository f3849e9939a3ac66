"""Request headers parsed once into typed values (DESIGN §2)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
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
    ObjectRecord,
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


#: RFC 9110 ``token``: the characters of a header name, and so of a metadata name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters but HTAB: never in a header value (CR or LF would end it).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds a character no header value may (HTAB aside)."""
    return _CONTROL.search(value) is not None


def encoded_word(value: str) -> str:
    """``value`` as one RFC 2047 encoded-word (UTF-8, Base64): how S3 returns metadata
    values that are not US-ASCII."""
    raw = value.encode("utf-8", "replace")  # "replace": a lone surrogate has no UTF-8
    return "=?UTF-8?B?" + base64.b64encode(raw).decode("ascii") + "?="


def _sendable(value: str) -> bool:
    """Whether a response header can carry ``value`` as it is: each character one Latin-1
    byte, no control character."""
    if has_control_characters(value):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def header_value(value: str) -> str:
    """A stored value as response header text that can always be sent: as it is when HTTP
    can carry it (anything written through S3 headers can), else RFC 2047-encoded. Guards
    the read path against whatever another writer, or an older version, stored."""
    trimmed = value.strip(" \t")  # HTTP drops surrounding whitespace anyway
    return trimmed if _sendable(trimmed) else encoded_word(value)


def object_headers(record: ObjectRecord, default_type: str) -> dict[str, str]:
    """Content-Type, the stored system headers and x-amz-meta-* of a GET/HEAD answer, as
    text a response can carry. A metadata name that cannot be a header name is left out
    and counted in ``x-amz-missing-meta``, as S3 does."""
    content_type = (record.content_type or "").strip(" \t")
    headers = {"Content-Type": content_type if content_type and _sendable(content_type)
               else default_type}
    for name, value in record.headers.items():
        if _TOKEN.fullmatch(name) and value.strip(" \t"):
            headers[name] = header_value(value)
    missing = 0
    for name, value in record.user_metadata.items():
        if _TOKEN.fullmatch(name):
            headers[META_PREFIX + name] = header_value(value)
        else:
            missing += 1
    if missing:
        headers["x-amz-missing-meta"] = str(missing)
    return headers


def _text_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Fields given as text (a JSON body, form fields), checked as S3 checks request
    headers and turned into what headers would have carried: metadata names are tokens;
    no value holds a control character (CR and LF above all); surrounding whitespace goes;
    a non-ASCII metadata value is stored RFC 2047-encoded (as S3 returns it), while other
    non-ASCII values (Content-Type, Content-Disposition, …) are refused."""
    out: dict[str, str] = {}
    for name, raw in headers.items():
        meta = name.startswith(META_PREFIX)
        if meta and not _TOKEN.fullmatch(name[len(META_PREFIX):]):
            raise InvalidArgument(
                "A metadata name must be a valid HTTP header name (letters, digits and "
                "!#$%&'*+-.^_`|~)", name=name)
        value = raw.strip(" \t")
        if has_control_characters(value):
            raise InvalidArgument(f"{name} must not contain control characters or line "
                                  "breaks", name=name)
        if not value.isascii():
            if not meta:
                raise InvalidArgument(f"{name} must be US-ASCII text", name=name)
            value = encoded_word(value)
        out[name] = value
    return out


def object_attributes(headers: Mapping[str, str], *, text: bool = False) -> ObjectAttributes:
    """Content-Type, the stored system headers, x-amz-meta-* and the storage class.
    ``text``: the values are text from a JSON body or form fields, not request headers
    (which HTTP has already held to header syntax): check and encode them first."""
    if text:
        headers = _text_fields(headers)
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
        value = strip_aws_chunked(found) if canonical == "Content-Encoding" else found
        if not value.strip():
            continue  # an empty header says nothing (and an empty Expires breaks botocore)
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


def declares_body(raw_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request announces a body (ASGI header pairs): one answered without reading
    it cannot be followed by another request on the same connection."""
    for name, value in raw_headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False
