"""Files under a local backend's root that need no backend: the mapping of native errors,
the manifest format of segmented blobs, opening segments, scanning the blob tree, part
attempts in upload directories, and the instances' staging areas and retired directories
(see :mod:`storage_backends.localfs`).

Everything here blocks; call it off the event loop.
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
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from storage_backends._keys import MAX_PART_NUMBER, SEGMENT
from storage_backends._streams import (
    FilePieces,
    StagedFile,
    copy_fd_range,
    fsync_dir,
    read_small,
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
from storage_backends.protocol import BlobInfo, PartRef

MANIFEST = "@manifest"
SEGMENTS = "@seg-"
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
#: What this backend makes as part tokens; anything else names no attempt.
TOKEN = re.compile(r"[0-9a-f]{32}")
# A part attempt's file: <NNNNN>.<token>. Segments of blobs completed before attempts had
# tokens (version 1 manifests) and parts uploaded then are named <NNNNN> alone.
_ATTEMPT = re.compile(r"([0-9]{5})(?:\.([0-9a-f]{32}))?")
INSTANCE_ID = re.compile(r"[0-9a-f]{16}")
SEGMENT_DIR = re.compile(SEGMENT.pattern + r"@seg-[0-9a-f]{32}")
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# The medium misbehaves or ran out of a transient resource: the caller may retry later.
TRANSIENT = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN, errno.EROFS,
                       errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# Hard links are an optimisation; these mean "not here", and a streamed copy follows.
NO_LINK = frozenset({errno.EMLINK, errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EACCES})
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


@contextmanager
def os_errors(key: str, *, writing: bool = False) -> Iterator[None]:
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
        if exc.errno in FULL:
            raise InsufficientStorage(str(exc)) from exc
        if exc.errno in TRANSIENT:
            raise BackendUnavailable(str(exc)) from exc
        if exc.errno == errno.ELOOP:
            raise StorageError(f"refusing to follow a symbolic link for {key!r}") from exc
        raise


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


#: One part attempt as a segment: part number, size, token (None: from before tokens).
Segment = tuple[int, int, str | None]


def attempt_name(part_number: int, token: str | None) -> str:
    return f"{part_number:05d}" if token is None else f"{part_number:05d}.{token}"


def parse_attempt(name: str) -> tuple[int, str | None] | None:
    """The part number and token an attempt's file name holds; None for any other name."""
    match = _ATTEMPT.fullmatch(name)
    if match is None or not 1 <= int(match[1]) <= MAX_PART_NUMBER:
        return None
    return int(match[1]), match[2]


# -- segmented blobs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    segments: str
    parts: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.parts)

    @property
    def pieces(self) -> list[tuple[str, int]]:
        return [(attempt_name(n, token), size) for n, size, token in self.parts]

    @classmethod
    def of_pieces(cls, segments: str, pieces: Sequence[tuple[str, int]]) -> Manifest:
        """The manifest of a copy of another segmented blob, from its pieces."""
        parts: list[Segment] = []
        for name, size in pieces:
            parsed = parse_attempt(name)
            assert parsed is not None  # the names come from a valid manifest
            parts.append((parsed[0], size, parsed[1]))
        return cls(segments, tuple(parts))

    def encode(self) -> bytes:
        doc = {"version": 2, "segments": self.segments, "size": self.size,
               "parts": [list(part) for part in self.parts]}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
            version = doc["version"]
            parts: tuple[Segment, ...]
            if version == 1:
                parts = tuple((int(n), int(s), None) for n, s in doc["parts"])
            else:
                parts = tuple((int(n), int(s), None if t is None else str(t))
                              for n, s, t in doc["parts"])
            manifest = cls(str(doc["segments"]), parts)
            valid = (version in (1, 2) and manifest.size == doc["size"]
                     and SEGMENT_DIR.fullmatch(manifest.segments) is not None
                     and all(1 <= n <= MAX_PART_NUMBER and s >= 0
                             and (t is None or TOKEN.fullmatch(t) is not None)
                             for n, s, t in manifest.parts))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"corrupt manifest {where}") from exc
        if not valid:
            raise StorageError(f"corrupt manifest {where}")
        return manifest


def open_segmented(path: str) -> FilePieces | None:
    """The segments of the blob at ``path``, locked for reading; None if there are none now."""
    try:
        raw, mtime = read_small(path + MANIFEST)
    except FileNotFoundError:
        return None
    manifest = Manifest.decode(raw, path + MANIFEST)
    segdir = os.path.join(os.path.dirname(path), manifest.segments)
    try:
        dir_fd = os.open(segdir, DIR_FLAGS)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if same_file(segdir, dir_fd):  # not retired between our open and our lock
            return FilePieces(manifest.size, mtime, dir_fd=dir_fd, pieces=manifest.pieces)
    except BlockingIOError:
        pass  # being deleted right now
    os.close(dir_fd)
    return None


def link_pieces(source: FilePieces, stage: str) -> None:
    """Hard-link a segmented blob's pieces into the directory ``stage``, durably; pieces
    that cannot be linked are copied."""
    stage_fd = os.open(stage, DIR_FLAGS)
    try:
        for index, (name, size) in enumerate(source.pieces):
            try:
                os.link(name, name, src_dir_fd=source.dir_fd, dst_dir_fd=stage_fd,
                        follow_symlinks=False)
                continue
            except OSError as exc:
                if exc.errno not in NO_LINK:
                    raise
            out = os.open(name, CREATE_FLAGS, 0o600, dir_fd=stage_fd)
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


def scan(blobs: str, rel: str, prefix: str) -> tuple[list[BlobInfo], list[str]]:
    """One directory of the blob tree: its blobs under ``prefix``, and subdirectories to visit."""
    infos: list[BlobInfo] = []
    subdirs: list[str] = []
    try:
        entries = sorted(os.scandir(os.path.join(blobs, rel)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return infos, subdirs
    files = {entry.name for entry in entries if entry.is_file(follow_symlinks=False)}
    strays: set[str] = set()
    for entry in entries:
        name = entry.name
        leaf = name.removesuffix(MANIFEST)
        if SEGMENT.fullmatch(leaf) is None:
            if SEGMENT_DIR.fullmatch(name) is not None:
                stray = name.partition(SEGMENTS)[0]
                if stray not in files and stray + MANIFEST not in files \
                        and stray not in strays and (rel + stray).startswith(prefix):
                    strays.add(stray)
                    with suppress(FileNotFoundError):
                        infos.append(stray_info(rel + stray, entry.path))
            continue  # not a name a blob key makes: segments, or someone else's files
        try:
            if leaf != name:
                # With both present (a crash mid-switch), the whole blob is the current one.
                if leaf not in files and entry.is_file(follow_symlinks=False) \
                        and (rel + leaf).startswith(prefix):
                    infos.append(segmented_info(rel + leaf, entry.path))
            elif entry.is_dir(follow_symlinks=False):
                sub = f"{rel}{name}/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    subdirs.append(sub)
            elif entry.is_file(follow_symlinks=False) and (rel + name).startswith(prefix):
                st = entry.stat(follow_symlinks=False)
                infos.append(BlobInfo(rel + name, st.st_size, utc(st.st_mtime)))
        except FileNotFoundError:
            continue  # deleted while we looked
    return infos, subdirs


def stray_info(key: str, segments_path: str) -> BlobInfo:
    """Segments no manifest names, as a blob of ``key`` to garbage-collect: a crash left
    them between moving an upload's parts in and writing the manifest, or between removing
    a manifest and its segments (``LocalFSBackend.delete`` removes them)."""
    mtime = os.stat(segments_path, follow_symlinks=False).st_mtime
    size = 0
    for entry in os.scandir(segments_path):
        with suppress(FileNotFoundError):
            size += entry.stat(follow_symlinks=False).st_size if entry.name != "key" else 0
    return BlobInfo(key, size, utc(mtime))


def segmented_info(key: str, manifest_path: str) -> BlobInfo:
    raw, mtime = read_small(manifest_path)
    try:
        size = Manifest.decode(raw, manifest_path).size
    except StorageError:
        size = 0  # still listed, so that garbage collection can remove it
    return BlobInfo(key, size, utc(mtime))


# -- part attempts in upload directories ---------------------------------------------------


def create_upload(uploads: str, stage: str, key: str) -> str:
    """A new upload for ``key``, prepared in the staging directory ``stage``; its id."""
    upload_id = secrets.token_hex(16)
    os.mkdir(stage, 0o700)
    try:
        marker = StagedFile(os.path.join(stage, "key"))
        marker.open()
        marker.write(key.encode())
        marker.seal()
        fsync_dir(stage)
        os.rename(stage, os.path.join(uploads, upload_id))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(uploads)
    return upload_id


class Tokens:
    """Part tokens: 16 hex digits of the wall clock in nanoseconds, then 16 random ones.

    Hex strings of one length sort like the times they start with, so the attempt of a part
    stored last has the greatest token: what completing without tokens chooses. Tokens this
    instance makes strictly increase, even when the clock stands still or steps back; across
    instances (processes) they are ordered by the clock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def new(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            now = self._last
        return f"{now:016x}{secrets.token_hex(8)}"


class UploadLock:
    """An upload ``flock``'ed through its key file, and its directory, open; a context
    manager that yields the directory's descriptor and lets go of both on exit.

    Installing or deleting an attempt holds the lock shared; completing and aborting, which
    move the directory away, hold it exclusively. So an upload still at ``updir`` under the
    lock stays there until the lock is released, and an attempt renamed into it either lands
    before a completion chooses, or not at all. The key file, not the directory, carries the
    lock: the directory becomes a blob's segments, whose lock belongs to their readers.

    Raises ``UploadNotFound`` if the upload is gone, or goes while we wait for the lock.
    """

    def __init__(self, updir: str, upload_id: str, *, exclusive: bool) -> None:
        key_path = os.path.join(updir, "key")
        with _upload_errors(upload_id):
            self._key_fd = os.open(key_path, READ_FLAGS)
        try:
            fcntl.flock(self._key_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if not same_file(key_path, self._key_fd):  # completed or aborted meanwhile
                raise UploadNotFound(upload_id)
            with _upload_errors(upload_id):
                self.dir_fd = os.open(updir, DIR_FLAGS)
        except BaseException:
            os.close(self._key_fd)
            raise

    def __enter__(self) -> int:
        return self.dir_fd

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Close both descriptors, which drops the lock; idempotent."""
        fds, self.dir_fd, self._key_fd = (self.dir_fd, self._key_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


@contextmanager
def _upload_errors(upload_id: str) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UploadNotFound(upload_id) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link planted there
            raise UploadNotFound(upload_id) from exc
        raise


def install_attempt(updir: str, upload_id: str, name: str, staged: str) -> None:
    """Rename a sealed staging file into the upload as the attempt ``name``, durably.

    Raises ``UploadNotFound`` (leaving ``staged`` to its owner) if the upload is gone.
    """
    with UploadLock(updir, upload_id, exclusive=False) as dir_fd:
        os.rename(staged, name, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)


def check_upload(key: str, upload_id: str, updir: str) -> None:
    """Raise ``UploadNotFound`` unless ``updir`` is an upload (or its segments) for ``key``."""
    try:
        if not stat.S_ISDIR(os.lstat(updir).st_mode):  # a link planted there, say
            raise UploadNotFound(upload_id)
        owner = read_small(os.path.join(updir, "key"))[0]
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UploadNotFound(upload_id) from exc
    if owner != key.encode():
        raise UploadNotFound(upload_id)


def choose_attempts(holder: str, parts: Sequence[PartRef]) -> tuple[Segment, ...]:
    """The attempts ``parts`` name among those in the directory ``holder``, with their sizes.

    A reference with a token names that attempt; one without, the part's greatest token
    (one from before tokens counts as the oldest).
    """
    attempts: dict[int, dict[str | None, os.DirEntry[str]]] = {}
    with os.scandir(holder) as entries:
        for entry in entries:
            parsed = parse_attempt(entry.name)
            if parsed is not None:
                attempts.setdefault(parsed[0], {})[parsed[1]] = entry
    chosen: list[Segment] = []
    for ref in parts:
        found = attempts.get(ref.part_number, {})
        token = ref.token if ref.token is not None or not found else max(found, key=_age)
        attempt = found.get(token)
        if attempt is None:
            raise InvalidPart(ref.part_number, "missing" if token is None else "no such attempt")
        st = attempt.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidPart(ref.part_number, "not a regular file")
        if ref.size is not None and ref.size != st.st_size:
            raise InvalidPart(ref.part_number, f"size {st.st_size}, not {ref.size}")
        chosen.append((ref.part_number, st.st_size, token))
    return tuple(chosen)


def _age(token: str | None) -> str:
    return token or ""


def keep_only(dir_fd: int, chosen: Iterable[Segment]) -> None:
    """Unlink everything in the upload open as ``dir_fd`` but its key and ``chosen``."""
    keep = {attempt_name(n, token) for n, _, token in chosen} | {"key"}
    for name in os.listdir(dir_fd):
        if name not in keep:
            os.unlink(name, dir_fd=dir_fd)
    os.fsync(dir_fd)  # before the directory becomes segments: completing again checks them


def choose_completed(segdir: str, parts: Sequence[PartRef]) -> tuple[Segment, ...]:
    """Completing again: ``parts`` must name exactly the attempts the upload became."""
    chosen = choose_attempts(segdir, parts)
    names = {attempt_name(n, token) for n, _, token in chosen}
    with os.scandir(segdir) as entries:
        for entry in entries:
            parsed = parse_attempt(entry.name)
            if parsed is not None and entry.name not in names:
                raise InvalidPart(parsed[0], "the upload was completed with other parts")
    return chosen


# -- instances, their staging areas, and retired directories -------------------------------


def purge_retired(retired: str) -> None:
    """Delete every retired directory no reader holds any more."""
    for entry in os.scandir(retired):
        try:
            fd = os.open(entry.path, DIR_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry.path, ignore_errors=True)
        except BlockingIOError:
            pass  # a reader is still streaming from it; a later purge gets it
        finally:
            os.close(fd)


def claim_instance(tmp: str) -> tuple[int, str]:
    """A new instance id under ``tmp``, and the descriptor of its lock file, held locked."""
    for _attempt in range(10):
        ident = secrets.token_hex(8)
        lock_path = os.path.join(tmp, f"{ident}.lock")
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
    raise BackendUnavailable(f"could not claim a staging area under {tmp}")


def sweep_dead_instances(tmp: str, alive: str) -> None:
    """Remove the staging areas of instances that died: those whose lock is free."""
    idents = {entry.name.removesuffix(".lock") for entry in os.scandir(tmp)}
    for ident in idents - {alive}:
        if INSTANCE_ID.fullmatch(ident) is None:
            continue
        lock_path = os.path.join(tmp, f"{ident}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = -1  # owners create the lock before the directory: no lock, no owner
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(os.path.join(tmp, ident), ignore_errors=True)
            if fd >= 0:
                os.unlink(lock_path)
        except (BlockingIOError, FileNotFoundError):
            pass  # alive, or another sweeper got there first
        finally:
            if fd >= 0:
                os.close(fd)
