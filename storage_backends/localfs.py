"""The default backend: blobs as files under one root directory.

Layout under ``root``::

    blobs/<key>                        a whole blob (the key's segments are directories)
    blobs/<key>@manifest               a blob completed from parts: JSON naming its segments
    blobs/<key>@seg-<id>/<NNNNN>       ...and the segments: the parts, moved there, never copied
    uploads/<id>/key, <NNNNN>          a multipart upload: the key it belongs to, and its parts
    tmp/<instance>.lock, tmp/<instance>/   one live instance's staging area, flock'ed while alive
    tmp/retired/<token>/               segment and upload directories on their way out

Blob keys never contain ``@`` (see ``_keys``), so a whole blob and the pieces of a segmented
one can never be confused, and no internal name can be reached through a key.

Readers look for the whole blob first, then for the manifest. Every change a reader can
observe is one ``rename`` or ``unlink``: a new whole blob replaces the file and then drops
any manifest; a new segmented blob replaces the manifest and then drops any whole file.
Readers hold an open descriptor (and, for segments, a shared ``flock`` on the segment
directory, which deletion respects), so a read in progress is never torn by an overwrite
or a delete.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import TypeVar

import anyio
from anyio import to_thread

from storage_backends._keys import check_part_list, check_part_number, validate_blob_key
from storage_backends._streams import (
    BaseReader,
    copy_fd_range,
    fsync_dir,
    locate,
    pread_exact,
    read_small,
    rechunk,
    resolve_range,
    same_file,
    spans,
    write_all,
)
from storage_backends.errors import (
    BackendUnavailable,
    BlobNotFound,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidPart,
    StorageError,
    UploadNotFound,
)
from storage_backends.protocol import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)

T = TypeVar("T")

MANIFEST = "@manifest"
SEGMENTS = "@seg-"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_INSTANCE_ID = re.compile(r"[0-9a-f]{16}")
_SEGMENT_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}@seg-[0-9a-f]{32}")
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# The medium misbehaves or is out of a transient resource: the caller may retry later.
_TRANSIENT = frozenset(
    {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EROFS, errno.EMFILE,
     errno.ENFILE, errno.ENOMEM}
)
# Hard links are an optimisation; these mean "not here", and a streamed copy follows.
_NO_LINK = frozenset({errno.EMLINK, errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EACCES})
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


@contextmanager
def _os_errors(key: str, *, writing: bool = False) -> Iterator[None]:
    """Native errors become storage errors here, once; storage errors pass through."""
    try:
        yield
    except StorageError:
        raise
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        # A path component is a file, or the key names a directory: on this backend a key
        # cannot be both a blob and a prefix of other blobs ("a" and "a/b").
        if writing:
            raise InvalidBlobKey(key) from exc
        raise BlobNotFound(key) from exc
    except FileNotFoundError as exc:
        if writing:
            raise BackendUnavailable(f"a backend file vanished while writing {key!r}") from exc
        raise BlobNotFound(key) from exc
    except OSError as exc:
        if exc.errno in _FULL:
            raise InsufficientStorage(str(exc)) from exc
        if exc.errno in _TRANSIENT:
            raise BackendUnavailable(str(exc)) from exc
        if exc.errno == errno.ELOOP:
            raise StorageError(f"refusing to follow a symbolic link for {key!r}") from exc
        raise


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@dataclass(slots=True)
class _Staged:
    """A file being written in the staging area; ``fd`` is -1 once closed."""

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
        """Make the bytes durable before the file gets its final name."""
        os.fsync(self.fd)
        st = os.fstat(self.fd)
        self.size, self.mtime = st.st_size, st.st_mtime
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def discard(self) -> None:
        self.close()
        with suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass(frozen=True, slots=True)
class _Manifest:
    segments: str
    parts: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        return sum(size for _, size in self.parts)

    def encode(self) -> bytes:
        doc = {"version": 1, "segments": self.segments, "size": self.size,
               "parts": [list(part) for part in self.parts]}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> _Manifest:
        try:
            doc = json.loads(raw)
            parts = tuple((int(n), int(size)) for n, size in doc["parts"])
            manifest = cls(str(doc["segments"]), parts)
            valid = (
                doc["version"] == 1
                and _SEGMENT_DIR.fullmatch(manifest.segments) is not None
                and all(1 <= n <= 10_000 and size >= 0 for n, size in parts)
                and manifest.size == doc["size"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"corrupt manifest {where}") from exc
        if not valid:
            raise StorageError(f"corrupt manifest {where}")
        return manifest


def _part_name(part_number: int) -> str:
    return f"{part_number:05d}"


class _Source:
    """An opened blob: one descriptor, or a locked segment directory and the segments' names."""

    def __init__(self, size: int, mtime: float, fd: int = -1, dir_fd: int = -1,
                 manifest: _Manifest | None = None) -> None:
        self.size, self.mtime, self.fd, self.dir_fd = size, mtime, fd, dir_fd
        self.manifest = manifest
        if manifest is None:
            self.pieces: tuple[tuple[str, int], ...] = (("", size),)
        else:
            self.pieces = tuple((_part_name(n), size) for n, size in manifest.parts)

    def open_piece(self, index: int) -> int:
        if self.manifest is None:
            return self.fd
        return os.open(self.pieces[index][0], os.O_RDONLY, dir_fd=self.dir_fd)

    def close_piece(self, fd: int) -> None:
        if self.manifest is not None:  # a whole blob's descriptor lives as long as the source
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
        for name in ("fd", "dir_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)  # closing the directory also drops the shared lock


class _FileReader(BaseReader):
    def __init__(self, key: str, source: _Source, byte_range: ByteRange | None) -> None:
        super().__init__(source.size, byte_range)
        self._key = key
        self._source: _Source | None = source
        self._preloaded: bytes | None = None

    def preload(self) -> None:
        """Small reads: fetch the bytes while opening, so the whole GET is one thread hop."""
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

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._preloaded is not None:
            if self._preloaded:
                yield self._preloaded
            return
        source = self._source
        assert source is not None
        for index, offset, length in source.extents(self._start, self._end):
            with _os_errors(self._key):
                fd = await to_thread.run_sync(source.open_piece, index)
            try:
                for at, size in spans(offset, length):
                    with _os_errors(self._key):
                        yield await to_thread.run_sync(pread_exact, fd, size, at)
            finally:
                source.close_piece(fd)

    def _release(self) -> None:
        if self._source is not None:
            source, self._source = self._source, None
            source.close()


class LocalFSBackend:
    name = "localfs"
    capabilities = Capabilities(server_side_copy=True, native_multipart=True)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._blobs = str(self.root / "blobs")
        self._uploads = str(self.root / "uploads")
        self._tmp = str(self.root / "tmp")
        self._retired = os.path.join(self._tmp, "retired")
        for path in (str(self.root), self._blobs, self._uploads, self._tmp, self._retired):
            os.makedirs(path, mode=0o700, exist_ok=True)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise StorageError(f"{path} must be a directory, not a link")
        self._lock_fd, self.instance_id = self._claim_instance()
        self._staging = os.path.join(self._tmp, self.instance_id)
        os.mkdir(self._staging, 0o700)
        self._names = count()
        self._closed = False
        self._sweep_dead_instances()
        self._purge_retired()

    # -- blobs -----------------------------------------------------------------------------

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo:
        """``size`` is only a hint; the body decides."""
        validate_blob_key(key)
        return await self._receive(key, body, lambda staged: self._install_whole(key, staged),
                                   precheck=lambda: self._check_parents(key))

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> BlobReader:
        validate_blob_key(key)
        with _os_errors(key):
            return await to_thread.run_sync(self._open_reader, key, byte_range)

    async def head(self, key: str) -> BlobInfo:
        validate_blob_key(key)

        def head() -> BlobInfo:
            source = self._open_source(key)
            source.close()
            return BlobInfo(key, source.size, _utc(source.mtime))

        with _os_errors(key):
            return await to_thread.run_sync(head)

    async def delete(self, key: str) -> None:
        validate_blob_key(key)

        def delete() -> None:
            path = self._path(key)
            self._drop_segmented(path)
            with suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                os.unlink(path)

        with _os_errors(key, writing=True):
            await to_thread.run_sync(delete)

    async def copy(self, src: str, dst: str) -> BlobInfo:
        validate_blob_key(src)
        validate_blob_key(dst)
        with _os_errors(src):
            staged = await to_thread.run_sync(self._link_whole, src)
        try:
            with _os_errors(dst, writing=True):
                if staged is not None:
                    return await to_thread.run_sync(self._install_whole, dst, staged)
                return await to_thread.run_sync(self._copy_opened, src, dst)
        except BaseException:
            if staged is not None:
                await self._discard(staged)
            raise

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose key starts with ``prefix``, one directory per thread hop; unordered."""
        pending = [""]
        while pending:
            rel = pending.pop()
            with _os_errors(prefix):
                infos, subdirs = await to_thread.run_sync(_scan, self._blobs, rel, prefix)
            for info in infos:
                yield info
            pending.extend(reversed(subdirs))

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str) -> str:
        validate_blob_key(key)

        def create() -> str:
            upload_id = secrets.token_hex(16)
            stage = self._staging_path()
            os.mkdir(stage, 0o700)
            try:
                marker = _Staged(os.path.join(stage, "key"))
                marker.open()
                marker.write(key.encode())
                marker.seal()
                fsync_dir(stage)
                os.rename(stage, os.path.join(self._uploads, upload_id))
            except BaseException:
                shutil.rmtree(stage, ignore_errors=True)
                raise
            fsync_dir(self._uploads)
            return upload_id

        with _os_errors(key, writing=True):
            return await to_thread.run_sync(create)

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int | None = None,
    ) -> PartInfo:
        updir = self._upload_dir(key, upload_id)
        check_part_number(part_number)

        def install(staged: _Staged) -> PartInfo:
            self._install_part(upload_id, updir, part_number, staged.path)
            return PartInfo(part_number, staged.size)

        return await self._receive(key, body, install,
                                   precheck=lambda: self._check_upload(key, upload_id, updir))

    async def copy_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        src: str,
        byte_range: ByteRange | None = None,
    ) -> PartInfo:
        updir = self._upload_dir(key, upload_id)
        check_part_number(part_number)
        validate_blob_key(src)

        def copy_part() -> PartInfo:
            self._check_upload(key, upload_id, updir)
            staged = self._link_whole(src) if byte_range is None else None
            try:
                if staged is None:
                    staged = _Staged(self._staging_path())
                    with _os_errors(src):
                        source = self._open_source(src)
                    try:
                        start, end = resolve_range(byte_range, source.size)
                        staged.open()
                        source.copy_into(staged.fd, start, end)
                    finally:
                        source.close()
                    staged.seal()
                self._install_part(upload_id, updir, part_number, staged.path)
            except BaseException:
                if staged is not None:
                    staged.discard()
                raise
            return PartInfo(part_number, staged.size)

        with _os_errors(key, writing=True):
            return await to_thread.run_sync(copy_part)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        updir = self._upload_dir(key, upload_id)
        check_part_list(parts)
        with _os_errors(key, writing=True):
            return await to_thread.run_sync(self._complete, key, upload_id, updir, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_blob_key(key)
        if _UPLOAD_ID.fullmatch(upload_id) is None:
            return
        updir = os.path.join(self._uploads, upload_id)

        def abort() -> None:
            try:
                self._check_upload(key, upload_id, updir)
            except UploadNotFound:
                return
            self._retire(updir)

        with _os_errors(key, writing=True):
            await to_thread.run_sync(abort)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(self._shutdown)

    # -- paths and containment -------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self._blobs, key)

    def _staging_path(self) -> str:
        return os.path.join(self._staging, str(next(self._names)))

    def _check_parents(self, key: str) -> None:
        """Keep every path under the root: no directory on the way to a blob may be a link.

        Keys are validated (no ``..``, not absolute), and final names are opened with
        ``O_NOFOLLOW``, so links planted on the way are all that could lead outside.
        """
        path = self._blobs
        for segment in key.split("/")[:-1]:
            path = os.path.join(path, segment)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return
            if stat.S_ISLNK(mode):
                raise StorageError(f"refusing to follow a symbolic link for {key!r}")
            if not stat.S_ISDIR(mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)

    def _make_parents(self, key: str) -> None:
        path = self._blobs
        for segment in key.split("/")[:-1]:
            path = os.path.join(path, segment)
            with suppress(FileExistsError):
                os.mkdir(path, 0o700)
        self._check_parents(key)

    def _upload_dir(self, key: str, upload_id: str) -> str:
        validate_blob_key(key)
        if not isinstance(upload_id, str) or _UPLOAD_ID.fullmatch(upload_id) is None:
            raise UploadNotFound(str(upload_id))
        return os.path.join(self._uploads, upload_id)

    def _check_upload(self, key: str, upload_id: str, updir: str) -> None:
        try:
            owner = read_small(os.path.join(updir, "key"))[0]
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise UploadNotFound(upload_id) from exc
        if owner != key.encode():
            raise UploadNotFound(upload_id)

    # -- writing ---------------------------------------------------------------------------

    async def _receive(
        self,
        key: str,
        body: AsyncIterable[bytes],
        install: Callable[[_Staged], T],
        *,
        precheck: Callable[[], None],
    ) -> T:
        """Stream ``body`` into a staging file, seal it and ``install`` it; or leave nothing.

        A body that fits in one chunk costs a single thread hop. Exceptions raised by the
        body propagate unchanged; the staging file is removed whatever happens.
        """
        staged = _Staged(self._staging_path())
        try:
            async with aclosing(rechunk(body)) as chunks:
                first = await anext(chunks, None)
                second = await anext(chunks, None) if first is not None else None

                def begin() -> None:
                    precheck()
                    staged.open()
                    for chunk in (first, second):
                        if chunk:
                            staged.write(chunk)

                def finish() -> T:
                    staged.seal()
                    return install(staged)

                if second is None:
                    def whole() -> T:
                        begin()
                        return finish()

                    with _os_errors(key, writing=True):
                        return await to_thread.run_sync(whole)
                with _os_errors(key, writing=True):
                    await to_thread.run_sync(begin)
                async for chunk in chunks:
                    with _os_errors(key, writing=True):
                        await to_thread.run_sync(staged.write, chunk)
                with _os_errors(key, writing=True):
                    return await to_thread.run_sync(finish)
        except BaseException:
            await self._discard(staged)
            raise

    async def _discard(self, staged: _Staged) -> None:
        if staged.created:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(staged.discard)

    def _replace(self, key: str, src: str, final: str) -> None:
        """``os.replace`` into the blob tree, creating directories; then make it durable."""
        try:
            os.replace(src, final)
        except FileNotFoundError:
            if not os.path.lexists(src):
                raise
            self._make_parents(key)
            os.replace(src, final)
        fsync_dir(os.path.dirname(final))

    def _install_whole(self, key: str, staged: _Staged) -> BlobInfo:
        path = self._path(key)
        self._replace(key, staged.path, path)
        self._drop_segmented(path)
        return BlobInfo(key, staged.size, _utc(staged.mtime))

    def _install_segmented(self, key: str, manifest: _Manifest) -> BlobInfo:
        path = self._path(key)
        staged = _Staged(self._staging_path())
        try:
            staged.open()
            staged.write(manifest.encode())
            staged.seal()
            try:
                old = self._read_manifest(path)
            except StorageError:
                old = None
            self._replace(key, staged.path, path + MANIFEST)
        except BaseException:
            staged.discard()
            raise
        try:
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
        except (FileNotFoundError, IsADirectoryError):
            pass
        if old is not None and old.segments != manifest.segments:
            self._retire(os.path.join(os.path.dirname(path), old.segments))
        return BlobInfo(key, manifest.size, _utc(staged.mtime))

    def _drop_segmented(self, path: str) -> None:
        try:
            manifest = self._read_manifest(path)
        except StorageError:
            manifest = None  # corrupt: drop it all the same, its segments are lost to us
        try:
            os.unlink(path + MANIFEST)
        except (FileNotFoundError, NotADirectoryError):
            return
        if manifest is not None:
            self._retire(os.path.join(os.path.dirname(path), manifest.segments))

    def _read_manifest(self, path: str) -> _Manifest | None:
        try:
            raw = read_small(path + MANIFEST)[0]
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _Manifest.decode(raw, path + MANIFEST)

    def _link_whole(self, src: str) -> _Staged | None:
        """Hard-link a whole blob into staging (blobs are immutable); None if it cannot be."""
        self._check_parents(src)
        staged = _Staged(self._staging_path())
        try:
            os.link(self._path(src), staged.path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return None
            raise
        staged.created = True
        st = os.lstat(staged.path)
        if not stat.S_ISREG(st.st_mode):
            staged.discard()
            return None
        # The copy is new: garbage collection judges a blob's age by its mtime. The source
        # shares the inode and looks younger too, which only delays its collection.
        os.utime(staged.path)
        st = os.lstat(staged.path)
        staged.size, staged.mtime = st.st_size, st.st_mtime
        return staged

    def _copy_opened(self, src: str, dst: str) -> BlobInfo:
        with _os_errors(src):
            source = self._open_source(src)
        try:
            if source.manifest is None:
                staged = _Staged(self._staging_path())
                try:
                    staged.open()
                    source.copy_into(staged.fd, 0, source.size)
                    staged.seal()
                    return self._install_whole(dst, staged)
                except BaseException:
                    staged.discard()
                    raise
            return self._copy_segmented(source, source.manifest, dst)
        finally:
            source.close()

    def _copy_segmented(self, source: _Source, manifest: _Manifest, dst: str) -> BlobInfo:
        stage = self._staging_path()
        os.mkdir(stage, 0o700)
        try:
            stage_fd = os.open(stage, _DIR_FLAGS)
            try:
                for index, (name, _) in enumerate(source.pieces):
                    try:
                        os.link(name, name, src_dir_fd=source.dir_fd, dst_dir_fd=stage_fd,
                                follow_symlinks=False)
                        continue
                    except OSError as exc:
                        if exc.errno not in _NO_LINK:
                            raise
                    out = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=stage_fd)
                    piece = source.open_piece(index)
                    try:
                        copy_fd_range(piece, 0, source.pieces[index][1], out)
                        os.fsync(out)
                    finally:
                        source.close_piece(piece)
                        os.close(out)
                os.fsync(stage_fd)
            finally:
                os.close(stage_fd)
            segments = f"{dst.rsplit('/', 1)[-1]}{SEGMENTS}{secrets.token_hex(16)}"
            target = os.path.join(os.path.dirname(self._path(dst)), segments)
            self._replace(dst, stage, target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return self._install_segmented(dst, _Manifest(segments, manifest.parts))

    def _install_part(self, upload_id: str, updir: str, part_number: int, staged: str) -> None:
        try:
            os.replace(staged, os.path.join(updir, _part_name(part_number)))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise UploadNotFound(upload_id) from exc
        fsync_dir(updir)

    def _complete(
        self, key: str, upload_id: str, updir: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        path = self._path(key)
        segments = f"{key.rsplit('/', 1)[-1]}{SEGMENTS}{upload_id}"
        segdir = os.path.join(os.path.dirname(path), segments)
        try:
            self._check_upload(key, upload_id, updir)
            holder = updir
        except UploadNotFound:
            # Completed before, perhaps interrupted by a crash: finishing again is safe.
            self._check_parents(key)
            try:
                if not stat.S_ISDIR(os.lstat(segdir).st_mode):
                    raise
            except FileNotFoundError:
                raise UploadNotFound(upload_id) from None
            holder = segdir
        chosen = []
        for ref in parts:
            try:
                size = os.lstat(os.path.join(holder, _part_name(ref.part_number))).st_size
            except FileNotFoundError as exc:
                raise InvalidPart(ref.part_number) from exc
            if ref.size is not None and ref.size != size:
                raise InvalidPart(ref.part_number, f"size {size}, not {ref.size}")
            chosen.append((ref.part_number, size))
        if holder == updir:
            keep = {_part_name(n) for n, _ in chosen} | {"key"}
            for entry in os.scandir(updir):
                if entry.name not in keep:
                    os.unlink(entry.path)
            self._check_parents(key)
            self._replace(key, updir, segdir)
            fsync_dir(self._uploads)
        return self._install_segmented(key, _Manifest(segments, tuple(chosen)))

    def _retire(self, path: str) -> None:
        """Move a directory out of sight at once, then delete it unless a reader still holds it."""
        target = os.path.join(self._retired, secrets.token_hex(16))
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        self._purge_retired()

    def _purge_retired(self) -> None:
        for entry in os.scandir(self._retired):
            try:
                fd = os.open(entry.path, _DIR_FLAGS)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry.path, ignore_errors=True)
            except BlockingIOError:
                pass  # a reader is still streaming from it; the next purge gets it
            finally:
                os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def _open_reader(self, key: str, byte_range: ByteRange | None) -> BlobReader:
        source = self._open_source(key)
        try:
            reader = _FileReader(key, source, byte_range)
            if reader.content_length <= CHUNK_SIZE:
                reader.preload()
        except BaseException:
            source.close()
            raise
        return reader

    def _open_source(self, key: str) -> _Source:
        self._check_parents(key)
        path = self._path(key)
        for _attempt in range(3):
            try:
                fd = os.open(path, _READ_FLAGS)
            except FileNotFoundError:
                pass
            else:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode):
                    return _Source(st.st_size, st.st_mtime, fd=fd)
                os.close(fd)  # a directory: the key is a prefix of other keys' paths
            source = self._open_segmented(path)
            if source is not None:
                return source
            # Neither, or a segment directory already retired: a writer switched versions
            # between our two looks. Look again.
        raise BlobNotFound(key)

    def _open_segmented(self, path: str) -> _Source | None:
        try:
            raw, mtime = read_small(path + MANIFEST)
        except FileNotFoundError:
            return None
        manifest = _Manifest.decode(raw, path + MANIFEST)
        segdir = os.path.join(os.path.dirname(path), manifest.segments)
        try:
            dir_fd = os.open(segdir, _DIR_FLAGS)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if same_file(segdir, dir_fd):
                return _Source(manifest.size, mtime, dir_fd=dir_fd, manifest=manifest)
        except BlockingIOError:
            pass  # being deleted right now
        os.close(dir_fd)
        return None

    # -- instances and their staging areas -------------------------------------------------

    def _claim_instance(self) -> tuple[int, str]:
        for _attempt in range(10):
            ident = secrets.token_hex(8)
            lock_path = os.path.join(self._tmp, f"{ident}.lock")
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if same_file(lock_path, fd):
                    return fd, ident
            except BlockingIOError:
                pass  # a sweeper took it between our create and our lock
            os.close(fd)
        raise BackendUnavailable(f"could not claim a staging area under {self._tmp}")

    def _sweep_dead_instances(self) -> None:
        """Remove the staging areas of instances that died (their lock is free)."""
        idents = {entry.name.removesuffix(".lock") for entry in os.scandir(self._tmp)}
        for ident in idents - {self.instance_id}:
            if _INSTANCE_ID.fullmatch(ident) is None:
                continue
            lock_path = os.path.join(self._tmp, f"{ident}.lock")
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                fd = -1  # owners create the lock before the directory: no lock, no owner
            try:
                if fd >= 0:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(os.path.join(self._tmp, ident), ignore_errors=True)
                if fd >= 0:
                    os.unlink(lock_path)
            except (BlockingIOError, FileNotFoundError):
                pass  # alive, or another sweeper got there first
            finally:
                if fd >= 0:
                    os.close(fd)

    def _shutdown(self) -> None:
        self._purge_retired()
        shutil.rmtree(self._staging, ignore_errors=True)
        try:
            os.unlink(os.path.join(self._tmp, f"{self.instance_id}.lock"))
        finally:
            os.close(self._lock_fd)


def _scan(blobs: str, rel: str, prefix: str) -> tuple[list[BlobInfo], list[str]]:
    """One directory of the blob tree: its blobs under ``prefix``, and subdirectories to visit."""
    infos: list[BlobInfo] = []
    subdirs: list[str] = []
    try:
        entries = sorted(os.scandir(os.path.join(blobs, rel)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return infos, subdirs
    files = {entry.name for entry in entries if entry.is_file(follow_symlinks=False)}
    for entry in entries:
        name = entry.name
        try:
            if name.endswith(MANIFEST) and entry.is_file(follow_symlinks=False):
                key = rel + name.removesuffix(MANIFEST)
                if key.startswith(prefix) and key.rsplit("/", 1)[-1] not in files:
                    infos.append(_segmented_info(key, entry.path))
            elif "@" in name:
                continue
            elif entry.is_dir(follow_symlinks=False):
                sub = f"{rel}{name}/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    subdirs.append(sub)
            elif entry.is_file(follow_symlinks=False) and (rel + name).startswith(prefix):
                st = entry.stat(follow_symlinks=False)
                infos.append(BlobInfo(rel + name, st.st_size, _utc(st.st_mtime)))
        except FileNotFoundError:
            continue  # deleted while we looked
    return infos, subdirs


def _segmented_info(key: str, manifest_path: str) -> BlobInfo:
    raw, mtime = read_small(manifest_path)
    try:
        size = _Manifest.decode(raw, manifest_path).size
    except StorageError:
        size = 0  # still listed, so that garbage collection can remove it
    return BlobInfo(key, size, _utc(mtime))
