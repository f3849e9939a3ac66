"""What ``migrate`` and ``fsck`` share: walking the object rows, judging a blob by its row,
reporting what was found, and showing progress.

A blob is judged by the size and the MD5s behind its row's ETag. A single-part object's ETag
is the MD5 of its bytes. A multipart object's is ``md5(part MD5s, binary, concatenated)-N``;
the part layout (``object_parts``) records each part's offset, size and MD5, so each part is
checked against its own ETag. An object copied from a multipart one keeps its ETag but has
no layout: its bytes cannot be checked against the metadata, only its size
(``BlobDigest.unverifiable``).

An encrypted object's blob holds ciphertext (``service.encryption``): its size follows from
the plaintext's (``sse.stored_size``), and its MD5s are the plaintext's, which only a reader
holding the data key can check (``fsck --checksums`` does, for SSE-S3).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from gateway.metadata import repo
from gateway.metadata.db import Database
from gateway.service.sse import stored_size
from gateway.types import ObjectPart, StoredObject
from storage_backends import Backend

#: Object rows read per statement while walking them.
BATCH = 500

#: Examples kept per kind of problem (the count is always exact).
EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing found wrong. Row problems name the bucket and key; orphans only a blob."""

    blob_key: str
    detail: str
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None

    @classmethod
    def of(cls, obj: StoredObject, detail: str) -> Finding:
        return cls(obj.blob_key, detail, obj.bucket, obj.key, obj.version_id)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.bucket is not None:
            data.update(bucket=self.bucket, key=self.key, version_id=self.version_id)
        data.update(blob_key=self.blob_key, detail=self.detail)
        return data

    def describe(self) -> str:
        if self.bucket is None:
            return f"{self.blob_key}: {self.detail}"
        version = "" if self.version_id in (None, "null") else f" (version {self.version_id})"
        return f"{self.bucket}/{self.key}{version} [{self.blob_key}]: {self.detail}"


@dataclass(slots=True)
class Findings:
    """A count and the first few examples of one kind of problem."""

    count: int = 0
    examples: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(finding)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": [f.as_dict() for f in self.examples]}


class BlobDigest:
    """Digests a blob as its bytes stream by: the whole MD5, and each recorded part's.

    ``plaintext``: what is fed is the object's plaintext. By default it is, unless the
    object is encrypted: then its ciphertext, of which only the size can be judged."""

    def __init__(self, obj: StoredObject, *, plaintext: bool | None = None) -> None:
        self.obj = obj
        self.size = 0
        self.ciphertext = obj.encryption is not None if plaintext is None else not plaintext
        self._md5 = hashlib.md5()
        self._parts: tuple[ObjectPart, ...] = () if self.ciphertext else obj.parts
        self._part_md5 = hashlib.md5()
        self._part_left = obj.parts[0].size if obj.parts else 0
        self._part_digests: list[str] = []

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    @property
    def multipart(self) -> bool:
        return "-" in self.obj.etag

    @property
    def unverifiable(self) -> bool:
        """Only the size can be checked: ciphertext, or a multipart ETag without a
        recorded layout."""
        return self.ciphertext or (self.multipart and not self._parts)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._md5.update(chunk)
        view = memoryview(chunk)
        while view and len(self._part_digests) < len(self._parts):
            take = view[:self._part_left]
            self._part_md5.update(take)
            self._part_left -= len(take)
            view = view[len(take):]
            if self._part_left == 0:
                self._next_part()

    def _next_part(self) -> None:
        self._part_digests.append(self._part_md5.hexdigest())
        self._part_md5 = hashlib.md5()
        index = len(self._part_digests)
        self._part_left = self._parts[index].size if index < len(self._parts) else 0

    def problems(self) -> list[str]:
        """Call once all bytes went through ``update``; empty when the blob is right."""
        obj = self.obj
        if self.ciphertext:
            stored = stored_size(obj)
            if stored is not None and self.size != stored:
                return [f"the blob has {self.size} bytes, the encrypted object "
                        f"{stored} ({obj.size} in clear)"]
            return []
        if self.size != obj.size:
            return [f"the blob has {self.size} bytes, the object {obj.size}"]
        if not self.multipart:
            if self.md5_hex != obj.etag.lower():
                return [f"MD5 {self.md5_hex} differs from the ETag {obj.etag}"]
            return []
        if not self._parts:
            return []
        # Empty parts (a zero-byte last part) end where no byte arrives to close them.
        while len(self._part_digests) < len(self._parts) and self._part_left == 0:
            self._next_part()
        problems: list[str] = []
        layout_size = sum(p.size for p in self._parts)
        if layout_size != obj.size or len(self._part_digests) != len(self._parts):
            problems.append(f"the part layout covers {layout_size} bytes, the object "
                            f"{obj.size}")
        for part, digest in zip(self._parts, self._part_digests, strict=False):
            if digest != part.etag.lower():
                problems.append(f"part {part.part_number} (bytes {part.offset}-"
                                f"{part.offset + part.size - 1}): MD5 {digest} differs "
                                f"from its ETag {part.etag}")
        offset = 0
        for part in self._parts:
            if part.offset != offset:
                problems.append(f"part {part.part_number} is recorded at offset "
                                f"{part.offset}, after {offset} bytes of parts")
                break
            offset += part.size
        if not problems:
            try:
                joined = b"".join(bytes.fromhex(p.etag) for p in self._parts)
            except ValueError:
                return ["the part ETags are not MD5s"]
            expected = f"{hashlib.md5(joined).hexdigest()}-{len(self._parts)}"
            if expected != obj.etag.lower():
                problems.append(f"the parts' ETags make {expected}, the object's ETag is "
                                f"{obj.etag}")
        return problems


async def walk_objects(db: Database, *, with_parts: bool = True,
                       batch: int = BATCH) -> AsyncIterator[list[StoredObject]]:
    """Every object row holding a blob, in id order, a batch at a time (keyset pagination,
    so rows written meanwhile are seen when their id comes up, and no snapshot is held)."""
    after = 0
    while True:
        rows = await db.scan(partial(repo.stored_objects_after, after_id=after, limit=batch,
                                     with_parts=with_parts))
        if not rows:
            return
        yield rows
        after = rows[-1].id


async def digest_blob(backend: Backend, obj: StoredObject) -> BlobDigest:
    """Read a whole blob through a ``BlobDigest``; raises ``BlobNotFound`` as ``get`` does."""
    digest = BlobDigest(obj)
    reader = await backend.get(obj.blob_key)
    try:
        async for chunk in reader:
            digest.update(chunk)
    finally:
        await reader.aclose()
    return digest


class Progress(Protocol):
    """Where progress goes (a progress bar, or nowhere)."""

    def grow(self, total: int) -> None:
        """More work than announced: ``total`` more units."""

    def advance(self, done: int) -> None: ...


class NoProgress:
    def grow(self, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass
