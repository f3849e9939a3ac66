"""Moving bytes: stream and range helpers, blob readers, and file primitives for local stores.

Everything below "file descriptor helpers" blocks; call it off the event loop.
"""

from __future__ import annotations

import errno
import os
import stat
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterator,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from itertools import accumulate
from types import TracebackType
from typing import Self

import anyio.lowlevel
from anyio import to_thread

from storage_backends.errors import StorageError
from storage_backends.protocol import CHUNK_SIZE, ByteRange


async def rechunk(
    source: AsyncIterable[bytes], size: int = CHUNK_SIZE
) -> AsyncGenerator[bytes, None]:
    """Coalesce small pieces into chunks of at least ``size`` bytes (the tail may be smaller).

    At most one chunk is buffered; a piece that is already large enough passes through
    uncopied. Empty pieces are dropped, so an empty body yields nothing. Exceptions raised
    by ``source`` propagate unchanged.
    """
    buffer = bytearray()
    async for piece in source:
        if not piece:
            continue
        if not buffer and len(piece) >= size:
            yield bytes(piece)
            continue
        buffer += piece
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def resolve_range(byte_range: ByteRange | None, size: int) -> tuple[int, int]:
    """``[start, end)`` to read from a blob of ``size`` bytes.

    Callers resolve ranges against the size they hold, so a range past the end means the
    index and the bytes disagree: that is a bug or corruption, never a client error.
    """
    if byte_range is None:
        return 0, size
    if byte_range.end > size:
        raise ValueError(f"range [{byte_range.start}, {byte_range.end}) beyond blob size {size}")
    return byte_range.start, byte_range.end


def locate(sizes: Sequence[int], start: int, end: int) -> list[tuple[int, int, int]]:
    """Split ``[start, end)`` of a concatenation of pieces into ``(index, offset, length)``."""
    if start >= end:
        return []
    offsets = list(accumulate(sizes, initial=0))
    if end > offsets[-1]:
        raise ValueError(f"range [{start}, {end}) beyond total size {offsets[-1]}")
    index = bisect_right(offsets, start) - 1
    extents: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        piece_start, piece_end = offsets[index], offsets[index + 1]
        if piece_end > pos:
            length = min(piece_end, end) - pos
            extents.append((index, pos - piece_start, length))
            pos += length
        index += 1
    return extents


def spans(offset: int, length: int, chunk: int = CHUNK_SIZE) -> list[tuple[int, int]]:
    """``(offset, length)`` reads of at most ``chunk`` bytes covering ``length`` bytes."""
    return [(offset + done, min(chunk, length - done)) for done in range(0, length, chunk)]


class BaseReader(ABC):
    """What every :class:`~storage_backends.protocol.BlobReader` shares.

    Subclasses implement ``_chunks`` and ``_release``. Iteration happens at most once; the
    reader releases its resources when iteration ends, fails or is abandoned (``aclose`` is
    idempotent, and also an async context manager exit).
    """

    def __init__(self, size: int, byte_range: ByteRange | None) -> None:
        self._size = size
        self._range = byte_range
        self._start, self._end = resolve_range(byte_range, size)
        self._iterated = False
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def range(self) -> ByteRange | None:
        return self._range

    @property
    def content_length(self) -> int:
        return self._end - self._start

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterated or self._closed:
            raise RuntimeError("a blob reader can be iterated only once")
        self._iterated = True
        try:
            async for chunk in self._chunks():
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def read_all(self) -> bytes:
        """Convenience for tests and small blobs: the whole range as one ``bytes``."""
        return b"".join([chunk async for chunk in self])

    @abstractmethod
    def _chunks(self) -> AsyncIterator[bytes]:
        """The range's bytes, in order (each subclass reads its own medium)."""

    @abstractmethod
    def _release(self) -> None:
        """Free what the reader holds; must not block (closing file descriptors is fine)."""


class BytesReader(BaseReader):
    """A reader over bytes already in memory, yielded in ``CHUNK_SIZE`` slices."""

    def __init__(self, data: bytes, byte_range: ByteRange | None = None) -> None:
        super().__init__(len(data), byte_range)
        self._data: bytes | None = data

    async def _chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self._data or b"")
        for offset, length in spans(self._start, self.content_length):
            await anyio.lowlevel.checkpoint()
            if self._closed:
                return
            yield bytes(view[offset : offset + length])

    def _release(self) -> None:
        self._data = None


# -- file descriptor helpers (blocking: call them off the event loop) ---------------------
# Python opens every descriptor non-inheritable (PEP 446), so no O_CLOEXEC is needed.

#: preadv2's "fail rather than wait for the disk" flag (Linux 4.14+), where available.
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)

_NO_COPY_FILE_RANGE = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
)
MAX_SMALL_FILE = 16 * 1024 * 1024


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    pieces = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise StorageError("a blob file is shorter than the backend recorded")
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


def read_small(path: str) -> tuple[bytes, float]:
    """A small regular file's bytes and mtime; links are not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SMALL_FILE:
            raise StorageError(f"{path} is not a small regular file")
        return pread_exact(fd, st.st_size, 0), st.st_mtime
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_file(path: str, fd: int) -> bool:
    """Whether ``path`` (not followed) still names the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    ref = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino)


def copy_fd_range(src_fd: int, offset: int, length: int, dst_fd: int) -> None:
    """Append ``length`` bytes of ``src_fd`` from ``offset`` to ``dst_fd`` (in-kernel if it can)."""
    while length > 0:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, min(length, 1 << 30), offset)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            break
        if copied == 0:
            raise StorageError("a blob file is shorter than the backend recorded")
        offset += copied
        length -= copied
    for at, size in spans(offset, length):
        write_all(dst_fd, pread_exact(src_fd, size, at))


# -- files: written through a staging name, read as one or more pieces ---------------------

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


@dataclass(slots=True)
class StagedFile:
    """A file written under a scratch name, then sealed (fsynced) before its final rename."""

    path: str
    fd: int = -1
    size: int = 0
    mtime: float = 0.0
    created: bool = False

    def open(self) -> None:
        self.created = True
        self.fd = os.open(self.path, _CREATE_FLAGS, 0o600)

    def write(self, data: bytes) -> None:
        write_all(self.fd, data)

    def seal(self) -> None:
        os.fsync(self.fd)
        st = os.fstat(self.fd)
        self.size, self.mtime = st.st_size, st.st_mtime
        fd, self.fd = self.fd, -1
        os.close(fd)

    def discard(self) -> None:
        """Best effort, and quiet: it runs while another error is on its way up."""
        with suppress(OSError):
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                os.close(fd)
        if self.created:
            with suppress(OSError):
                os.unlink(self.path)


@contextmanager
def discarding(staged: StagedFile) -> Iterator[StagedFile]:
    """Remove the staged file if the block fails (or is cancelled)."""
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise


class FilePieces:
    """An opened blob: one open file, or named pieces in an open directory, read in order.

    A segmented blob's pieces are opened one at a time, relative to ``dir_fd``, so the
    directory can be renamed (not deleted: its owner's business) while it is read.
    """

    def __init__(self, size: int, mtime: float, *, fd: int = -1, dir_fd: int = -1,
                 pieces: Sequence[tuple[str, int]] = ()) -> None:
        self.size, self.mtime, self.fd, self.dir_fd = size, mtime, fd, dir_fd
        self.pieces = list(pieces) if dir_fd >= 0 else [("", size)]

    @property
    def segmented(self) -> bool:
        return self.dir_fd >= 0

    def open_piece(self, index: int) -> int:
        if not self.segmented:
            return self.fd
        return os.open(self.pieces[index][0], os.O_RDONLY, dir_fd=self.dir_fd)

    def close_piece(self, fd: int) -> None:
        if self.segmented:  # a whole blob's descriptor lives as long as this object
            os.close(fd)

    def extents(self, start: int, end: int) -> list[tuple[int, int, int]]:
        return locate([size for _, size in self.pieces], start, end)

    def copy_into(self, out_fd: int, start: int, end: int) -> None:
        for index, offset, length in self.extents(start, end):
            fd = self.open_piece(index)
            try:
                copy_fd_range(fd, offset, length, out_fd)
            finally:
                self.close_piece(fd)

    def close(self) -> None:
        fds = (self.fd, self.dir_fd)
        self.fd = self.dir_fd = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)  # closing a directory also drops any lock held on it


class FileReader(BaseReader):
    """Reads ``[start, end)`` of :class:`FilePieces` in ``CHUNK_SIZE`` reads off the event loop.

    ``errors`` wraps every blocking call: the backend's mapping of native errors.
    """

    def __init__(self, source: FilePieces, byte_range: ByteRange | None,
                 errors: Callable[[], AbstractContextManager[None]]) -> None:
        super().__init__(source.size, byte_range)
        self._source: FilePieces | None = source
        self._errors = errors
        self._piece = -1  # the piece being read, when the source is segmented
        self._preloaded: bytes | None = None

    def preload(self) -> None:
        """Blocking: read the whole range now and let go of the files (for small reads)."""
        assert self._source is not None
        parts = []
        for index, offset, length in self._source.extents(self._start, self._end):
            fd = self._source.open_piece(index)
            try:
                parts.append(pread_exact(fd, length, offset))
            finally:
                self._source.close_piece(fd)
        self._preloaded = b"".join(parts)
        self._release()

    def preload_cached(self) -> bool:
        """Non-blocking: read the range of a whole (unsegmented) blob if the page cache holds
        all of it (``RWF_NOWAIT``), and let go of the file; False (nothing changed) if it
        would have to wait for the disk, or the platform cannot tell."""
        source = self._source
        assert source is not None
        length = self._end - self._start
        if source.segmented or _RWF_NOWAIT is None:
            return False
        buffer = bytearray(length)
        try:
            got = os.preadv(source.fd, [buffer], self._start, _RWF_NOWAIT) if length else 0
        except (BlockingIOError, OSError):
            return False
        if got != length:
            return False
        self._preloaded = bytes(buffer)
        self._release()
        return True

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._preloaded is not None:
            if self._preloaded:
                yield self._preloaded
            return
        source = self._source
        assert source is not None
        for index, offset, length in source.extents(self._start, self._end):
            with self._errors():
                fd = await to_thread.run_sync(source.open_piece, index)
            if source.segmented:
                self._piece = fd
            try:
                for at, size in spans(offset, length):
                    if self._closed:
                        return
                    with self._errors():
                        yield await to_thread.run_sync(pread_exact, fd, size, at)
            finally:
                self._close_piece()

    def _close_piece(self) -> None:
        if self._piece >= 0:
            fd, self._piece = self._piece, -1
            os.close(fd)

    def _release(self) -> None:
        self._close_piece()
        if self._source is not None:
            source, self._source = self._source, None
            source.close()
