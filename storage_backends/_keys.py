"""Blob keys and part numbers: what a backend accepts as names.

Blob keys are chosen by the service (``b/12/4f/4f9c…``), never by users, checked strictly anyway.

A key is 1 to 8 segments joined by ``/``; each segment starts with an ASCII letter or digit
and continues with letters, digits, ``.``, ``_`` or ``-`` (at most 128 characters). So a key
can never be absolute, never contain ``..`` or ``.`` segments, hidden names, backslashes or
empty segments, and any name a backend makes that starts with another character (or contains
one, such as ``@``) cannot collide with a blob.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from storage_backends.errors import InvalidBlobKey, InvalidPart
from storage_backends.protocol import PartRef

MAX_KEY_LENGTH = 512
MAX_SEGMENTS = 8
MAX_PART_NUMBER = 10_000
#: One segment of a blob key; backends may use it to recognise their own names.
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_blob_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid blob key, else raise :class:`InvalidBlobKey`."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(str(key))
    segments = key.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidBlobKey(key)
    for segment in segments:
        if SEGMENT.fullmatch(segment) is None:
            raise InvalidBlobKey(key)
    return key


def check_part_number(part_number: int) -> None:
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise InvalidPart(part_number, f"part numbers run from 1 to {MAX_PART_NUMBER}")


def check_part_list(parts: Sequence[PartRef]) -> None:
    """What every backend refuses in a completion list: nothing, out-of-range or repeated parts."""
    if not parts:
        raise InvalidPart(0, "a multipart upload is completed with at least one part")
    seen: set[int] = set()
    for ref in parts:
        check_part_number(ref.part_number)
        if ref.part_number in seen:
            raise InvalidPart(ref.part_number, "listed more than once")
        seen.add(ref.part_number)
