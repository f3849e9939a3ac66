"""RFC 7232 preconditions and byte-range resolution against what the service holds."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from gateway import errors
from gateway.types import ObjectRecord, RangeKind, RangeSpec, ReadConditions, WriteConditions
from storage_backends import ByteRange


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def check_read(cond: ReadConditions, etag: str, last_modified: datetime) -> None:
    """RFC 7232 §6 order: If-Match, else If-Unmodified-Since (412); then If-None-Match,
    else If-Modified-Since (304)."""
    if cond.empty:
        return
    lm = _second(last_modified)
    if cond.if_match is not None:
        if "*" not in cond.if_match and etag not in cond.if_match:
            raise errors.PreconditionFailed(fields={"Condition": "If-Match"})
    elif cond.if_unmodified_since is not None and lm > cond.if_unmodified_since:
        raise errors.PreconditionFailed(fields={"Condition": "If-Unmodified-Since"})
    # A 304 still names the representation (RFC 7232 §4.1).
    validators = {"ETag": f'"{etag}"', "Last-Modified": format_datetime(lm, usegmt=True)}
    if cond.if_none_match is not None:
        if "*" in cond.if_none_match or etag in cond.if_none_match:
            raise errors.NotModified(headers=validators)
    elif cond.if_modified_since is not None and lm <= cond.if_modified_since:
        raise errors.NotModified(headers=validators)


def check_copy_source(cond: ReadConditions, etag: str, last_modified: datetime) -> None:
    """``x-amz-copy-source-if-*``: the same rules, but every failure is a 412."""
    try:
        check_read(cond, etag, last_modified)
    except errors.NotModified:
        raise errors.PreconditionFailed(
            fields={"Condition": "x-amz-copy-source-If-None-Match"}) from None


def check_write(cond: WriteConditions, current: ObjectRecord | None) -> None:
    if cond.if_none_match_any and current is not None:
        raise errors.PreconditionFailed(fields={"Condition": "If-None-Match"})
    if cond.if_match is not None:
        if current is None:
            raise errors.NoSuchKey()
        if cond.if_match != "*" and cond.if_match != current.etag:
            raise errors.PreconditionFailed(fields={"Condition": "If-Match"})


def resolve_range(spec: RangeSpec | None, size: int) -> ByteRange | None:
    if spec is None:
        return None
    if spec.kind is RangeKind.SUFFIX:
        if spec.first == 0 or size == 0:
            raise errors.InvalidRange(size, spec.raw)
        return ByteRange(max(0, size - spec.first), size)
    if spec.first >= size:
        raise errors.InvalidRange(size, spec.raw)
    end = size if spec.kind is RangeKind.OPEN or spec.last is None else min(spec.last + 1, size)
    return ByteRange(spec.first, end)
