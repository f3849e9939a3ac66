"""The contract every backend keeps; each test runs once per backend in ``conftest.FACTORIES``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, timedelta
from functools import partial

import anyio
import anyio.lowlevel
import pytest

from storage_backends import (
    Backend,
    BlobInfo,
    BlobNotFound,
    ByteRange,
    InvalidBlobKey,
    InvalidPart,
    PartInfo,
    PartRef,
    StorageError,
    UploadNotFound,
)

from . import Boom, MiB, body, failing_body, fetch, multipart, pattern, read, split
from .conftest import Harness

KEY = "b/12/4f/4f9c0e2a"


# -- whole blobs ---------------------------------------------------------------------------


async def test_put_get_head_delete(backend: Backend) -> None:
    info = await backend.put(KEY, body(b"hello, ", b"world"), size=12)
    assert (info.key, info.size) == (KEY, 12)
    assert info.last_modified is not None and info.last_modified.tzinfo is not None
    assert abs(info.last_modified - info.last_modified.now(UTC)) < timedelta(minutes=1)

    reader = await backend.get(KEY)
    assert (reader.size, reader.range, reader.content_length) == (12, None, 12)
    assert await read(reader) == b"hello, world"

    head = await backend.head(KEY)
    assert (head.key, head.size) == (KEY, 12)

    await backend.delete(KEY)
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)
    with pytest.raises(BlobNotFound):
        await backend.get(KEY)


async def test_empty_body(backend: Backend) -> None:
    assert (await backend.put(KEY, body())).size == 0
    assert (await backend.put("b/12/empty-pieces", body(b"", b""))).size == 0
    reader = await backend.get(KEY)
    assert (reader.size, reader.content_length) == (0, 0)
    assert await read(reader) == b""
    assert (await backend.head("b/12/empty-pieces")).size == 0


async def test_large_body_in_odd_pieces(backend: Backend) -> None:
    # Of unknown size and over 8 MiB: an upstream backend spools it, past memory to disk.
    data = pattern(9 * MiB + 12_345)
    pieces = split(data, [1, 7919, 65_537, 3, 2 * MiB + 1, 0, 104_729])
    assert (await backend.put(KEY, body(*pieces))).size == len(data)
    reader = await backend.get(KEY)
    chunks = [chunk async for chunk in reader]
    await reader.aclose()
    assert b"".join(chunks) == data
    assert all(chunk for chunk in chunks)


#: (start, end) of the ranges read from a blob of 3 MiB written in pieces of MiB // 3.
RANGES = {"first-byte": (0, 1), "start": (0, 100), "middle": (1000, 2 * MiB + 17),
          "last-byte": (3 * MiB - 1, 3 * MiB), "to-end": (12, 3 * MiB), "all": (0, 3 * MiB),
          "chunk-boundary": (MiB, MiB + 1)}


async def test_ranges(backend: Backend) -> None:
    data = pattern(3 * MiB)
    await backend.put(KEY, body(*split(data, [MiB // 3])))
    for name, (start, end) in RANGES.items():
        reader = await backend.get(KEY, byte_range=ByteRange(start, end))
        assert reader.size == len(data), name
        assert reader.range == ByteRange(start, end), name
        assert reader.content_length == end - start, name
        assert await read(reader) == data[start:end], name


async def test_range_beyond_the_blob_is_a_bug(backend: Backend) -> None:
    await backend.put(KEY, body(b"0123456789"))
    with pytest.raises(ValueError):
        await backend.get(KEY, byte_range=ByteRange(5, 11))


async def test_get_missing_raises_before_iteration(backend: Backend) -> None:
    with pytest.raises(BlobNotFound) as info:
        await backend.get(KEY)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(BlobNotFound):
        await backend.get(KEY, byte_range=ByteRange(0, 1))
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)


async def test_delete_is_idempotent(backend: Backend) -> None:
    await backend.delete(KEY)
    await backend.put(KEY, body(b"x"))
    await backend.delete(KEY)
    await backend.delete(KEY)
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["small", "large"])
async def test_reader_opened_before_overwrite_and_delete_reads_old_bytes(
    backend: Backend, size: int
) -> None:
    old, new = pattern(size, seed=1), pattern(size + 5, seed=2)
    await backend.put(KEY, body(*split(old, [MiB])))
    reader = await backend.get(KEY)
    chunks = aiter(reader)
    first = await anext(chunks)
    await backend.put(KEY, body(*split(new, [MiB])))
    assert await fetch(backend, KEY) == new
    await backend.delete(KEY)
    assert first + b"".join([chunk async for chunk in chunks]) == old
    await reader.aclose()


@pytest.mark.parametrize("sizes", [[10, 20], [MiB, MiB, MiB + 5]], ids=["small", "large"])
async def test_failing_body_leaves_nothing(harness: Harness, sizes: list[int]) -> None:
    backend = harness.backend
    await backend.put(KEY, body(b"old bytes"))
    pieces = [pattern(n, seed=n) for n in sizes]
    error = Boom("client went away")
    for key in (KEY, "b/12/new"):
        with pytest.raises(Boom) as raised:
            await backend.put(key, failing_body(*pieces, exc=error))
        assert raised.value is error
    assert await fetch(backend, KEY) == b"old bytes"
    with pytest.raises(BlobNotFound):
        await backend.head("b/12/new")
    assert harness.leftovers() == []


async def test_os_error_from_the_body_propagates_unchanged(harness: Harness) -> None:
    error = ConnectionResetError("peer reset")
    with pytest.raises(ConnectionResetError) as raised:
        await harness.backend.put(KEY, failing_body(b"abc", exc=error))
    assert raised.value is error
    assert harness.leftovers() == []


async def test_cancelled_put_leaves_nothing(harness: Harness) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield pattern(2 * MiB)
        yield pattern(2 * MiB)
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    with anyio.move_on_after(0.2):
        await harness.backend.put(KEY, endless())
    with pytest.raises(BlobNotFound):
        await harness.backend.head(KEY)
    assert harness.leftovers() == []


INVALID_KEYS = ["../x", "/abs", "a//b", "a/../b", "", "x" * 600, "a\\b", "a/.hidden", "a/",
                "./a", "a/b/c/d/e/f/g/h/i", "a b", "a@b", "é", "a\nb", "-a", "a/" + "x" * 129]


async def test_invalid_blob_keys_are_refused(backend: Backend) -> None:
    await backend.put(KEY, body(b"x"))
    for key in INVALID_KEYS:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "put": partial(backend.put, key, body(b"x")),
            "get": partial(backend.get, key),
            "head": partial(backend.head, key),
            "delete": partial(backend.delete, key),
            "create_multipart": partial(backend.create_multipart, key),
            "copy to": partial(backend.copy, KEY, key),
            "copy from": partial(backend.copy, key, KEY),
        }
        for name, call in calls.items():
            try:
                await call()
            except InvalidBlobKey:
                continue
            pytest.fail(f"{name} took the key {key!r}")
    assert await fetch(backend, KEY) == b"x"


#: Each is put, read and deleted in turn ("a" is a file, then a directory on localfs).
VALID_KEYS = ["a", "b/12/4f9c", "A-b_c.d", "/".join("abcdefgh"), "x" * 128,
              "/".join(["y" * 63] * 8)]


async def test_valid_blob_keys(backend: Backend) -> None:
    for key in VALID_KEYS:
        await backend.put(key, body(key.encode()))
        assert await fetch(backend, key) == key.encode(), key
        await backend.delete(key)


async def test_copy(backend: Backend) -> None:
    data = pattern(2 * MiB + 3)
    await backend.put(KEY, body(data))
    info = await backend.copy(KEY, "b/13/copy")
    assert (info.key, info.size) == ("b/13/copy", len(data))
    await backend.delete(KEY)
    assert await fetch(backend, "b/13/copy") == data
    await backend.put("b/13/other", body(b"other"))
    await backend.copy("b/13/other", "b/13/copy")  # over an existing blob
    assert await fetch(backend, "b/13/copy") == b"other"
    with pytest.raises(BlobNotFound):
        await backend.copy(KEY, "b/13/never")
    with pytest.raises(BlobNotFound):
        await backend.head("b/13/never")


async def test_list_with_prefix(harness: Harness) -> None:
    backend = harness.backend
    keys = ["b/1/aa/x1", "b/1/aa/x2", "b/1/ab/y", "b/10/aa/z", "b/2/aa/w", "c"]
    for i, key in enumerate(keys):
        await backend.put(key, body(b"." * i))
    joined = await multipart(harness, "b/1/ac/m", [b"12", b"345"])

    async def listed(prefix: str) -> dict[str, int]:
        infos: list[BlobInfo] = [info async for info in backend.list(prefix)]
        assert all(i.last_modified is not None and i.last_modified.tzinfo for i in infos)
        return {info.key: info.size for info in infos}

    everything = await listed("")
    assert everything == {**{key: i for i, key in enumerate(keys)}, "b/1/ac/m": len(joined)}
    assert set(await listed("b/1/")) == {"b/1/aa/x1", "b/1/aa/x2", "b/1/ab/y", "b/1/ac/m"}
    assert set(await listed("b/1")) == set(everything) - {"c", "b/2/aa/w"}
    assert set(await listed("b/1/aa/x")) == {"b/1/aa/x1", "b/1/aa/x2"}
    assert set(await listed("b/1/aa/x1")) == {"b/1/aa/x1"}
    assert await listed("nothing") == {}


async def test_capabilities(harness: Harness) -> None:
    backend = harness.backend
    assert isinstance(backend, Backend)
    assert backend.capabilities.server_side_copy
    assert backend.capabilities.native_multipart
    # An S3 upstream keeps only the last upload of each part number.
    assert backend.capabilities.part_attempts is not harness.name.startswith("s3")


async def test_reader_closed_midway_and_twice(harness: Harness) -> None:
    backend = harness.backend
    await backend.put(KEY, body(pattern(3 * MiB)))
    await multipart(harness, "b/1/m", [pattern(MiB), pattern(MiB), pattern(MiB)])
    for key in (KEY, "b/1/m"):
        reader = await backend.get(key)
        chunks = aiter(reader)
        assert len(await anext(chunks)) > 0
        await reader.aclose()  # abandoned midway
        await reader.aclose()
        with pytest.raises(RuntimeError):
            await read(reader)


async def test_concurrent_puts_of_one_key_leave_one_complete_version(backend: Backend) -> None:
    versions = [pattern(size, seed=i) for i, size in enumerate([10, 2 * MiB + 1, 5000] * 4)]

    async def put(data: bytes) -> None:
        await backend.put(KEY, body(*split(data, [100_000])))

    seen: list[bytes] = []

    async def reader() -> None:
        for _ in range(10):
            with contextlib.suppress(BlobNotFound):
                seen.append(await fetch(backend, KEY))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for data in versions:
            tg.start_soon(put, data)
        tg.start_soon(reader)
    assert await fetch(backend, KEY) in versions
    assert all(data in versions for data in seen)


async def test_readers_never_miss_a_blob_switching_between_kinds(harness: Harness) -> None:
    """Whole and multipart versions replace each other while readers keep reading."""
    backend = harness.backend
    # Over the network fewer (each call takes milliseconds, and where multipart versions are
    # padded, megabytes): each kind still replaces the other four times.
    rounds = 8 if harness.name.startswith("s3") else 16
    pieces = [[f"whole {i}".encode()] if i % 2 == 0
              else [harness.pad(f"seg {i}|".encode()), f"seg {i}|".encode() * 2]
              for i in range(rounds)]
    versions = [b"".join(parts) for parts in pieces]
    await backend.put(KEY, body(versions[0]))
    writing = True

    async def writer() -> None:
        nonlocal writing
        for parts in pieces[1:]:
            if len(parts) == 1:
                await backend.put(KEY, body(parts[0]))
            else:
                await multipart(backend, KEY, parts)
        writing = False

    async def reader() -> None:
        while writing:
            assert await fetch(backend, KEY) in versions

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        for _ in range(4):
            tg.start_soon(reader)
    assert await fetch(backend, KEY) == versions[-1]


# -- multipart -----------------------------------------------------------------------------


async def test_multipart_out_of_order_and_reuploaded_parts(harness: Harness) -> None:
    backend = harness.backend
    upload_id = await backend.create_multipart(KEY)
    p1, p2 = harness.pad(pattern(MiB + 7, seed=1)), harness.pad(pattern(10, seed=2))
    p3 = pattern(2 * MiB, seed=3)
    assert (await backend.put_part(KEY, upload_id, 3, body(p3))).size == len(p3)
    await backend.put_part(KEY, upload_id, 1, body(b"wrong first part"))
    info = await backend.put_part(KEY, upload_id, 2, body(*split(p2, [3, 3, 3, MiB])))
    assert (info.part_number, info.size) == (2, len(p2))
    await backend.put_part(KEY, upload_id, 1, body(*split(p1, [4096])))  # the latest attempt
    refs = [PartRef(1, len(p1)), PartRef(2, len(p2)), PartRef(3)]
    done = await backend.complete_multipart(KEY, upload_id, refs)
    assert (done.key, done.size) == (KEY, len(p1) + len(p2) + len(p3))
    assert await fetch(backend, KEY) == p1 + p2 + p3
    assert (await backend.head(KEY)).size == done.size
    with pytest.raises(UploadNotFound):
        await backend.put_part(KEY, upload_id, 4, body(b"late"))
    assert harness.leftovers() == []
    assert harness.residue() == []  # the unchosen attempt of part 1 went with the upload


async def test_multipart_complete_with_a_subset(harness: Harness) -> None:
    backend = harness.backend
    parts = [harness.pad(f"<{n}>".encode()) for n in range(1, 5)] + [b"<5>"]
    upload_id = await backend.create_multipart(KEY)
    for n, data in enumerate(parts, start=1):
        await backend.put_part(KEY, upload_id, n, body(data))
    await backend.complete_multipart(KEY, upload_id, [PartRef(2), PartRef(3), PartRef(5)])
    assert await fetch(backend, KEY) == parts[1] + parts[2] + b"<5>"


async def test_multipart_ranges_across_part_boundaries(harness: Harness) -> None:
    backend = harness.backend
    parts = [pattern(size, seed=i) for i, size in enumerate([5, MiB + 3, 1, 0, 7, 2 * MiB])]
    parts = [harness.pad(part) for part in parts[:-1]] + parts[-1:]
    sizes = [len(part) for part in parts]
    data = await multipart(backend, KEY, parts)
    boundaries = {0, len(data)}
    offset = 0
    for size in sizes:
        offset += size
        boundaries |= {offset - 1, offset, offset + 1}
    points = sorted(p for p in boundaries if 0 <= p <= len(data))
    limiter = anyio.CapacityLimiter(4)  # a few reads at a time: over the network, faster

    async def check(start: int, end: int) -> None:
        async with limiter:
            got = await fetch(backend, KEY, ByteRange(start, end))
        assert got == data[start:end], (start, end)

    async with anyio.create_task_group() as tg:
        for start in points:
            for end in points:
                if start < end and (end - start <= 20 or start in (0, sizes[0])
                                    or end == len(data)):
                    tg.start_soon(check, start, end)
    reader = await backend.get(KEY, byte_range=ByteRange(4, 6 + MiB))
    assert (reader.size, reader.content_length) == (len(data), MiB + 2)
    assert await read(reader) == data[4 : 6 + MiB]


async def test_multipart_unknown_upload(backend: Backend) -> None:
    await backend.put("b/1/src", body(b"source"))
    for upload_id in ["0" * 32, "../../blobs", "", "not-hex"]:
        with pytest.raises(UploadNotFound):
            await backend.put_part(KEY, upload_id, 1, body(b"x"))
        with pytest.raises(UploadNotFound):
            await backend.copy_part(KEY, upload_id, 1, "b/1/src")
        with pytest.raises(UploadNotFound):
            await backend.complete_multipart(KEY, upload_id, [PartRef(1)])
        await backend.abort_multipart(KEY, upload_id)
    other = await backend.create_multipart("b/other")
    with pytest.raises(UploadNotFound):  # an upload belongs to its key
        await backend.put_part(KEY, other, 1, body(b"x"))
    await backend.abort_multipart(KEY, other)  # not this key's: left alone
    await backend.put_part("b/other", other, 1, body(b"x"))


async def test_multipart_missing_or_mismatched_parts(harness: Harness) -> None:
    backend = harness.backend
    one = harness.pad(b"one")
    upload_id = await backend.create_multipart(KEY)
    await backend.put_part(KEY, upload_id, 1, body(one))
    await backend.put_part(KEY, upload_id, 2, body(b"two"))
    for refs, bad in [
        ([PartRef(1), PartRef(3)], 3),
        ([PartRef(1, len(one)), PartRef(2, 4)], 2),
        ([PartRef(1), PartRef(1)], 1),
        ([PartRef(0)], 0),
        ([PartRef(10_001)], 10_001),
    ]:
        with pytest.raises(InvalidPart) as raised:
            await backend.complete_multipart(KEY, upload_id, refs)
        assert raised.value.part_number == bad
    with pytest.raises(InvalidPart):
        await backend.complete_multipart(KEY, upload_id, [])
    for number in (0, 10_001):
        with pytest.raises(InvalidPart):
            await backend.put_part(KEY, upload_id, number, body(b"x"))
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)
    # Nothing was consumed by the failures: the upload still completes.
    await backend.complete_multipart(KEY, upload_id, [PartRef(1, len(one)), PartRef(2, 3)])
    assert await fetch(backend, KEY) == one + b"two"


async def test_multipart_abort_is_idempotent(harness: Harness) -> None:
    backend = harness.backend
    upload_id = await backend.create_multipart(KEY)
    await backend.put_part(KEY, upload_id, 1, body(b"x" * 100))
    await backend.abort_multipart(KEY, upload_id)
    await backend.abort_multipart(KEY, upload_id)
    with pytest.raises(UploadNotFound):
        await backend.put_part(KEY, upload_id, 2, body(b"y"))
    with pytest.raises(UploadNotFound):
        await backend.complete_multipart(KEY, upload_id, [PartRef(1)])
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)
    assert harness.leftovers() == []
    assert harness.residue() == []


async def test_multipart_failing_part_body_keeps_the_previous_part(harness: Harness) -> None:
    backend = harness.backend
    upload_id = await backend.create_multipart(KEY)
    await backend.put_part(KEY, upload_id, 1, body(b"good"))
    with pytest.raises(Boom):
        await backend.put_part(KEY, upload_id, 1, failing_body(pattern(2 * MiB), exc=Boom()))
    await backend.complete_multipart(KEY, upload_id, [PartRef(1, 4)])
    assert await fetch(backend, KEY) == b"good"
    assert harness.leftovers() == []


async def test_copy_part(harness: Harness) -> None:
    backend = harness.backend
    extra = harness.min_part_size  # so that the ranges copied make parts long enough
    src = pattern(3 * MiB + 11 + extra)
    await backend.put("b/1/src", body(src))
    msrc = await multipart(harness, "b/1/msrc", [b"abc", b"defg"])  # "abc" padded, "defg"
    upload_id = await backend.create_multipart(KEY)
    first = ByteRange(MiB - 1, 2 * MiB + 1 + extra)
    info = await backend.copy_part(KEY, upload_id, 1, "b/1/src", first)
    assert (info.part_number, info.size) == (1, MiB + 2 + extra)
    assert (await backend.copy_part(KEY, upload_id, 2, "b/1/src")).size == len(src)
    third = ByteRange(2, len(msrc) - 2)
    assert (await backend.copy_part(KEY, upload_id, 3, "b/1/msrc", third)).size == third.length
    assert (await backend.copy_part(KEY, upload_id, 4, "b/1/msrc")).size == len(msrc)
    with pytest.raises(BlobNotFound):
        await backend.copy_part(KEY, upload_id, 5, "b/1/none")
    await backend.delete("b/1/src")  # parts do not depend on their source afterwards
    await backend.complete_multipart(KEY, upload_id, [PartRef(n) for n in (1, 2, 3, 4)])
    expected = src[first.start : first.end] + src + msrc[2:-2] + msrc
    assert await fetch(backend, KEY) == expected


async def test_segmented_blobs_behave_like_whole_ones(harness: Harness) -> None:
    backend = harness.backend
    data = await multipart(harness, KEY, [pattern(MiB + 1, seed=1), pattern(MiB, seed=2)])
    copied = await backend.copy(KEY, "b/2/copy")
    assert copied.size == len(data)
    reader = await backend.get(KEY)
    iterator = aiter(reader)
    first = await anext(iterator)
    await backend.delete(KEY)  # a read in progress is not torn
    await backend.delete(KEY)
    assert first + b"".join([chunk async for chunk in iterator]) == data
    await reader.aclose()
    with pytest.raises(BlobNotFound):
        await backend.get(KEY)
    assert await fetch(backend, "b/2/copy") == data
    assert [i.key async for i in backend.list("b/2/")] == ["b/2/copy"]


async def test_switching_between_whole_and_segmented_versions(harness: Harness) -> None:
    backend = harness.backend
    await backend.put(KEY, body(b"whole 1"))
    second = await multipart(harness, KEY, [b"segmented ", b"2"])
    assert await fetch(backend, KEY) == second
    third = await multipart(harness, KEY, [b"segmented ", b"3", b"!"])
    assert await fetch(backend, KEY) == third
    reader = await backend.get(KEY)
    await backend.put(KEY, body(b"whole 4"))
    assert await read(reader) == third
    assert await fetch(backend, KEY) == b"whole 4"
    await backend.copy(KEY, "b/9/x")
    await multipart(harness, "b/9/y", [b"y"])
    await backend.copy("b/9/y", "b/9/x")
    assert await fetch(backend, "b/9/x") == b"y"
    await backend.copy(KEY, "b/9/x")
    assert await fetch(backend, "b/9/x") == b"whole 4"
    listed = {info.key: info.size async for info in backend.list("")}
    assert listed == {KEY: 7, "b/9/x": 7, "b/9/y": 1}


# -- part attempts and their tokens --------------------------------------------------------
#
# With ``capabilities.part_attempts`` every upload of a part number is an attempt of its own
# until dropped; without it (an S3 upstream) the last upload of a number replaces the
# earlier ones: their tokens no longer match at completion (InvalidPart) and delete_part has
# nothing to drop. Each test asserts whichever of the two the backend declares.


async def test_each_part_upload_is_a_distinct_attempt(harness: Harness) -> None:
    backend = harness.backend
    first, second = pattern(1000, seed=31), pattern(1000, seed=32)
    lead = harness.pad(b"<")
    for pick in (0, 1):
        key = f"b/3/attempt-{pick}"
        upload_id = await backend.create_multipart(key)
        one = await backend.put_part(key, upload_id, 1, body(lead))
        attempts = [await backend.put_part(key, upload_id, 3, body(data))
                    for data in (first, second)]
        assert [(a.part_number, a.size) for a in attempts] == [(3, 1000), (3, 1000)]
        assert isinstance(one.token, str) and one.token
        assert len({one.token, *(a.token for a in attempts)}) == 3
        chosen = attempts[pick]
        refs = [PartRef(1, len(lead), one.token), PartRef(3, 1000, chosen.token)]
        if not backend.capabilities.part_attempts and pick == 0:
            # The second upload of part 3 replaced the first: its token is stale.
            with pytest.raises(InvalidPart) as raised:
                await backend.complete_multipart(key, upload_id, refs)
            assert raised.value.part_number == 3
            with pytest.raises(BlobNotFound):
                await backend.head(key)
            pick, refs[1] = 1, PartRef(3, 1000, attempts[1].token)  # nothing was consumed
        assert (await backend.complete_multipart(key, upload_id, refs)).size == len(lead) + 1000
        assert await fetch(backend, key) == lead + (first, second)[pick]
    assert harness.residue() == []


async def test_completing_with_a_stale_or_unknown_token(harness: Harness) -> None:
    """Holds with and without part attempts: ``old`` was deleted, or replaced by ``new``."""
    backend = harness.backend
    old_data, new_data = harness.pad(b"old"), harness.pad(b"new")
    upload_id = await backend.create_multipart(KEY)
    old = await backend.put_part(KEY, upload_id, 1, body(old_data))
    new = await backend.put_part(KEY, upload_id, 1, body(new_data))
    two = await backend.put_part(KEY, upload_id, 2, body(b"two"))
    await backend.delete_part(KEY, upload_id, 1, old.token)
    for token in [old.token, "0" * 32, "f" * 32, "../../blobs/x", "", two.token]:
        with pytest.raises(InvalidPart) as raised:
            await backend.complete_multipart(KEY, upload_id, [PartRef(1, token=token)])
        assert raised.value.part_number == 1
    with pytest.raises(InvalidPart) as raised:  # the right attempt, the wrong size
        await backend.complete_multipart(KEY, upload_id, [PartRef(1, len(new_data) + 1, new.token),
                                                          PartRef(2, 3, two.token)])
    assert raised.value.part_number == 1
    with pytest.raises(BlobNotFound):
        await backend.head(KEY)
    # Nothing was consumed by the failures.
    refs = [PartRef(1, len(new_data), new.token), PartRef(2, 3, two.token)]
    await backend.complete_multipart(KEY, upload_id, refs)
    assert await fetch(backend, KEY) == new_data + b"two"


async def test_multipart_completes_parts_in_the_order_given(harness: Harness) -> None:
    """The service lists parts by ascending number (S3's rule). The local stores join any
    order as given; an S3 upstream refuses another order, consuming nothing."""
    backend = harness.backend
    two = harness.pad(b"two")
    upload_id = await backend.create_multipart(KEY)
    one = await backend.put_part(KEY, upload_id, 1, body(harness.pad(b"one")))
    second = await backend.put_part(KEY, upload_id, 2, body(two))
    refs = [PartRef(2, len(two), second.token), PartRef(1, len(harness.pad(b"one")),
                                                         one.token)]
    if harness.name.startswith("s3"):
        with pytest.raises(InvalidPart) as raised:
            await backend.complete_multipart(KEY, upload_id, refs)
        assert raised.value.part_number == 1
        await backend.complete_multipart(KEY, upload_id, refs[::-1])
        assert await fetch(backend, KEY) == harness.pad(b"one") + two
    else:
        await backend.complete_multipart(KEY, upload_id, refs)
        assert await fetch(backend, KEY) == two + harness.pad(b"one")
    assert harness.residue() == []


async def test_delete_part_removes_one_attempt_and_is_idempotent(harness: Harness) -> None:
    backend = harness.backend
    a_data, b_data = harness.pad(b"attempt a"), harness.pad(b"attempt b")
    upload_id = await backend.create_multipart(KEY)
    a = await backend.put_part(KEY, upload_id, 1, body(a_data))
    b = await backend.put_part(KEY, upload_id, 1, body(b_data))
    c = await backend.put_part(KEY, upload_id, 2, body(b"!"))
    for _ in range(2):
        await backend.delete_part(KEY, upload_id, 1, b.token)
    await backend.delete_part(KEY, upload_id, 1, c.token)  # part 2's token: not part 1's
    await backend.delete_part(KEY, upload_id, 2, "0" * 32)
    await backend.delete_part(KEY, upload_id, 2, "not a token")
    await backend.delete_part(KEY, "0" * 32, 1, a.token)  # unknown upload
    await backend.delete_part("b/other", upload_id, 1, a.token)  # not this key's upload
    if backend.capabilities.part_attempts:
        deleted, left = b, a_data
    else:
        # Nothing to delete: b, the last upload of part 1, is still there; a was replaced.
        deleted, left = a, b_data
    with pytest.raises(InvalidPart) as raised:
        await backend.complete_multipart(KEY, upload_id, [PartRef(1, token=deleted.token)])
    assert raised.value.part_number == 1
    # Without a token, the latest attempt that is left.
    await backend.complete_multipart(KEY, upload_id, [PartRef(1), PartRef(2, 1, c.token)])
    assert await fetch(backend, KEY) == left + b"!"
    await backend.delete_part(KEY, upload_id, 1, a.token)  # completed: still not an error
    assert harness.residue() == []


async def test_copy_part_makes_an_attempt_too(backend: Backend) -> None:
    await backend.put("b/1/src", body(b"0123456789"))
    upload_id = await backend.create_multipart(KEY)
    copied = await backend.copy_part(KEY, upload_id, 1, "b/1/src", ByteRange(2, 5))
    put = await backend.put_part(KEY, upload_id, 1, body(b"put"))
    assert (copied.part_number, copied.size) == (1, 3) and copied.token != put.token
    if backend.capabilities.part_attempts:
        await backend.complete_multipart(KEY, upload_id, [PartRef(1, 3, copied.token)])
        assert await fetch(backend, KEY) == b"234"
    else:  # the upload replaced the copy
        with pytest.raises(InvalidPart) as raised:
            await backend.complete_multipart(KEY, upload_id, [PartRef(1, 3, copied.token)])
        assert raised.value.part_number == 1
        await backend.complete_multipart(KEY, upload_id, [PartRef(1, 3, put.token)])
        assert await fetch(backend, KEY) == b"put"


@pytest.mark.parametrize("end", ["complete", "abort"])
async def test_part_upload_after_the_end_keeps_nothing(harness: Harness, end: str) -> None:
    backend = harness.backend
    await backend.put("b/1/src", body(b"source"))
    upload_id = await backend.create_multipart(KEY)
    one = await backend.put_part(KEY, upload_id, 1, body(b"one"))
    if end == "complete":
        await backend.complete_multipart(KEY, upload_id, [PartRef(1, 3, one.token)])
    else:
        await backend.abort_multipart(KEY, upload_id)
    for number in (1, 2):
        with pytest.raises(UploadNotFound):
            await backend.put_part(KEY, upload_id, number, body(b"late"))
        with pytest.raises(UploadNotFound):
            await backend.put_part(KEY, upload_id, number, body(pattern(MiB), pattern(MiB)))
        with pytest.raises(UploadNotFound):
            await backend.copy_part(KEY, upload_id, number, "b/1/src")
    assert harness.leftovers() == []
    assert harness.residue() == []
    if end == "complete":
        assert await fetch(backend, KEY) == b"one"


async def ending_body(
    backend: Backend, upload_id: str, finish: PartRef | None, size: int
) -> AsyncIterator[bytes]:
    """Two chunks, then the upload completes with ``finish`` (or is aborted), then one more."""
    yield pattern(size, seed=1)
    yield pattern(size, seed=2)  # for a large body: the first chunk is on disk now
    if finish is not None:
        await backend.complete_multipart(KEY, upload_id, [finish])
    else:
        await backend.abort_multipart(KEY, upload_id)
    yield pattern(size, seed=3)


@pytest.mark.parametrize("size", [10, MiB + 10], ids=["small", "large"])
@pytest.mark.parametrize("end", ["complete", "abort"])
async def test_upload_ending_while_a_part_streams_in(
    harness: Harness, size: int, end: str
) -> None:
    """The upload is checked before the body is read; it ends before the part is stored."""
    backend = harness.backend
    upload_id = await backend.create_multipart(KEY)
    one = await backend.put_part(KEY, upload_id, 1, body(b"one"))
    finish = PartRef(1, 3, one.token) if end == "complete" else None
    with pytest.raises(UploadNotFound):
        await backend.put_part(KEY, upload_id, 1, ending_body(backend, upload_id, finish, size))
    assert harness.leftovers() == []
    assert harness.residue() == []
    if end == "complete":
        assert await fetch(backend, KEY) == b"one"


#: Head starts in a race: so many checkpoints (an int), or so many seconds (a float).
DELAYS = [0, 1, 2, 3, 5, 0.0005, 0.001, 0.003]


def delays(i: int, scale: float = 1) -> tuple[float, float]:
    """A different pair of head starts for each round ``i`` (the first 64 rounds); ``scale``
    stretches the ones in seconds, for calls that take longer (parts of megabytes)."""
    pair = DELAYS[i % len(DELAYS)], DELAYS[i // len(DELAYS) % len(DELAYS)]
    first, second = (d * scale if isinstance(d, float) else d for d in pair)
    return first, second


#: Eight rounds in which each side gets each head start once: the first side's head starts
#: are a permutation of the second's (round ``8 * b + 5 * b % 8``: ``(5 * b % 8, b)``).
EACH_HEAD_START_ONCE = [8 * b + 5 * b % 8 for b in range(len(DELAYS))]


async def race(first: Callable[[], Awaitable[object]], first_delay: float,
               second: Callable[[], Awaitable[object]], second_delay: float) -> list[object]:
    """Run both at once, each after its head start; what they returned or raised."""
    outcomes: list[object] = [None, None]

    async def run(index: int, call: Callable[[], Awaitable[object]], delay: float) -> None:
        if isinstance(delay, float):
            await anyio.sleep(delay)
        for _ in range(delay if isinstance(delay, int) else 0):
            await anyio.lowlevel.checkpoint()
        try:
            outcomes[index] = await call()
        except StorageError as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0, first, first_delay)
        tg.start_soon(run, 1, second, second_delay)
    return outcomes


@pytest.mark.parametrize("with_tokens", [True, False], ids=["tokens", "latest"])
async def test_part_upload_racing_completion_never_tears_the_blob(
    harness: Harness, with_tokens: bool
) -> None:
    """Parts of equal size, so only the bytes could tell a late attempt that slipped in.

    With part attempts the completion always wins with the attempts it names. Without them
    (S3) a late upload of part 2 that lands first replaces it: the completion then either
    takes it (without tokens) or fails with InvalidPart, the upload still in progress.
    """
    backend = harness.backend
    attempts = backend.capabilities.part_attempts
    size = 2000
    seen: set[str] = set()
    # Over the network (calls of milliseconds, parts of megabytes where padded): eight
    # rounds, still each head start of either side.
    for i in EACH_HEAD_START_ONCE if harness.name.startswith("s3") else range(64):
        key = f"b/4/race-{i}"
        parts = [pattern(size, seed=100 * i + n) for n in range(3)]
        parts = [harness.pad(part) for part in parts[:2]] + parts[2:]
        late = harness.pad(pattern(size if i % 3 else MiB + 1, seed=100 * i + 99))
        upload_id = await backend.create_multipart(key)
        infos = [await backend.put_part(key, upload_id, n, body(data))
                 for n, data in enumerate(parts, start=1)]
        refs = [PartRef(info.part_number, info.size, info.token) if with_tokens
                else PartRef(info.part_number) for info in infos]
        put_delay, complete_delay = delays(i, harness.delay_scale)
        put, done = await race(
            partial(backend.put_part, key, upload_id, 2, body(*split(late, [MiB // 2]))),
            put_delay, partial(backend.complete_multipart, key, upload_id, refs), complete_delay)
        assert isinstance(put, PartInfo | UploadNotFound), put
        seen.add(type(put).__name__)
        if attempts or not isinstance(done, InvalidPart):
            assert isinstance(done, BlobInfo), done
            got = await fetch(backend, key)
            if with_tokens or got != b"".join(parts):
                # Without tokens the late attempt may have been the latest when the upload
                # completed.
                assert got == b"".join(parts) if with_tokens else parts[0] + late + parts[2]
        else:
            # S3: the late upload replaced part 2 before the completion took it.
            seen.add("InvalidPart")
            assert isinstance(put, PartInfo), put
            assert done.part_number == 2, done
            with pytest.raises(BlobNotFound):
                await backend.head(key)
            await backend.abort_multipart(key, upload_id)
        assert harness.leftovers() == []
        assert harness.residue() == []
    if attempts:
        assert {"PartInfo", "UploadNotFound"} <= seen  # both sides of the race were run
    # Over the network, which side wins each round is the upstream's timing (on a loaded
    # machine one side may win them all); every round above checked what either outcome
    # must leave behind.


async def test_part_upload_racing_abort_leaves_nothing(harness: Harness) -> None:
    """Whichever of a part upload and an abort lands first, nothing is left: the part went
    with the upload (PartInfo), or came too late (UploadNotFound).

    The first two rounds run the two calls one after the other, so that each outcome is
    checked whatever the timing; the other rounds race them with head starts. In process
    both sides win some of those; over the network which side wins is the upstream's
    timing (on a loaded machine one side may win them all).
    """
    backend = harness.backend
    network = harness.name.startswith("s3")
    seen: set[str] = set()
    for i in [-2, -1, *(EACH_HEAD_START_ONCE if network else range(0, 64, 3))]:
        upload_id = await backend.create_multipart(KEY)
        await backend.put_part(KEY, upload_id, 1, body(b"one"))
        put = partial(backend.put_part, KEY, upload_id, 2, body(b"late"))
        abort = partial(backend.abort_multipart, KEY, upload_id)
        if i < 0:
            outcome: object
            if i == -2:
                outcome = await put()
                await abort()
                assert isinstance(outcome, PartInfo), outcome
            else:
                await abort()
                with pytest.raises(UploadNotFound) as raised:
                    await put()
                outcome = raised.value
        else:
            put_delay, abort_delay = delays(i, harness.delay_scale)
            outcome, aborted = await race(put, put_delay, abort, abort_delay)
            assert isinstance(outcome, PartInfo | UploadNotFound), outcome
            assert aborted is None, aborted
            seen.add(type(outcome).__name__)
        assert harness.leftovers() == [], (i, outcome)
        assert harness.residue() == [], (i, outcome)
    if not network:
        assert seen == {"PartInfo", "UploadNotFound"}  # both sides of the race were run
