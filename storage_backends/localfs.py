"""The default backend: blobs as files under one root directory.

Layout under ``root``::

    blobs/<key>                      a whole blob (the key's segments are directories)
    blobs/<key>@manifest             a blob completed from parts: JSON naming its segments
    blobs/<key>@seg-<id>/<NNNNN>.<token>  ...and its segments: part attempts, moved, not copied
    uploads/<id>/key                 a multipart upload: the key it belongs to
    uploads/<id>/<NNNNN>.<token>     ...and its part attempts (every put_part makes a new one)
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

Every part upload stores a new attempt under a new token; completing moves the chosen
attempts (by token, or the latest of each part) into the blob tree and unlinks the rest.
An upload is ``flock``'ed through its key file (see ``UploadLock``): shared while an attempt
is renamed into it or deleted, exclusively while a completion chooses and moves it, or an
abort retires it. So an attempt that races a completion lands before the choice, or fails
with ``UploadNotFound`` and leaves nothing behind.

A crash can leave segments no manifest names (between moving an upload's parts in and
writing the manifest, or between removing a manifest and its segments): ``list`` reports
them under their key, so that garbage collection finds them, and ``delete`` removes them.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import aclosing, suppress
from itertools import count
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
from anyio import to_thread

from storage_backends._keys import check_part_list, check_part_number, validate_blob_key
from storage_backends._localfs_files import (
    MANIFEST,
    NO_LINK,
    READ_FLAGS,
    SEGMENT_DIR,
    SEGMENTS,
    TOKEN,
    UPLOAD_ID,
    Manifest,
    Tokens,
    UploadLock,
    attempt_name,
    check_upload,
    choose_attempts,
    choose_completed,
    claim_instance,
    create_upload,
    install_attempt,
    keep_only,
    link_pieces,
    open_segmented,
    os_errors,
    purge_retired,
    scan,
    sweep_dead_instances,
    utc,
)  # fmt: skip
from storage_backends._streams import (
    FilePieces,
    FileReader,
    StagedFile,
    discarding,
    fsync_dir,
    read_small,
    rechunk,
    resolve_range,
)  # fmt: skip
from storage_backends.errors import (
    BlobNotFound,
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


#: Reads up to this size are tried on the event loop, from the page cache (see
#: ``LocalFSBackend._cached_reader``).
CACHED_READ_MAX = 256 * 1024


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
        self._lock_fd, self.instance_id = claim_instance(self._tmp)
        self._staging = os.path.join(self._tmp, self.instance_id)
        self._names = count()
        self._tokens = Tokens()
        self._closed = False
        try:
            os.mkdir(self._staging, 0o700)
            sweep_dead_instances(self._tmp, self.instance_id)
            purge_retired(self._retired)
        except BaseException:
            self._shutdown()
            raise

    # -- blobs -----------------------------------------------------------------------------

    def blob_name(self, bucket: str, key: str) -> None:
        return None

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo:
        """``size`` is only a hint; the body decides."""
        validate_blob_key(key)
        return await self._receive(key, body, lambda staged: self._install_whole(key, staged),
                                   precheck=lambda: self._check_parents(key))

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> BlobReader:
        validate_blob_key(key)
        with os_errors(key):
            reader = self._cached_reader(key, byte_range)
            if reader is not None:
                await anyio.lowlevel.checkpoint()  # still a point where other tasks run
                return reader
            return await to_thread.run_sync(self._open_reader, key, byte_range)

    async def head(self, key: str) -> BlobInfo:
        validate_blob_key(key)

        def head() -> BlobInfo:
            source = self._open_source(key)
            source.close()
            return BlobInfo(key, source.size, utc(source.mtime))

        with os_errors(key):
            return await to_thread.run_sync(head)

    async def delete(self, key: str) -> None:
        validate_blob_key(key)

        def delete() -> None:
            try:
                self._check_parents(key)
            except NotADirectoryError:
                return  # a prefix of the key is a blob, so this key cannot be one
            path = self._path(key)
            dropped = self._drop_segmented(path)
            try:
                os.unlink(path)
            except (FileNotFoundError, IsADirectoryError):
                if not dropped:  # nothing named the key: perhaps a crash's remains
                    self._drop_strays(path)

        with os_errors(key, writing=True):
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

        with os_errors(dst, writing=True):
            return await to_thread.run_sync(copy)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose key starts with ``prefix``, a directory per thread hop; unordered."""
        pending = [""]
        while pending:
            rel = pending.pop()
            with os_errors(prefix):
                infos, subdirs = await to_thread.run_sync(scan, self._blobs, rel, prefix)
            for info in infos:
                yield info
            pending.extend(reversed(subdirs))

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str) -> str:
        validate_blob_key(key)

        with os_errors(key, writing=True):
            stage = self._staging_path()
            return await to_thread.run_sync(create_upload, self._uploads, stage, key)

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
            token = self._tokens.new()
            install_attempt(updir, upload_id, attempt_name(part_number, token), staged.path)
            return PartInfo(part_number, staged.size, token)

        return await self._receive(key, body, install,
                                   precheck=lambda: check_upload(key, upload_id, updir))

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
            check_upload(key, upload_id, updir)
            staged = self._link_whole(src) if byte_range is None else None
            if staged is None:
                source = self._open_source(src)
                try:
                    staged = self._stage_range(source, byte_range)
                finally:
                    source.close()
            token = self._tokens.new()
            with discarding(staged):
                install_attempt(updir, upload_id, attempt_name(part_number, token), staged.path)
            return PartInfo(part_number, staged.size, token)

        with os_errors(key, writing=True):
            return await to_thread.run_sync(copy_part)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        updir = self._upload_dir(key, upload_id)
        check_part_list(parts)
        with os_errors(key, writing=True):
            return await to_thread.run_sync(self._complete, key, upload_id, updir, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            updir = self._upload_dir(key, upload_id)
        except UploadNotFound:
            return

        def abort() -> None:
            with suppress(UploadNotFound), UploadLock(updir, upload_id, exclusive=True):
                check_upload(key, upload_id, updir)
                self._retire(updir)

        with os_errors(key, writing=True):
            await to_thread.run_sync(abort)

    async def delete_part(self, key: str, upload_id: str, part_number: int, token: str) -> None:
        try:
            updir = self._upload_dir(key, upload_id)
        except UploadNotFound:
            return
        check_part_number(part_number)
        if not isinstance(token, str) or TOKEN.fullmatch(token) is None:
            return  # not a token this backend makes: no attempt has it

        def delete_part() -> None:
            with suppress(UploadNotFound), UploadLock(updir, upload_id, exclusive=False) as fd:
                check_upload(key, upload_id, updir)
                with suppress(FileNotFoundError):
                    os.unlink(attempt_name(part_number, token), dir_fd=fd)

        with os_errors(key, writing=True):
            await to_thread.run_sync(delete_part)

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
        if not isinstance(upload_id, str) or UPLOAD_ID.fullmatch(upload_id) is None:
            raise UploadNotFound(str(upload_id))
        return os.path.join(self._uploads, upload_id)

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
                    with os_errors(key, writing=True):
                        return await to_thread.run_sync(at_once, first)
                with os_errors(key, writing=True):
                    await to_thread.run_sync(begin, first, second)
                del first, second
                async for chunk in chunks:
                    with os_errors(key, writing=True):
                        await to_thread.run_sync(staged.write, chunk)
                with os_errors(key, writing=True):
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
            if exc.errno in NO_LINK:
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
        return BlobInfo(key, staged.size, utc(staged.mtime))

    def _install_segmented(self, key: str, manifest: Manifest) -> BlobInfo:
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
        return BlobInfo(key, manifest.size, utc(staged.mtime))

    def _drop_segmented(self, path: str) -> bool:
        """Remove the manifest at ``path`` and its segments; whether there was one."""
        manifest = self._read_manifest(path)
        try:
            os.unlink(path + MANIFEST)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if manifest is not None:
            self._retire(os.path.join(os.path.dirname(path), manifest.segments))
        else:  # too corrupt to name its segments
            self._drop_strays(path)
        return True

    def _drop_strays(self, path: str) -> None:
        """Retire the segment directories of ``path`` that no manifest names (see
        ``stray_info``)."""
        parent, leaf = os.path.split(path)
        try:
            names = os.listdir(parent)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            if name.startswith(leaf + SEGMENTS) and SEGMENT_DIR.fullmatch(name):
                self._retire(os.path.join(parent, name))

    def _read_manifest(self, path: str) -> Manifest | None:
        """For writers: None when there is none, or one too corrupt to name its segments."""
        try:
            return Manifest.decode(read_small(path + MANIFEST)[0], path + MANIFEST)
        except (FileNotFoundError, NotADirectoryError, StorageError):
            return None

    def _copy_segmented(self, source: FilePieces, dst: str) -> BlobInfo:
        stage = self._staging_path()
        os.mkdir(stage, 0o700)
        try:
            link_pieces(source, stage)
            segments = f"{dst.rsplit('/', 1)[-1]}{SEGMENTS}{secrets.token_hex(16)}"
            self._replace(dst, stage, os.path.join(os.path.dirname(self._path(dst)), segments))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return self._install_segmented(dst, Manifest.of_pieces(segments, source.pieces))

    def _complete(
        self, key: str, upload_id: str, updir: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        path = self._path(key)
        segments = f"{key.rsplit('/', 1)[-1]}{SEGMENTS}{upload_id}"
        segdir = os.path.join(os.path.dirname(path), segments)
        self._check_parents(key)
        try:
            lock = UploadLock(updir, upload_id, exclusive=True)
        except UploadNotFound:
            # Completed before (perhaps cut short by a crash): completing again is safe.
            check_upload(key, upload_id, segdir)
            chosen = choose_completed(segdir, parts)
        else:
            with lock as dir_fd:
                check_upload(key, upload_id, updir)
                chosen = choose_attempts(updir, parts)
                keep_only(dir_fd, chosen)
                self._replace(key, updir, segdir)  # the parts become segments: no byte copied
                fsync_dir(self._uploads)
        return self._install_segmented(key, Manifest(segments, chosen))

    def _retire(self, path: str) -> None:
        """Move a directory out of sight at once; delete it unless a reader still holds it."""
        try:
            os.rename(path, os.path.join(self._retired, secrets.token_hex(16)))
        except FileNotFoundError:
            return
        purge_retired(self._retired)

    # -- reading ---------------------------------------------------------------------------

    def _open_reader(self, key: str, byte_range: ByteRange | None) -> BlobReader:
        source = self._open_source(key)
        try:
            reader = FileReader(source, byte_range, lambda: os_errors(key))
            if reader.content_length <= CHUNK_SIZE:
                reader.preload()
        except BaseException:
            source.close()
            raise
        return reader

    def _cached_reader(self, key: str, byte_range: ByteRange | None) -> BlobReader | None:
        """On the event loop, a small read served from the page cache (a thread hop costs
        more than the read); None: take the blocking path in a thread. The path lookups
        are metadata the kernel caches; the data read never waits for the disk."""
        try:
            self._check_parents(key)
            fd = os.open(self._path(key), READ_FLAGS)
        except OSError:
            return None  # missing, segmented (a directory), or anything else: the slow path
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            source = FilePieces(st.st_size, st.st_mtime, fd=fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            reader = FileReader(source, byte_range, lambda: os_errors(key))
            if reader.content_length <= CACHED_READ_MAX and reader.preload_cached():
                return reader
        except BaseException:
            source.close()
            raise
        source.close()
        return None

    def _open_source(self, key: str) -> FilePieces:
        with os_errors(key):
            self._check_parents(key)
            path = self._path(key)
            for _attempt in range(3):
                try:
                    fd = os.open(path, READ_FLAGS)
                except FileNotFoundError:
                    pass
                else:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode):
                        return FilePieces(st.st_size, st.st_mtime, fd=fd)
                    os.close(fd)  # a directory: the key is a prefix of other keys
                source = open_segmented(path)
                if source is not None:
                    return source
                # Neither, or segments already retired: a writer switched versions between
                # our looks. Look again.
            raise BlobNotFound(key)

    # -- instances and their staging areas -------------------------------------------------

    def _shutdown(self) -> None:
        with suppress(OSError):
            purge_retired(self._retired)
        shutil.rmtree(self._staging, ignore_errors=True)
        try:
            os.unlink(os.path.join(self._tmp, f"{self.instance_id}.lock"))
        finally:
            os.close(self._lock_fd)

