"""The default backend: blobs as files under one root directory.

Layout under ``root``::

    blobs/<key>                      a whole blob (the key's segments are directories)
    blobs/<key>@manifest             a blob completed from parts: JSON naming its segments
    blobs/<key>@seg-<id>/<NNNNN>     ...and its segments: the parts, moved there, never copied
    uploads/<id>/key, <NNNNN>        a multipart upload: the key it belongs to, and its parts
    tmp/<instance>.lock              flock'ed by a live backend instance for its lifetime
    tmp/<instance>/                  ...and its staging files; swept once its lock is free
    tmp/retired/<token>/             segment and upload directories on their way out

Blob keys never contain ``@`` (see ``_keys``): a whole blob and the pieces of a segmented
one cannot be confused, and no key reaches an internal name.

Readers look for the whole blob first, then for the manifest. Every change a reader can
observe is one ``rename`` or ``unlink``: a new whole blob replaces the file, then drops any
manifest; a new segmented blob replaces the manifest, then drops any whole file. A reader
holds an open descriptor (for segments: the segment directory, with a shared ``flock`` that
deletion waits for), so an overwrite or a delete never tears a read in progress.
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

from storage_backends._keys import SEGMENT, check_part_list, check_part_number, validate_blob_key
from storage_backends._streams import (
    FilePieces,
    FileReader,
    StagedFile,
    copy_fd_range,
    discarding,
    fsync_dir,
    read_small,
    rechunk,
    resolve_range,
    same_file,
)  # fmt: skip
from storage_backends.errors import (
    BackendUnavailable,
    BlobNotFound,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidPart,
    StorageError,
    UploadNotFound,
)  # fmt: skip
from storage_backends.protocol import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)  # fmt: skip

T = TypeVar("T")

MANIFEST = "@manifest"
SEGMENTS = "@seg-"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_INSTANCE_ID = re.compile(r"[0-9a-f]{16}")
_SEGMENT_DIR = re.compile(SEGMENT.pattern + r"@seg-[0-9a-f]{32}")
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# The medium misbehaves or ran out of a transient resource: the caller may retry later.
_TRANSIENT = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EROFS,
                        errno.EMFILE, errno.ENFILE, errno.ENOMEM})
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
        # cannot be both a blob and a prefix of other blobs' keys ("a" and "a/b").
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


def _part_name(part_number: int) -> str:
    return f"{part_number:05d}"


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
            manifest = cls(str(doc["segments"]), tuple((int(n), int(s)) for n, s in doc["parts"]))
            valid = (doc["version"] == 1 and manifest.size == doc["size"]
                     and _SEGMENT_DIR.fullmatch(manifest.segments) is not None
                     and all(1 <= n <= 10_000 and s >= 0 for n, s in manifest.parts))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"corrupt manifest {where}") from exc
        if not valid:
            raise StorageError(f"corrupt manifest {where}")
        return manifest


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
        self._names = count()
        self._closed = False
        try:
            os.mkdir(self._staging, 0o700)
            self._sweep_dead_instances()
            self._purge_retired()
        except BaseException:
            self._shutdown()
            raise

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
            try:
                self._check_parents(key)
            except NotADirectoryError:
                return  # a prefix of the key is a blob, so this key cannot be one
            path = self._path(key)
            self._drop_segmented(path)
            with suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)

        with _os_errors(key, writing=True):
            await to_thread.run_sync(delete)

    async def copy(self, src: str, dst: str) -> BlobInfo:
        validate_blob_key(src)
        validate_blob_key(dst)

        def copy() -> BlobInfo:
            staged = self._link_whole(src)
            if staged is None:
                source = self._open_source(src)
                try:
                    if source.segmented:
                        return self._copy_segmented(source, dst)
                    staged = self._stage_range(source, None)
                finally:
                    source.close()
            with discarding(staged):
                return self._install_whole(dst, staged)

        with _os_errors(dst, writing=True):
            return await to_thread.run_sync(copy)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose key starts with ``prefix``, a directory per thread hop; unordered."""
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
                marker = StagedFile(os.path.join(stage, "key"))
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

        def install(staged: StagedFile) -> PartInfo:
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
            if staged is None:
                source = self._open_source(src)
                try:
                    staged = self._stage_range(source, byte_range)
                finally:
                    source.close()
            with discarding(staged):
                self._install_part(upload_id, updir, part_number, staged.path)
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
        try:
            updir = self._upload_dir(key, upload_id)
        except UploadNotFound:
            return

        def abort() -> None:
            with suppress(UploadNotFound):
                self._check_upload(key, upload_id, updir)
                self._retire(updir)

        with _os_errors(key, writing=True):
            await to_thread.run_sync(abort)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(self._shutdown)

    # -- names, paths and containment ------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self._blobs, key)

    def _staging_path(self) -> str:
        return os.path.join(self._staging, str(next(self._names)))

    def _check_parents(self, key: str) -> None:
        """Keep every path under the root: no directory on the way to a blob may be a link.

        Keys cannot hold ``..`` or start with ``/``, and final names are opened with
        ``O_NOFOLLOW`` (or replaced, which does not follow them): links planted on the way
        are all that could lead outside, and this refuses them.
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
            if not stat.S_ISDIR(os.lstat(updir).st_mode):  # a link planted there, say
                raise UploadNotFound(upload_id)
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
        install: Callable[[StagedFile], T],
        *,
        precheck: Callable[[], None],
    ) -> T:
        """Stream ``body`` into a staging file, seal it and ``install`` it; or leave nothing.

        A body that fits in one chunk costs a single thread hop. Exceptions raised by the
        body propagate unchanged; the staging file is removed whatever happens.
        """
        staged = StagedFile(self._staging_path())

        def begin(*chunks: bytes | None) -> None:
            precheck()
            staged.open()
            for chunk in chunks:
                if chunk:
                    staged.write(chunk)

        def finish() -> T:
            staged.seal()
            return install(staged)

        def at_once(chunk: bytes | None) -> T:
            begin(chunk)
            return finish()

        try:
            async with aclosing(rechunk(body)) as chunks:
                first = await anext(chunks, None)
                second = await anext(chunks, None) if first is not None else None
                if second is None:
                    with _os_errors(key, writing=True):
                        return await to_thread.run_sync(at_once, first)
                with _os_errors(key, writing=True):
                    await to_thread.run_sync(begin, first, second)
                del first, second
                async for chunk in chunks:
                    with _os_errors(key, writing=True):
                        await to_thread.run_sync(staged.write, chunk)
                with _os_errors(key, writing=True):
                    return await to_thread.run_sync(finish)
        except BaseException:
            if staged.created:
                with anyio.CancelScope(shield=True):
                    await to_thread.run_sync(staged.discard)
            raise

    def _stage_range(self, source: FilePieces, byte_range: ByteRange | None) -> StagedFile:
        start, end = resolve_range(byte_range, source.size)
        with discarding(StagedFile(self._staging_path())) as staged:
            staged.open()
            source.copy_into(staged.fd, start, end)
            staged.seal()
        return staged

    def _link_whole(self, src: str) -> StagedFile | None:
        """Hard-link a whole blob into staging (blobs are immutable); None if it cannot be."""
        try:
            self._check_parents(src)
        except NotADirectoryError:
            return None
        staged = StagedFile(self._staging_path())
        try:
            os.link(self._path(src), staged.path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return None
            raise
        staged.created = True
        with discarding(staged):
            if not stat.S_ISREG(os.lstat(staged.path).st_mode):
                staged.discard()
                return None
            # The copy is new: garbage collection judges a blob's age by its mtime. The
            # source shares the inode and looks younger too, which only delays its collection.
            os.utime(staged.path)
            st = os.lstat(staged.path)
            staged.size, staged.mtime = st.st_size, st.st_mtime
        return staged

    def _replace(self, key: str, src: str, final: str) -> None:
        """``os.replace`` into the blob tree, creating directories; then make it durable."""
        self._check_parents(key)
        try:
            os.replace(src, final)
        except FileNotFoundError:
            if not os.path.lexists(src):
                raise
            self._make_parents(key)
            os.replace(src, final)
        fsync_dir(os.path.dirname(final))

    def _install_whole(self, key: str, staged: StagedFile) -> BlobInfo:
        path = self._path(key)
        self._replace(key, staged.path, path)
        self._drop_segmented(path)
        return BlobInfo(key, staged.size, _utc(staged.mtime))

    def _install_segmented(self, key: str, manifest: _Manifest) -> BlobInfo:
        path = self._path(key)
        with discarding(StagedFile(self._staging_path())) as staged:
            staged.open()
            staged.write(manifest.encode())
            staged.seal()
            old = self._read_manifest(path)
            self._replace(key, staged.path, path + MANIFEST)
        with suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)  # the manifest is durable already: now the whole blob may go
            fsync_dir(os.path.dirname(path))
        if old is not None and old.segments != manifest.segments:
            self._retire(os.path.join(os.path.dirname(path), old.segments))
        return BlobInfo(key, manifest.size, _utc(staged.mtime))

    def _drop_segmented(self, path: str) -> None:
        manifest = self._read_manifest(path)
        try:
            os.unlink(path + MANIFEST)
        except (FileNotFoundError, NotADirectoryError):
            return
        if manifest is not None:
            self._retire(os.path.join(os.path.dirname(path), manifest.segments))

    def _read_manifest(self, path: str) -> _Manifest | None:
        """For writers: None when there is none, or one too corrupt to name its segments."""
        try:
            return _Manifest.decode(read_small(path + MANIFEST)[0], path + MANIFEST)
        except (FileNotFoundError, NotADirectoryError, StorageError):
            return None

    def _copy_segmented(self, source: FilePieces, dst: str) -> BlobInfo:
        stage = self._staging_path()
        os.mkdir(stage, 0o700)
        try:
            stage_fd = os.open(stage, _DIR_FLAGS)
            try:
                for index, (name, size) in enumerate(source.pieces):
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
                        copy_fd_range(piece, 0, size, out)
                        os.fsync(out)
                    finally:
                        source.close_piece(piece)
                        os.close(out)
                os.fsync(stage_fd)
            finally:
                os.close(stage_fd)
            segments = f"{dst.rsplit('/', 1)[-1]}{SEGMENTS}{secrets.token_hex(16)}"
            self._replace(dst, stage, os.path.join(os.path.dirname(self._path(dst)), segments))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        parts = tuple((int(name), size) for name, size in source.pieces)
        return self._install_segmented(dst, _Manifest(segments, parts))

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
        self._check_parents(key)
        try:
            self._check_upload(key, upload_id, updir)
            holder = updir
        except UploadNotFound:
            # Completed before (perhaps cut short by a crash): completing again is safe.
            self._check_upload(key, upload_id, segdir)
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
            self._replace(key, updir, segdir)  # the parts become segments: no byte is copied
            fsync_dir(self._uploads)
        return self._install_segmented(key, _Manifest(segments, tuple(chosen)))

    def _retire(self, path: str) -> None:
        """Move a directory out of sight at once; delete it unless a reader still holds it."""
        try:
            os.rename(path, os.path.join(self._retired, secrets.token_hex(16)))
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
                pass  # a reader is still streaming from it; a later purge gets it
            finally:
                os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def _open_reader(self, key: str, byte_range: ByteRange | None) -> BlobReader:
        source = self._open_source(key)
        try:
            reader = FileReader(source, byte_range, lambda: _os_errors(key))
            if reader.content_length <= CHUNK_SIZE:
                reader.preload()
        except BaseException:
            source.close()
            raise
        return reader

    def _open_source(self, key: str) -> FilePieces:
        with _os_errors(key):
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
                        return FilePieces(st.st_size, st.st_mtime, fd=fd)
                    os.close(fd)  # a directory: the key is a prefix of other keys
                source = self._open_segmented(path)
                if source is not None:
                    return source
                # Neither, or segments already retired: a writer switched versions between
                # our looks. Look again.
            raise BlobNotFound(key)

    def _open_segmented(self, path: str) -> FilePieces | None:
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
            if same_file(segdir, dir_fd):  # not retired between our open and our lock
                pieces = [(_part_name(n), size) for n, size in manifest.parts]
                return FilePieces(manifest.size, mtime, dir_fd=dir_fd, pieces=pieces)
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
                if same_file(lock_path, fd):  # a sweeper did not remove it before we locked
                    return fd, ident
            except BlockingIOError:
                pass  # a sweeper holds it right now
            os.close(fd)
        raise BackendUnavailable(f"could not claim a staging area under {self._tmp}")

    def _sweep_dead_instances(self) -> None:
        """Remove the staging areas of instances that died: those whose lock is free."""
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
        with suppress(OSError):
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
        leaf = name.removesuffix(MANIFEST)
        if SEGMENT.fullmatch(leaf) is None:
            continue  # not a name a blob key makes: segments, or someone else's files
        try:
            if leaf != name:
                # With both present (a crash mid-switch), the whole blob is the current one.
                if leaf not in files and entry.is_file(follow_symlinks=False) \
                        and (rel + leaf).startswith(prefix):
                    infos.append(_segmented_info(rel + leaf, entry.path))
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
