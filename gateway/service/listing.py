"""Key listings in UTF-8 byte order, with prefix and delimiter.

Keys are read from the index in batches; when a delimiter rolls keys up into a common
prefix, the next query skips past every key under it, so a page costs queries in
proportion to what it returns, not to how many keys hide behind a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.metadata import repo
from gateway.service.context import Context
from gateway.types import BucketRecord, ObjectRecord

MAX_KEYS = 1000
_BATCH = 1000


@dataclass(slots=True)
class Listing:
    objects: list[ObjectRecord] = field(default_factory=list)
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
    result = Listing()
    if max_keys <= 0:
        return result
    upper = successor(prefix) if prefix else None
    cursor, inclusive = after, False
    if cursor is not None and delimiter:
        # A marker inside a common prefix already returned: resume after the whole prefix.
        cp = _common_prefix(cursor, prefix, delimiter)
        if cp is not None and cursor >= cp:
            nxt = successor(cp)
            if nxt is None:
                return result
            cursor, inclusive = nxt, True
    if cursor is not None and prefix and cursor < prefix:
        cursor, inclusive = None, False
    count = 0
    async with ctx.db.read() as conn:
        while True:
            rows = await repo.list_latest(conn, bucket.id, after=cursor,
                                          after_inclusive=inclusive, prefix=prefix,
                                          upper=upper, limit=_BATCH)
            if not rows:
                return result
            skipped_to: str | None = None
            for row in rows:
                if count >= max_keys:
                    result.is_truncated = True
                    return result
                cp = _common_prefix(row.key, prefix, delimiter) if delimiter else None
                if cp is not None:
                    result.common_prefixes.append(cp)
                    result.last = cp
                    count += 1
                    skipped_to = successor(cp)
                    break
                result.objects.append(row)
                result.last = row.key
                count += 1
            if skipped_to is not None:
                cursor, inclusive = skipped_to, True
                if upper is not None and skipped_to >= upper:
                    return result
            elif len(rows) < _BATCH:
                return result  # the index had no more rows than these
            else:
                cursor, inclusive = rows[-1].key, False
            if count >= max_keys:
                more = await repo.list_latest(conn, bucket.id, after=cursor,
                                              after_inclusive=inclusive, prefix=prefix,
                                              upper=upper, limit=1)
                result.is_truncated = bool(more)
                return result


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not key.startswith(prefix):
        return None
    idx = key.find(delimiter, len(prefix))
    if idx < 0:
        return None
    return key[: idx + len(delimiter)]
