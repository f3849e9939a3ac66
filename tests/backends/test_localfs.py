"""What only the local filesystem backend promises: layout, atomicity, crash leftovers,
containment."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import given
from hypothesis import strategies as st

import storage_backends._streams as streams
from storage_backends import (
    CHUNK_SIZE,
    BackendUnavailable,
    BlobNotFound,
    ByteRange,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidPart,
    PartRef,
    StorageError,
    UploadNotFound,
)
from storage_backends._keys import validate_blob_key
from storage_backends._localfs_files import UploadLock
from storage_backends._streams import locate, rechunk
from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend
from storage_backends.registry import open_backend
from storage_backends.s3 import S3Backend, S3Options

from . import Boom, MiB, body, failing_body, fetch, multipart, pattern, split
from .conftest import residue, staging_files

KEY = "b/7/ab/abcdef"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fs(tmp_path: Path) -> AsyncIterator[LocalFSBackend]:
    backend = LocalFSBackend(tmp_path / "objects")
    try:
        yield backend
    finally:
        await backend.aclose()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- layout --------------------------------------------------------------------------------


async def test_layout(fs: LocalFSBackend) -> None:
    await fs.put(KEY, body(b"whole"))
    assert (fs.root / "blobs" / KEY).read_bytes() == b"whole"
    assert (fs.root / "tmp" / f"{fs.instance_id}.lock").is_file()
    assert (fs.root / "tmp" / fs.instance_id).is_dir()

    upload_id = await fs.create_multipart("b/7/ab/mp")
    updir = fs.root / "uploads" / upload_id
    assert len(upload_id) == 32 and updir.is_dir()
    two = await fs.put_part("b/7/ab/mp", upload_id, 2, body(b"two"))
    one = await fs.put_part("b/7/ab/mp", upload_id, 1, body(b"one"))
    again = await fs.put_part("b/7/ab/mp", upload_id, 1, body(b"ONE"))
    await fs.put_part("b/7/ab/mp", upload_id, 3, body(b"unused"))
    assert all(re.fullmatch("[0-9a-f]{32}", p.token) for p in (one, two, again))
    assert (updir / f"00002.{two.token}").read_bytes() == b"two"
    assert (updir / f"00001.{one.token}").read_bytes() == b"one"  # attempts coexist
    assert (updir / f"00001.{again.token}").read_bytes() == b"ONE"
    assert len(os.listdir(updir)) == 5
    await fs.complete_multipart("b/7/ab/mp", upload_id, [PartRef(1, 3, one.token), PartRef(2)])
    assert not updir.exists()

    parent = fs.root / "blobs" / "b/7/ab"
    manifest = json.loads((parent / "mp@manifest").read_text())
    assert manifest["version"] == 2
    assert manifest["size"] == 6 and manifest["parts"] == [[1, 3, one.token], [2, 3, two.token]]
    assert manifest["segments"] == f"mp@seg-{upload_id}"
    segments = parent / manifest["segments"]
    names = sorted(p.name for p in segments.iterdir())
    assert names == [f"00001.{one.token}", f"00002.{two.token}", "key"]
    assert not (parent / "mp").exists()
    assert await fetch(fs, "b/7/ab/mp") == b"onetwo"
    assert staging_files(fs.root) == []


async def test_whole_and_segmented_names_cannot_collide(fs: LocalFSBackend) -> None:
    # The layout the brief sketched (blobs/<key>.seg/) would mix these two up.
    await fs.put("b/1/k.seg", body(b"a whole blob"))
    await multipart(fs, "b/1/k", [b"seg", b"mented"])
    await fs.put("b/1/k.seg.manifest", body(b"another"))
    assert await fetch(fs, "b/1/k.seg") == b"a whole blob"
    assert await fetch(fs, "b/1/k") == b"segmented"
    assert {i.key: i.size async for i in fs.list("b/1/")} == {
        "b/1/k.seg": 12, "b/1/k": 9, "b/1/k.seg.manifest": 7}


async def test_list_ignores_what_no_key_could_name(fs: LocalFSBackend) -> None:
    await fs.put(KEY, body(b"x"))
    blobs = fs.root / "blobs"
    (blobs / "lost+found").mkdir()
    (blobs / "lost+found" / "123").write_bytes(b"fsck leftovers")
    (blobs / ".nfs0001").write_bytes(b"")
    (blobs / "b" / "7" / "ab" / "x@seg-junk").mkdir()
    (blobs / "b" / "7" / "ab" / "link").symlink_to(blobs / KEY)
    assert [i.key async for i in fs.list()] == [KEY]


async def test_copy_hard_links_blobs_and_segments(fs: LocalFSBackend) -> None:
    await fs.put(KEY, body(b"immutable"))
    await fs.copy(KEY, "b/8/copy")
    src, dst = fs.root / "blobs" / KEY, fs.root / "blobs/b/8/copy"
    assert src.stat().st_ino == dst.stat().st_ino

    await multipart(fs, "b/8/mp", [b"a", b"b"])
    await fs.copy("b/8/mp", "b/8/mp2")
    one = json.loads((fs.root / "blobs/b/8/mp@manifest").read_text())
    two = json.loads((fs.root / "blobs/b/8/mp2@manifest").read_text())
    assert one["segments"] != two["segments"] and one["parts"] == two["parts"]
    name = f"00001.{one['parts'][0][2]}"
    first = fs.root / "blobs/b/8" / one["segments"] / name
    assert first.stat().st_ino == (fs.root / "blobs/b/8" / two["segments"] / name).stat().st_ino


async def test_copy_falls_back_to_streaming_when_links_fail(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(MiB + 5)
    await fs.put(KEY, body(data))
    await multipart(fs, "b/8/mp", [b"abc", b"def"])

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    await fs.copy(KEY, "b/8/copy")
    await fs.copy("b/8/mp", "b/8/mp2")
    upload_id = await fs.create_multipart("b/8/parts")
    await fs.copy_part("b/8/parts", upload_id, 1, KEY)
    await fs.complete_multipart("b/8/parts", upload_id, [PartRef(1)])
    monkeypatch.undo()
    assert (fs.root / "blobs" / KEY).stat().st_nlink == 1
    assert await fetch(fs, "b/8/copy") == data
    assert await fetch(fs, "b/8/mp2") == b"abcdef"
    assert await fetch(fs, "b/8/parts") == data


async def test_key_and_prefix_of_other_keys_conflict(fs: LocalFSBackend) -> None:
    await fs.put("a", body(b"a file"))
    with pytest.raises(InvalidBlobKey):
        await fs.put("a/b", body(b"x"))
    with pytest.raises(BlobNotFound):
        await fs.get("a/b")
    await fs.delete("a/b")
    await fs.put("c/d", body(b"x"))
    with pytest.raises(InvalidBlobKey):
        await fs.put("c", body(b"x"))
    with pytest.raises(BlobNotFound):
        await fs.head("c")


# -- atomicity and durability --------------------------------------------------------------


@pytest.mark.parametrize("size", [4096, 3 * MiB + 1], ids=["small", "large"])
async def test_put_fsyncs_the_file_and_its_directory(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    await fs.put(KEY, body(*split(pattern(size), [MiB // 2])))
    staging = str(fs.root / "tmp" / fs.instance_id)
    assert synced[0].startswith(staging + "/")  # the staging file, before its rename
    assert synced[1] == str(fs.root / "blobs/b/7/ab")


async def test_small_put_costs_one_thread_hop_and_a_cached_get_none(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    await fs.put(KEY, body(*split(pattern(4096), [1000])))
    assert len(hops) == 1
    hops.clear()
    # Just written, so in the page cache: read on the event loop.
    assert await fetch(fs, KEY) == pattern(4096)
    assert await fetch(fs, KEY, ByteRange(10, 20)) == pattern(4096)[10:20]
    assert hops == []
    if not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "posix_fadvise"):
        return
    # Evicted from the page cache (its pages are clean after the fsync): the read would
    # wait for the disk, so it goes to a thread. Whether this filesystem honours the
    # eviction is probed on another file: a probing read may start readahead of its own.
    probe_path = fs.root / "probe"
    probe_path.write_bytes(pattern(4096))
    fd = os.open(probe_path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            cached = os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT) == 4096
        except BlockingIOError:
            cached = False
    finally:
        os.close(fd)
        probe_path.unlink()
    if cached:
        pytest.skip("this filesystem keeps files cached after POSIX_FADV_DONTNEED")
    fd = os.open(fs._path(KEY), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert await fetch(fs, KEY) == pattern(4096)
    assert len(hops) == 1


async def test_large_bodies_are_written_in_chunks_of_at_least_one_mib(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = streams.write_all

    def recording(fd: int, data: bytes) -> None:
        writes.append(len(data))
        real(fd, data)

    monkeypatch.setattr(streams, "write_all", recording)
    data = pattern(5 * MiB + 3)
    await fs.put(KEY, body(*split(data, [4096, 100, 65536])))
    assert sum(writes) == len(data)
    assert all(n >= CHUNK_SIZE for n in writes[:-1])
    reader = await fs.get(KEY)
    assert all([len(chunk) <= CHUNK_SIZE async for chunk in reader])


async def test_disk_full_removes_the_staging_file(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fs.put(KEY, body(b"old"))
    calls = 0
    real = streams.write_all

    def filling(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(streams, "write_all", filling)
    with pytest.raises(InsufficientStorage):
        await fs.put(KEY, body(*split(pattern(4 * MiB), [MiB])))
    assert staging_files(fs.root) == []
    assert await fetch(fs, KEY) == b"old"


async def test_io_errors_while_reading_are_retryable(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fs.put(KEY, body(pattern(3 * MiB)))

    def broken(fd: int, length: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    def broken_nowait(*args: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(streams, "pread_exact", broken)
    monkeypatch.setattr(os, "preadv", broken_nowait)  # the page-cache read of small ranges
    reader = await fs.get(KEY)
    with pytest.raises(BackendUnavailable):
        async for _ in reader:
            pass
    with pytest.raises(BackendUnavailable):
        await fs.get(KEY, byte_range=ByteRange(0, 10))


async def test_failed_part_upload_leaves_no_staging(fs: LocalFSBackend) -> None:
    upload_id = await fs.create_multipart(KEY)
    with pytest.raises(Boom):
        await fs.put_part(KEY, upload_id, 1, failing_body(pattern(3 * MiB), exc=Boom()))
    assert staging_files(fs.root) == []
    assert os.listdir(fs.root / "uploads" / upload_id) == ["key"]


async def test_complete_interrupted_by_a_crash_can_be_repeated(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_id = await fs.create_multipart(KEY)
    old = await fs.put_part(KEY, upload_id, 1, body(b"old"))
    one = await fs.put_part(KEY, upload_id, 1, body(b"one"))
    two = await fs.put_part(KEY, upload_id, 2, body(b"two"))
    three = await fs.put_part(KEY, upload_id, 3, body(b"three"))
    refs = [PartRef(1, 3, one.token), PartRef(2, 3, two.token)]

    def crash(*args: Any) -> None:
        raise OSError(errno.EIO, "power went out")

    monkeypatch.setattr(fs, "_install_segmented", crash)
    with pytest.raises(BackendUnavailable):
        await fs.complete_multipart(KEY, upload_id, refs)
    monkeypatch.undo()
    with pytest.raises(BlobNotFound):
        await fs.head(KEY)
    # Completing again names the same attempts; others are no longer there to choose.
    for wrong in ([PartRef(1, 3, old.token), refs[1]], [*refs, PartRef(3, 5, three.token)],
                  [refs[0]]):
        with pytest.raises(InvalidPart):
            await fs.complete_multipart(KEY, upload_id, wrong)
    info = await fs.complete_multipart(KEY, upload_id, refs)
    assert info.size == 6 and await fetch(fs, KEY) == b"onetwo"
    again = await fs.complete_multipart(KEY, upload_id, [PartRef(1), PartRef(2)])  # latest
    assert again.size == 6 and await fetch(fs, KEY) == b"onetwo"
    assert residue(fs.root) == []


async def test_segments_a_crash_left_without_a_manifest_can_be_collected(
    fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between moving an upload's parts into the blob tree and writing the
    manifest, or between removing a manifest and its segments, leaves a segment directory
    no manifest names: listed (so garbage collection and fsck see it), removed by a
    delete of its key (an abort of the upload, or the collector)."""

    def crash(*args: Any) -> None:
        raise OSError(errno.EIO, "power went out")

    upload_id = await fs.create_multipart(KEY)
    await fs.put_part(KEY, upload_id, 1, body(b"one"))
    monkeypatch.setattr(fs, "_install_segmented", crash)
    with pytest.raises(BackendUnavailable):
        await fs.complete_multipart(KEY, upload_id, [PartRef(1)])
    monkeypatch.undo()
    assert [(i.key, i.size) async for i in fs.list()] == [(KEY, 3)]
    with pytest.raises(BlobNotFound):
        await fs.head(KEY)
    await fs.abort_multipart(KEY, upload_id)  # what an abort of the upload does
    await fs.delete(KEY)
    assert residue(fs.root) == [] and [i async for i in fs.list()] == []

    await multipart(fs, KEY, [b"seg", b"mented"])
    monkeypatch.setattr(fs, "_retire", crash)
    with pytest.raises(BackendUnavailable):
        await fs.delete(KEY)
    monkeypatch.undo()
    with pytest.raises(BlobNotFound):
        await fs.head(KEY)
    assert [(i.key, i.size) async for i in fs.list()] == [(KEY, 9)]
    await fs.delete(KEY)
    assert residue(fs.root) == [] and [i async for i in fs.list()] == []


def files_under(root: Path) -> list[str]:
    """Every file under ``root`` but instances' lock files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize("end", ["complete", "abort"])
async def test_late_part_upload_leaves_nothing_on_disk(fs: LocalFSBackend, end: str) -> None:
    await fs.put("b/7/src", body(b"source"))
    upload_id = await fs.create_multipart(KEY)
    await fs.put_part(KEY, upload_id, 1, body(b"one"))
    if end == "complete":
        await fs.complete_multipart(KEY, upload_id, [PartRef(1)])
    else:
        await fs.abort_multipart(KEY, upload_id)
    before = files_under(fs.root)
    with pytest.raises(UploadNotFound):
        await fs.put_part(KEY, upload_id, 1, body(b"late"))
    with pytest.raises(UploadNotFound):
        await fs.put_part(KEY, upload_id, 2, body(pattern(MiB), pattern(MiB)))
    with pytest.raises(UploadNotFound):
        await fs.copy_part(KEY, upload_id, 2, "b/7/src")
    await fs.delete_part(KEY, upload_id, 1, "0" * 32)
    assert files_under(fs.root) == before
    expected = ["blobs/b/7/src"]
    if end == "complete":
        segments = f"blobs/{KEY}@seg-{upload_id}"
        expected += [f"blobs/{KEY}@manifest", f"{segments}/key",
                     *(f"{segments}/{name}" for name in os.listdir(fs.root / segments)
                       if name.startswith("00001."))]
    assert before == sorted(expected)


async def test_completion_waits_for_a_part_being_installed(fs: LocalFSBackend) -> None:
    """A part installs under a shared lock of its upload; completing takes it exclusively."""
    upload_id = await fs.create_multipart(KEY)
    await fs.put_part(KEY, upload_id, 1, body(b"one"))
    updir = fs.root / "uploads" / upload_id
    lock = UploadLock(str(updir), upload_id, exclusive=False)  # a part upload's last step
    async with anyio.create_task_group() as tg:
        tg.start_soon(fs.complete_multipart, KEY, upload_id, [PartRef(1)])
        try:  # the completion's thread waits for the lock: release it whatever happens
            await anyio.sleep(0.2)
            assert updir.is_dir()  # not chosen nor moved while the part goes in
            # The part that was going in lands, as the latest attempt.
            (updir / ("00001." + "f" * 32)).write_bytes(b"ONE")
        finally:
            lock.release()
    assert await fetch(fs, KEY) == b"ONE"


async def test_part_waiting_for_a_completion_keeps_nothing(fs: LocalFSBackend) -> None:
    """The window the lock closes: the upload moves away while a part waits to go in."""
    upload_id = await fs.create_multipart(KEY)
    await fs.put_part(KEY, upload_id, 1, body(b"one"))
    updir = str(fs.root / "uploads" / upload_id)
    moved = fs.root / "moved"
    lock = UploadLock(updir, upload_id, exclusive=True)  # a completion, choosing
    failed = anyio.Event()

    async def late() -> None:
        with pytest.raises(UploadNotFound):
            await fs.put_part(KEY, upload_id, 1, body(b"late"))
        failed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
        try:  # the part's thread waits for the lock: release it whatever happens
            await anyio.sleep(0.2)
            assert not failed.is_set()  # waiting for the lock, its bytes staged
            assert len(staging_files(fs.root)) == 1
            os.rename(updir, moved)  # ...which then moves the upload into the blob tree
        finally:
            lock.release()
        with anyio.fail_after(5):
            await failed.wait()
    names = sorted(os.listdir(moved))  # the key and the attempt of before: nothing late
    assert len(names) == 2 and names[1] == "key" and names[0].startswith("00001.")
    assert (moved / names[0]).read_bytes() == b"one"
    assert staging_files(fs.root) == []


async def test_blobs_and_uploads_from_before_part_tokens(fs: LocalFSBackend) -> None:
    """Version 1 manifests name segments <NNNNN>; uploads held parts under those names."""
    parent = fs.root / "blobs" / "b" / "7"
    segments = parent / ("old@seg-" + "a" * 32)
    segments.mkdir(parents=True)
    (segments / "key").write_bytes(b"b/7/old")
    (segments / "00001").write_bytes(b"legacy ")
    (segments / "00002").write_bytes(b"segments")
    doc = {"version": 1, "segments": segments.name, "size": 15, "parts": [[1, 7], [2, 8]]}
    (parent / "old@manifest").write_text(json.dumps(doc))
    assert await fetch(fs, "b/7/old") == b"legacy segments"
    assert await fetch(fs, "b/7/old", ByteRange(5, 9)) == b"y se"
    await fs.copy("b/7/old", "b/7/copy")
    assert await fetch(fs, "b/7/copy") == b"legacy segments"
    assert {i.key: i.size async for i in fs.list("b/7/")} == {"b/7/old": 15, "b/7/copy": 15}

    upload_id = await fs.create_multipart(KEY)
    updir = fs.root / "uploads" / upload_id
    (updir / "00001").write_bytes(b"stored before tokens ")
    (updir / "00002").write_bytes(b"superseded")
    await fs.put_part(KEY, upload_id, 2, body(b"and after"))
    await fs.complete_multipart(KEY, upload_id, [PartRef(1, 21), PartRef(2)])
    assert await fetch(fs, KEY) == b"stored before tokens and after"
    assert residue(fs.root) == []


async def test_tokens_never_reach_a_path(fs: LocalFSBackend, tmp_path: Path) -> None:
    victim = fs.root / "uploads" / "victim"
    victim.write_bytes(b"not an attempt")
    upload_id = await fs.create_multipart(KEY)
    part = await fs.put_part(KEY, upload_id, 1, body(b"one"))
    for token in ["../victim", "/etc/passwd", "0" * 31 + "/", "0" * 32 + "/../../victim",
                  part.token.upper(), part.token + "0"]:
        await fs.delete_part(KEY, upload_id, 1, token)
        with pytest.raises(InvalidPart):
            await fs.complete_multipart(KEY, upload_id, [PartRef(1, token=token)])
    assert victim.read_bytes() == b"not an attempt"
    await fs.complete_multipart(KEY, upload_id, [PartRef(1, 3, part.token)])


async def test_part_tokens_increase(fs: LocalFSBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Completing without tokens takes the greatest: the attempt stored last, even when the
    clock stands still."""
    monkeypatch.setattr("time.time_ns", lambda: 1_700_000_000_000_000_000)
    upload_id = await fs.create_multipart(KEY)
    tokens = [(await fs.put_part(KEY, upload_id, 1, body(b"%d" % i))).token for i in range(20)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 20
    await fs.complete_multipart(KEY, upload_id, [PartRef(1)])
    assert await fetch(fs, KEY) == b"19"


async def test_segmented_blob_survives_reopening(tmp_path: Path) -> None:
    parts = [pattern(MiB + 1, seed=1), pattern(17, seed=2), pattern(MiB, seed=3)]
    first = LocalFSBackend(tmp_path)
    data = await multipart(first, KEY, parts)
    await first.aclose()
    second = LocalFSBackend(tmp_path)
    try:
        assert await fetch(second, KEY) == data
        got = await fetch(second, KEY, ByteRange(MiB, MiB + 20))
        assert got == data[MiB : MiB + 20]
        assert [i.size async for i in second.list()] == [len(data)]
    finally:
        await second.aclose()


async def test_deleted_segments_wait_for_their_last_reader(fs: LocalFSBackend) -> None:
    data = await multipart(fs, KEY, [pattern(MiB, seed=1), pattern(MiB, seed=2)])
    reader = await fs.get(KEY)
    chunks = aiter(reader)
    first = await anext(chunks)
    await fs.delete(KEY)
    retired = fs.root / "tmp" / "retired"
    assert len(os.listdir(retired)) == 1
    assert first + b"".join([c async for c in chunks]) == data
    await reader.aclose()
    await multipart(fs, "b/7/other", [b"x"])
    await fs.delete("b/7/other")  # any later retirement sweeps the leftovers
    assert os.listdir(retired) == []


async def test_no_descriptor_outlives_its_reader(fs: LocalFSBackend) -> None:
    await fs.put(KEY, body(pattern(3 * MiB)))
    await multipart(fs, "b/7/mp", [pattern(MiB), pattern(MiB), pattern(MiB)])
    before = len(os.listdir("/proc/self/fd"))
    for key in (KEY, "b/7/mp"):
        for byte_range in (None, ByteRange(10, 20), ByteRange(MiB - 1, 2 * MiB + 1)):
            assert await fetch(fs, key, byte_range)
            reader = await fs.get(key, byte_range=byte_range)
            chunks = aiter(reader)
            await anext(chunks)
            await reader.aclose()  # abandoned midway
            await fs.head(key)
    await fs.copy("b/7/mp", "b/7/mp2")
    await fs.delete("b/7/mp")
    assert len(os.listdir("/proc/self/fd")) == before


async def test_corrupt_manifest(fs: LocalFSBackend) -> None:
    await multipart(fs, KEY, [b"abc"])
    (fs.root / "blobs" / f"{KEY}@manifest").write_text("{not json")
    with pytest.raises(StorageError):
        await fs.get(KEY)
    assert [(i.key, i.size) async for i in fs.list()] == [(KEY, 0)]
    await fs.delete(KEY)
    assert [i async for i in fs.list()] == []
    await fs.put(KEY, body(b"fresh"))
    assert await fetch(fs, KEY) == b"fresh"


# -- staging areas across processes --------------------------------------------------------


@pytest.mark.parametrize("with_lock_file", [True, False])
async def test_dead_instances_staging_is_removed(tmp_path: Path, with_lock_file: bool) -> None:
    dead = tmp_path / "tmp" / "0123456789abcdef"
    dead.mkdir(parents=True)
    (dead / "17").write_bytes(b"half an upload")
    if with_lock_file:
        (tmp_path / "tmp" / "0123456789abcdef.lock").touch()
    (tmp_path / "tmp" / "unrelated").mkdir()
    backend = LocalFSBackend(tmp_path)
    try:
        assert not dead.exists()
        assert not (tmp_path / "tmp" / "0123456789abcdef.lock").exists()
        assert (tmp_path / "tmp" / "unrelated").exists()
    finally:
        await backend.aclose()
    assert sorted(os.listdir(tmp_path / "tmp")) == ["retired", "unrelated"]


async def test_live_instance_keeps_its_staging(tmp_path: Path) -> None:
    first = LocalFSBackend(tmp_path)
    staging = tmp_path / "tmp" / first.instance_id
    started, release = anyio.Event(), anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield pattern(MiB)
        yield pattern(MiB)
        started.set()
        await release.wait()
        yield b"end"

    async with anyio.create_task_group() as tg:
        tg.start_soon(first.put, KEY, slow_body())
        await started.wait()
        await anyio.sleep(0.05)
        in_flight = os.listdir(staging)
        assert len(in_flight) == 1
        second = LocalFSBackend(tmp_path)
        assert os.listdir(staging) == in_flight
        assert second.instance_id != first.instance_id
        release.set()
    assert (await first.head(KEY)).size == 2 * MiB + 3
    await second.aclose()
    assert staging.exists()
    await first.aclose()
    assert not staging.exists()
    assert sorted(os.listdir(tmp_path / "tmp")) == ["retired"]


CHILD = textwrap.dedent("""
    import os, sys, time
    from storage_backends.localfs import LocalFSBackend
    backend = LocalFSBackend(sys.argv[1])
    with open(os.path.join(sys.argv[1], "tmp", backend.instance_id, "0"), "wb") as f:
        f.write(b"an upload in progress")
    print(backend.instance_id, flush=True)
    time.sleep(120)
""")


def test_staging_of_a_killed_process_is_removed(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE, cwd=REPO, text=True,
    )
    try:
        assert child.stdout is not None
        ident = child.stdout.readline().strip()
        staging = tmp_path / "tmp" / ident
        assert (staging / "0").exists()
        alive = LocalFSBackend(tmp_path)  # the child holds its lock: its files stay
        anyio.run(alive.aclose)
        assert (staging / "0").exists()
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    after = LocalFSBackend(tmp_path)
    try:
        assert not staging.exists()
        assert not (tmp_path / "tmp" / f"{ident}.lock").exists()
    finally:
        anyio.run(after.aclose)


# -- containment ---------------------------------------------------------------------------


async def test_symlinked_blob_is_not_followed(fs: LocalFSBackend, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the root")
    link = fs.root / "blobs" / "b" / "evil"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with pytest.raises(StorageError, match="symbolic link"):
        await fs.get("b/evil")
    with pytest.raises(StorageError):
        await fs.head("b/evil")
    with pytest.raises(StorageError):
        await fs.copy("b/evil", "b/copied")
    await fs.put("b/evil", body(b"replaces the link, not the target"))
    assert secret.read_bytes() == b"outside the root"
    assert not link.is_symlink()


async def test_symlinked_directory_is_not_followed(fs: LocalFSBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside the root")
    (fs.root / "blobs" / "b").mkdir()
    (fs.root / "blobs" / "b" / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        await fs.get("b/escape/secret")
    with pytest.raises(StorageError):
        await fs.put("b/escape/new", body(b"x"))
    with pytest.raises(StorageError):
        await fs.put("b/escape/deeper/new", body(b"x"))
    with pytest.raises(StorageError):
        await fs.delete("b/escape/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert [i.key async for i in fs.list()] == []


async def test_upload_ids_cannot_reach_outside(fs: LocalFSBackend, tmp_path: Path) -> None:
    (tmp_path / "victim").mkdir()
    for upload_id in ["../../victim", "/etc", "..", "0" * 31 + "/"]:
        await fs.abort_multipart(KEY, upload_id)
        with pytest.raises(StorageError):
            await fs.put_part(KEY, upload_id, 1, body(b"x"))
    assert (tmp_path / "victim").is_dir()


# -- the registry --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "fs", "file", " FS "])
async def test_registry_opens_the_local_backend(tmp_path: Path, url: str) -> None:
    backend = open_backend(url, data_dir=tmp_path)
    try:
        assert isinstance(backend, LocalFSBackend)
        assert backend.root == (tmp_path / "objects").resolve()
    finally:
        await backend.aclose()


async def test_registry_other_backends(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory", data_dir=tmp_path), MemoryBackend)
    elsewhere = open_backend(f"fs://{tmp_path}/other", data_dir=tmp_path)
    assert isinstance(elsewhere, LocalFSBackend)
    assert elsewhere.root == (tmp_path / "other").resolve()
    await elsewhere.aclose()
    upstream = open_backend("s3://bucket/some/prefix/", data_dir=tmp_path,
                            s3=S3Options(endpoint="http://127.0.0.1:9", access_key="k",
                                         secret_key="s"))
    assert isinstance(upstream, S3Backend)
    assert (upstream.bucket, upstream.prefix) == ("bucket", "some/prefix/")
    await upstream.aclose()
    for bad in ("fs://relative/path", "s3://", "s3:///no-bucket"):
        with pytest.raises(ValueError):
            open_backend(bad, data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown storage backend"):
        open_backend("ftp://example", data_dir=tmp_path)
    assert not (tmp_path / "objects").exists()


# -- shared helpers ------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(min_value=1, max_value=256))
def test_rechunk_coalesces_without_losing_bytes(pieces: list[bytes], size: int) -> None:
    async def run() -> list[bytes]:
        return [chunk async for chunk in rechunk(body(*pieces), size)]

    chunks = anyio.run(run)
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) >= size for chunk in chunks[:-1])
    assert all(chunks)
    assert all(len(chunk) < size + 300 for chunk in chunks)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12), st.data())
def test_locate_covers_exactly_the_range(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    start = data.draw(st.integers(min_value=0, max_value=total))
    end = data.draw(st.integers(min_value=start, max_value=total))
    blob = b"".join(bytes([i]) * n for i, n in enumerate(sizes))
    pieces = [bytes([i]) * n for i, n in enumerate(sizes)]
    extents = locate(sizes, start, end)
    assert b"".join(pieces[i][o : o + n] for i, o, n in extents) == blob[start:end]
    assert all(n > 0 for _, _, n in extents)


def test_validate_blob_key() -> None:
    assert validate_blob_key("b/12/4f9c") == "b/12/4f9c"
    for bad in ["a/..", "..", ".", "a/./b", "a\x00b", "a/b/", "ab\n"]:
        with pytest.raises(InvalidBlobKey):
            validate_blob_key(bad)
