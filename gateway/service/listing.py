"""Key listings in UTF-8 byte order, with prefix and delimiter.

Keys are read from the index in batches; when a delimiter rolls keys up into a common
prefix, the next query skips past every key under it, so a page costs queries in
proportion to what it returns, not to how many keys hide behind a prefix.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from gateway.metadata import repo
from gateway.types import BucketRecord, ListedObject, ObjectRecord

if TYPE_CHECKING:
    from gateway.service.context import Context

MAX_KEYS = 1000
_BATCH = 1000


def encode_continuation(last: str) -> str:
    """An opaque token for "the page after ``last``" (the same for S3 and the JSON API)."""
    return base64.urlsafe_b64encode(b"k1:" + last.encode("utf-8")).decode()


def decode_continuation(token: str) -> str:
    """The key a token continues after; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4))
        if not raw.startswith(b"k1:"):
            raise ValueError
        return raw[3:].decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a continuation token") from None


@dataclass(slots=True)
class Listing:
    objects: list[ListedObject] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    #: The last key or common prefix returned: where the next page starts (exclusive).
    last: str | None = None


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


async def list_keys(
    ctx: Context,
    bucket: BucketRecord,
    *,
    prefix: str = "",
    delimiter: str = "",
    after: str | None = None,
    max_keys: int = MAX_KEYS,
) -> Listing:
    return await ctx.db.scan(
        lambda conn: _list(conn, bucket.id, prefix, delimiter, after, max_keys))


def _list(conn: Connection, bucket_id: int, prefix: str, delimiter: str, after: str | None,
          max_keys: int) -> Listing:
    result = Listing()
    if max_keys <= 0:
        return result
    upper = successor(prefix) if prefix else None
    start = _resume(after, prefix, delimiter)
    if start is None:
        return result
    cursor, inclusive = start
    # Without a delimiter every row is an entry: one extra row tells whether more exist.
    batch = _BATCH if delimiter else max_keys + 1
    count = 0
    while True:
        rows = repo.list_latest_entries(conn, bucket_id, after=cursor, after_inclusive=inclusive,
                                prefix=prefix, upper=upper, limit=batch)
        last_cp: str | None = None
        for row in rows:
            if last_cp is not None and row.key.startswith(last_cp):
                continue  # rolled up into the common prefix just returned
            if count >= max_keys:
                result.is_truncated = True
                return result
            cp = _common_prefix(row.key, prefix, delimiter) if delimiter else None
            if cp is not None:
                result.common_prefixes.append(cp)
                result.last = last_cp = cp
            else:
                result.objects.append(row)
                result.last = row.key
                last_cp = None
            count += 1
        if len(rows) < batch:
            return result  # the index holds nothing beyond these rows
        if last_cp is not None:
            # The batch ended inside a common prefix: jump past all of its keys.
            nxt = successor(last_cp)
            if nxt is None or (upper is not None and nxt >= upper):
                return result
            cursor, inclusive = nxt, True
        else:
            cursor, inclusive = rows[-1].key, False


def _resume(after: str | None, prefix: str, delimiter: str) -> tuple[str | None, bool] | None:
    """Where a page that continues after ``after`` starts: (key, inclusive), with no key
    meaning the beginning of ``prefix``; None when nothing can follow."""
    if after is not None and delimiter:
        # A marker inside a common prefix already returned: resume after the whole prefix.
        cp = _common_prefix(after, prefix, delimiter)
        if cp is not None and after >= cp:
            nxt = successor(cp)
            return None if nxt is None else (nxt, True)
    if after is not None and prefix and after < prefix:
        return None, False
    return after, False


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not key.startswith(prefix):
        return None
    idx = key.find(delimiter, len(prefix))
    if idx < 0:
        return None
    return key[: idx + len(delimiter)]


@dataclass(slots=True)
class VersionListing:
    #: Versions and delete markers, by key, newest first within a key.
    versions: list[ObjectRecord] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_key_marker: str | None = None
    next_version_id_marker: str | None = None


async def list_versions(
    ctx: Context,
    bucket: BucketRecord,
    *,
    prefix: str = "",
    delimiter: str = "",
    key_marker: str | None = None,
    version_id_marker: str | None = None,
    max_keys: int = MAX_KEYS,
) -> VersionListing:
    """ListObjectVersions. ``version_id_marker`` (with ``key_marker``): resume after that
    version of that key; ``key_marker`` alone: after every version of it."""
    return await ctx.db.scan(lambda conn: _list_versions(
        conn, bucket.id, prefix, delimiter, key_marker, version_id_marker, max_keys))


def _list_versions(conn: Connection, bucket_id: int, prefix: str, delimiter: str,
                   key_marker: str | None, version_id_marker: str | None,
                   max_keys: int) -> VersionListing:
    result = VersionListing()
    if max_keys <= 0:
        return result
    upper = successor(prefix) if prefix else None
    start = _resume(key_marker or None, prefix, delimiter)
    if start is None:
        return result
    cursor, inclusive = start
    below_id = None
    if cursor is not None and cursor == key_marker and not inclusive and version_id_marker:
        # Resume inside the marker's key: its versions older than the marked one first.
        found = repo.object_version(conn, bucket_id, cursor, version_id_marker)
        below_id = found.id if found is not None else None
    count = 0
    last_cp: str | None = None
    while True:
        rows = repo.list_versions(conn, bucket_id, after_key=cursor, after_inclusive=inclusive,
                                  below_id=below_id, prefix=prefix, upper=upper, limit=_BATCH)
        for row in rows:
            if last_cp is not None and row.key.startswith(last_cp):
                continue
            cp = _common_prefix(row.key, prefix, delimiter) if delimiter else None
            if count >= max_keys:
                result.is_truncated = True
                return result
            if cp is not None:
                result.common_prefixes.append(cp)
                result.next_key_marker, result.next_version_id_marker = cp, None
                last_cp = cp
            else:
                result.versions.append(row)
                result.next_key_marker = row.key
                result.next_version_id_marker = row.version_id
                last_cp = None
            count += 1
        if len(rows) < _BATCH:
            result.next_key_marker = result.next_version_id_marker = None
            return result
        if last_cp is not None:
            nxt = successor(last_cp)
            if nxt is None or (upper is not None and nxt >= upper):
                result.next_key_marker = result.next_version_id_marker = None
                return result
            cursor, inclusive, below_id = nxt, True, None
        else:
            # The rest of this key's versions (older than the last), then later keys.
            cursor, inclusive, below_id = rows[-1].key, False, rows[-1].id
