"""Object search (``GET /api/v1/storage/buckets/{bucket}/search``) against a real gateway
holding 3,000 objects: keyset pages forwards and backwards equal a brute-force filter and
sort of what was uploaded, stay exact while objects are added during paging, and the
query errors and access rules match the Storage API's."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.checksums import DigestingStream
from gateway.core import Gateway
from gateway.metadata.db import Database
from gateway.settings import Settings
from gateway.types import ObjectAttributes
from storage_backends.registry import open_backend
from tests._server import GatewayProcess, run_cli

API = "/api/v1/storage"
MiB = 1024 * 1024
#: What the search is about is the 200 matches of ``LARGE_GBKB`` (several pages each way)
#: among look-alikes; the small objects around them are the rest of the bucket, whose number
#: no answer depends on (it was 10,000: 3.5 times the seeding time for the same checks).
OBJECTS = 3_000
LARGE = 300
#: One buffer the large bodies are cut from.
BIG = bytes(range(256)) * ((MiB + 70_000) // 256 + 1)
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass
class Stored:
    size: int
    etag: str
    content_type: str | None
    metadata: dict[str, str]


@dataclass
class World:
    server: GatewayProcess
    bucket: str
    admin: str = ""
    member: str = ""
    write_only: str = ""
    inventory: dict[str, Stored] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.server.url + API, headers=headers, timeout=60)


class Uploader:
    """Concurrent PUTs through the JSON storage API, one HTTP client per thread: the
    objects added while pages are walked."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.local = threading.local()
        self.clients: list[httpx.Client] = []
        self.lock = threading.Lock()

    def put(self, key: str, size: int, content_type: str | None = None,
            metadata: dict[str, str] | None = None) -> Stored:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.world.client(self.world.admin)
            with self.lock:
                self.clients.append(client)
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        if content_type is not None:
            headers["content-type"] = content_type
        body = BIG[:size] if size > 4096 else b"s" * size
        response = client.put(f"/buckets/{self.world.bucket}/objects/{quote(key, safe='/')}",
                              content=body, headers=headers)
        assert response.status_code == 200, response.text
        stored = Stored(size, response.json()["etag"], content_type, dict(metadata or {}))
        with self.lock:
            self.world.inventory[key] = stored
        return stored

    def close(self) -> None:
        for client in self.clients:
            client.close()


def dataset(rng: random.Random) -> list[tuple[str, int, str | None, dict[str, str]]]:
    """3,000 objects: most small, 300 just over 1 MiB (sizes repeat, so the key breaks
    ties), half under ``.gbkb/``, with neighbours that only look alike (``x.gbkb/``,
    ``.gbkbx/``, ``.gbkb``); a content type and metadata on some."""
    large_sizes = [MiB + rng.randrange(1, 60_000) for _ in range(40)]
    out = []
    for n in range(OBJECTS):
        if n < LARGE:
            size = rng.choice(large_sizes)
            place = ".gbkb/" if n % 3 else rng.choice(["docs/", "x.gbkb/", ".gbkbx/"])
        else:
            size = rng.choice([0, 1, MiB, MiB - 1, rng.randrange(4096)]) if n % 50 == 0 \
                else rng.randrange(4096)
            place = rng.choice([".gbkb/", ".gbkb/sub/", "docs/", "img/", ".gbkb"])
        name = rng.choice(["doc", "Doc", "ü", "a b", "z"]) + f"-{n:05d}.txt"
        content_type = rng.choice([None, "text/plain", "application/pdf"])
        metadata = {"author": f"author{n % 5}"} if n % 7 == 0 else {}
        if size == MiB and n % 100 == 0:
            place = ".gbkb/"  # exactly 1 MiB: not "over 1 MB"
        out.append((place + name, size, content_type, metadata))
    return out


async def seed(server: GatewayProcess, world: World) -> None:
    """The bucket, bob, the tokens and the objects, written by the gateway's own services
    in this process on the server's data dir and database (the same settings) before the
    server starts: the records as many HTTP PUTs would make, without the requests, which
    the search does not depend on. Writes through the running
    server are still tested here: the objects added while paging, and the CLI's grant."""
    settings = Settings.from_env(server.env())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    await db.start()
    backend = open_backend(settings.backend, data_dir=settings.data_dir,
                           s3=settings.s3_options())
    try:
        gw = Gateway.build(settings, db, backend)
        await gw.accounts.ensure_root()
        admin, _ = await gw.accounts.lookup(settings.root_access_key)
        assert admin is not None and admin.name == "admin"
        await gw.buckets.create(admin, world.bucket)
        expires = datetime.now(UTC) + timedelta(days=1)

        async def token(user: str, *permissions: str) -> str:
            _, secret = await gw.tokens.create(user, uuid.uuid4().hex[:8], list(permissions),
                                               expires)
            return secret

        world.admin = await token("admin", "storage:read", "storage:write")
        await gw.accounts.add_user("bob")  # another user, no grant on the bucket
        world.member = await token("bob", "storage:read", "storage:write")
        world.write_only = await token("bob", "storage:write")

        writers = asyncio.Semaphore(64)  # committed in groups, as a busy server does

        async def put(key: str, size: int, content_type: str | None,
                      metadata: dict[str, str]) -> None:
            body = BIG[:size] if size > 4096 else b"s" * size

            async def chunks() -> AsyncIterator[bytes]:
                yield body

            async with writers:
                record = await gw.objects.put(
                    admin, world.bucket, key, DigestingStream(chunks()),
                    ObjectAttributes(content_type=content_type, user_metadata=dict(metadata)),
                    size_hint=size)
            world.inventory[key] = Stored(size, record.etag, content_type, dict(metadata))

        await asyncio.gather(*(put(*item) for item in dataset(random.Random(7))))
    finally:
        await backend.aclose()
        await db.aclose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = GatewayProcess(tmp_path_factory.mktemp("search") / "data")
    w = World(server, f"search-{uuid.uuid4().hex[:12]}")
    started = time.monotonic()
    asyncio.run(seed(server, w))
    print(f"\nstored {OBJECTS} objects in {time.monotonic() - started:.1f}s")
    assert len(w.inventory) == OBJECTS
    server.start()
    try:
        yield w
    finally:
        server.stop()


def search(client: httpx.Client, bucket: str, **params: Any) -> httpx.Response:
    query = {name: value if isinstance(value, str) else json.dumps(value)
             for name, value in params.items()}
    return client.get(f"/buckets/{bucket}/search", params=query)


def page_of(response: httpx.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]["items"], body["data"]["pageInfo"]


LARGE_GBKB = {"predicate": "and", "operands": [
    {"fieldPath": "key", "predicate": "starts_with", "value": ".gbkb/"},
    {"fieldPath": "size", "predicate": "gt", "value": 1048576}]}
BY_SIZE_DESC = [{"fieldPath": "size", "direction": "DESC"}]


def expected_large(inventory: dict[str, Stored]) -> list[str]:
    """The brute-force answer: ``.gbkb/`` objects over 1 MiB, size descending, ties on the
    key (descending, the direction of the last order key)."""
    found = [(s.size, k) for k, s in inventory.items() if k.startswith(".gbkb/")
             and s.size > MiB]
    return [k for _, k in sorted(found, reverse=True)]


def walk_forward(client: httpx.Client, bucket: str, size: int,
                 between_pages: Any = None) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {"first": size}
    pages = 0
    while True:
        got, info = page_of(search(client, bucket, where=LARGE_GBKB, order_by=BY_SIZE_DESC,
                                   cursor=cursor, total="true"))
        assert info["hasPreviousPage"] is bool(items)
        items.extend(got)
        pages += 1
        if not info["hasNextPage"]:
            return items, pages
        assert len(got) == size
        cursor = {"first": size, "after": info["endCursor"]}
        if between_pages is not None:
            between_pages()


def test_large_gbkb_files_page_by_page(world: World) -> None:
    want = expected_large(world.inventory)
    assert len(want) > 150
    with world.client(world.admin) as api:
        started = time.monotonic()
        items, pages = walk_forward(api, world.bucket, 50)
        elapsed = time.monotonic() - started
        print(f"\n{pages} pages of 50 in {elapsed * 1000:.0f} ms")
        assert [i["key"] for i in items] == want
        first, info = page_of(search(api, world.bucket, where=LARGE_GBKB,
                                     order_by=BY_SIZE_DESC, total="true"))
    assert info["total"] == len(want) and len(first) == 20  # 20 by default
    assert info["startCursor"] and info["endCursor"] and info["hasNextPage"] is True
    for item in items:
        stored = world.inventory[item["key"]]
        assert set(item) == {"key", "size", "last_modified", "etag", "content_type",
                             "metadata"}
        assert item["size"] == stored.size and item["etag"] == stored.etag
        assert not item["etag"].startswith('"')  # as the listing shows it
        assert item["content_type"] == stored.content_type
        assert item["metadata"] == stored.metadata
        assert ISO_Z.fullmatch(item["last_modified"])


def test_paging_backwards(world: World) -> None:
    want = expected_large(world.inventory)
    keys: list[str] = []
    cursor: dict[str, Any] = {"last": 50}
    with world.client(world.admin) as api:
        while True:
            got, info = page_of(search(api, world.bucket, where=LARGE_GBKB,
                                       order_by=BY_SIZE_DESC, cursor=cursor))
            assert info["hasNextPage"] is bool(keys) and info["total"] == -1
            keys[:0] = [i["key"] for i in got]  # each page is in the requested order
            if not info["hasPreviousPage"]:
                break
            assert len(got) == 50
            cursor = {"last": 50, "before": info["startCursor"]}
        assert keys == want
        # From the middle: before one page's start is exactly the page before it.
        forward, info = page_of(search(api, world.bucket, where=LARGE_GBKB,
                                       order_by=BY_SIZE_DESC, cursor={"first": 50}))
        _second, info2 = page_of(search(api, world.bucket, where=LARGE_GBKB,
                                       order_by=BY_SIZE_DESC,
                                       cursor={"first": 50, "after": info["endCursor"]}))
        back, info3 = page_of(search(api, world.bucket, where=LARGE_GBKB,
                                     order_by=BY_SIZE_DESC,
                                     cursor={"last": 50, "before": info2["startCursor"]}))
    assert back == forward and info3["hasPreviousPage"] is False
    assert info3["hasNextPage"] is True and info2["hasPreviousPage"] is True


def test_default_order_total_and_other_fields(world: World) -> None:
    inventory = world.inventory
    with world.client(world.admin) as api:
        items, info = page_of(search(api, world.bucket, cursor={"first": 100}, total="true"))
        assert info["total"] == len(inventory)
        assert [i["key"] for i in items] == sorted(inventory)[:100]  # by key, ascending
        by_author = {"predicate": "and", "operands": [
            {"fieldPath": "metadata.Author", "predicate": "in", "value": ["author3",
                                                                          "author4"]},
            {"fieldPath": "content_type", "predicate": "is_null"},
            {"fieldPath": "key", "predicate": "like", "value": "ü"}]}
        items, info = page_of(search(api, world.bucket, where=by_author, total="true",
                                     order_by={"fieldPath": "size"},
                                     cursor={"first": 100}))
    want = sorted((s.size, k) for k, s in inventory.items()
                  if s.metadata.get("author") in ("author3", "author4")
                  and s.content_type is None and "ü" in k)
    assert 0 < len(want) <= 100 and info["total"] == len(want)
    assert [(i["size"], i["key"]) for i in items] == want
    assert all(i["metadata"]["author"] in ("author3", "author4") for i in items)


def test_pages_stay_exact_while_objects_are_added(world: World) -> None:
    """Keyset pages neither skip nor repeat: every object that existed when paging began
    comes exactly once, in order, whatever is added meanwhile on either side of the page
    boundaries."""
    before = expected_large(world.inventory)
    sizes = sorted({world.inventory[k].size for k in before})
    uploader = Uploader(world)
    stop = threading.Event()
    added = threading.Semaphore(0)
    errors: list[BaseException] = []
    rng = random.Random(11)

    def keep_adding() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                place = rng.choice([".gbkb/", ".gbkb/", "docs/", ".gbkbx/"])
                # Sizes equal to, between and around existing ones; some small.
                size = rng.choice([rng.choice(sizes), rng.choice(sizes) + 1,
                                   rng.choice(sizes) - 1, MiB + 1, rng.randrange(2048)])
                uploader.put(f"{place}new-{n:04d}-{rng.choice(['a', 'm', 'z'])}", size)
                added.release()
        except BaseException as exc:
            errors.append(exc)
            added.release()

    thread = threading.Thread(target=keep_adding)
    thread.start()

    def wait_for_additions() -> None:
        for _ in range(3):
            assert added.acquire(timeout=30)

    try:
        with world.client(world.admin) as api:
            items, pages = walk_forward(api, world.bucket, 20, wait_for_additions)
    finally:
        stop.set()
        thread.join()
        uploader.close()
    assert not errors, errors
    assert pages >= len(before) // 20
    keys = [i["key"] for i in items]
    assert len(keys) == len(set(keys))  # no duplicates
    ranks = [(i["size"], i["key"]) for i in items]
    assert ranks == sorted(ranks, reverse=True)  # in order, new objects included
    existing = set(before)
    assert [k for k in keys if k in existing] == before  # nothing skipped
    assert any(k not in existing for k in keys)  # some additions were seen on the way


def test_query_errors(world: World) -> None:
    bucket = world.bucket

    def refused(status: int = 400, **params: Any) -> dict[str, Any]:
        with world.client(world.admin) as api:
            response = search(api, bucket, **params)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        # The Storage API reference's flat error shape.
        assert body["error"] == "validation_error" and body["code"] == "VALIDATION_ERROR"
        assert body["resource"] == bucket and body["request_id"]
        assert response.headers["x-request-id"] == body["request_id"]
        return body

    branch_with_value = {"predicate": "and", "operands": [
        {"fieldPath": "key", "predicate": "eq", "value": "x"}], "value": "25"}
    assert refused(where=branch_with_value)["message"].startswith("where.value:")
    assert "where.fieldPath" in refused(
        where={"fieldPath": "colour", "predicate": "eq", "value": "red"})["message"]
    assert "order_by[0].fieldPath" in refused(order_by={"fieldPath": "nope"})["message"]
    assert refused(where={"fieldPath": "size", "predicate": "gt", "value": "big"})
    assert refused(where="{not json")
    assert refused(cursor={"first": 0})["message"].startswith("cursor.first:")
    assert refused(cursor={"first": 101})["message"].startswith("cursor.first:")
    assert refused(cursor={"last": 101})["message"].startswith("cursor.last:")
    assert refused(cursor={"first": 5, "last": 5})
    with world.client(world.admin) as api:
        _, info = page_of(search(api, bucket, order_by=BY_SIZE_DESC, cursor={"first": 2}))
    cursor = info["endCursor"]
    assert "after or before" in refused(
        order_by=BY_SIZE_DESC, cursor={"after": cursor, "before": cursor})["message"]
    assert refused(order_by=BY_SIZE_DESC, cursor={"after": "bm90LWEtY3Vyc29y"})
    assert refused(order_by=BY_SIZE_DESC, cursor={"after": cursor[:-3]})
    # A cursor is bound to its order.
    assert "another order_by" in refused(cursor={"after": cursor})["message"]
    assert refused(total="maybe")


def test_access_is_the_listings(world: World) -> None:
    def status(token: str | None, bucket: str | None = None) -> tuple[int, dict[str, Any]]:
        with world.client(token) as client:
            response = search(client, bucket or world.bucket, cursor={"first": 1})
        return response.status_code, response.json()

    code, body = status(world.member)
    assert code == 403 and body["error"] == "forbidden" and body["code"] == "AccessDenied"
    with world.client(world.member) as bob:  # the same answer as listing the bucket
        assert bob.get(f"/buckets/{world.bucket}/objects").status_code == 403
    code, body = status(None)
    assert code == 401 and body["error"] == "unauthorized"
    assert status(world.write_only)[0] == 403
    code, body = status(world.admin, "search-no-such-bucket")
    assert code == 404 and body["error"] == "not_found"
    # A read grant opens search as it opens listing.
    result = run_cli(world.server.data_dir, "grant", "set", world.bucket, "--user", "bob",
                     "--permission", "read")
    assert result.returncode == 0, result.stderr
    code, body = status(world.member)
    assert code == 200 and len(body["data"]["items"]) == 1
