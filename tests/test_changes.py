"""The change log and its feed (``GET /api/v1/storage/changes``) against a real gateway:
every write path records its change in commit order, pages resume by cursor, a restart
loses nothing, concurrent writers get gapless numbers, and tenants see only their buckets."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._server import GatewayProcess
from tests._server import cli_json as cli
from tests.conftest import make_client

FEED = "/api/v1/storage/changes"


def token(data: Path, user: str, *permissions: str) -> str:
    made = cli(data, "token", "create", "--user", user, "--name", uuid.uuid4().hex[:8],
               *[f"--permission={p}" for p in permissions])
    return str(made["token"])


class Env:
    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        data = server.data_dir
        cli(data, "user", "add", "bob")
        self.admin = token(data, "admin", "storage:read", "storage:write", "admin")
        self.bob = token(data, "bob", "storage:read", "storage:write")
        self.s3 = make_client(server)

    def client(self, tok: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url,
                            headers={"Authorization": f"Bearer {tok}"}, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = GatewayProcess(tmp_path_factory.mktemp("changes") / "data").start()
    try:
        yield Env(server)
    finally:
        server.stop()


@pytest.fixture
def bkt(env: Env) -> str:
    name = f"ch-{uuid.uuid4().hex[:16]}"
    env.s3.create_bucket(Bucket=name)
    return name


def read_all(api: httpx.Client, bucket: str | None, since: str = "", prefix: str = "",
             limit: int = 100) -> tuple[list[dict[str, Any]], str]:
    """Every change after ``since``, page by page; and the cursor to resume from."""
    found: list[dict[str, Any]] = []
    cursor = since
    while True:
        params = {"limit": str(limit), "prefix": prefix, "since": cursor}
        if bucket is not None:
            params["bucket"] = bucket
        answer = api.get(FEED, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found.extend(body["changes"])
        cursor = body["cursor"]
        if not body["has_more"]:
            return found, cursor


def test_every_write_path_is_recorded_in_order(env: Env, bkt: str) -> None:
    s3 = env.s3
    s3.put_object(Bucket=bkt, Key="kb/a.txt", Body=b"one")
    s3.put_object(Bucket=bkt, Key="kb/a.txt", Body=b"two!")  # overwrite
    s3.copy_object(Bucket=bkt, Key="kb/b.txt", CopySource={"Bucket": bkt, "Key": "kb/a.txt"})
    upload = s3.create_multipart_upload(Bucket=bkt, Key="big.bin")
    part = s3.upload_part(Bucket=bkt, Key="big.bin", UploadId=upload["UploadId"],
                          PartNumber=1, Body=b"x" * 10)
    s3.complete_multipart_upload(
        Bucket=bkt, Key="big.bin", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    post = s3.generate_presigned_post(bkt, "form.txt")
    assert httpx.post(post["url"], data=post["fields"],
                      files={"file": ("f", b"form")}).status_code == 204
    with env.client(env.bob) as api_bob, env.client(env.admin) as api:
        assert api_bob.get(FEED, params={"bucket": bkt}).status_code == 403
        put = api.put(f"/api/v1/storage/buckets/{bkt}/objects/kb/json.txt", content=b"json")
        assert put.status_code in (200, 201), put.text
        s3.delete_object(Bucket=bkt, Key="kb/a.txt")
        s3.delete_object(Bucket=bkt, Key="never-existed")  # not a change
        s3.delete_objects(Bucket=bkt, Delete={"Objects": [{"Key": "kb/b.txt"}]})

        found, _ = read_all(api, bkt)
        assert [(c["event"], c["key"]) for c in found] == [
            ("s3:ObjectCreated:Put", "kb/a.txt"),
            ("s3:ObjectCreated:Put", "kb/a.txt"),
            ("s3:ObjectCreated:Copy", "kb/b.txt"),
            ("s3:ObjectCreated:CompleteMultipartUpload", "big.bin"),
            ("s3:ObjectCreated:Post", "form.txt"),
            ("s3:ObjectCreated:Put", "kb/json.txt"),
            ("s3:ObjectRemoved:Delete", "kb/a.txt"),
            ("s3:ObjectRemoved:Delete", "kb/b.txt"),
        ]
        seqs = [c["sequence"] for c in found]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        second = found[1]
        assert second["size"] == 4 and second["bucket"] == bkt
        assert second["etag"] == f'"{hashlib.md5(b"two!").hexdigest()}"'
        assert second["time"].endswith("Z")
        assert found[-1]["size"] is None and found[-1]["etag"] is None

        kb, _ = read_all(api, bkt, prefix="kb/")
        assert {c["key"] for c in kb} == {"kb/a.txt", "kb/b.txt", "kb/json.txt"}


def test_cursor_resumes_and_pages(env: Env, bkt: str) -> None:
    with env.client(env.admin) as api:
        _, start = read_all(api, bkt)
        for i in range(25):
            env.s3.put_object(Bucket=bkt, Key=f"k{i:02d}", Body=b"v")
        first, cursor = read_all(api, bkt, since=start, limit=7)  # four pages
        assert [c["key"] for c in first] == [f"k{i:02d}" for i in range(25)]
        again, same = read_all(api, bkt, since=cursor)
        assert again == [] and same == cursor
        env.s3.put_object(Bucket=bkt, Key="later", Body=b"v")
        more, _ = read_all(api, bkt, since=cursor)
        assert [c["key"] for c in more] == ["later"]
        # "now" starts at the head; a cursor not made here is refused.
        now = api.get(FEED, params={"bucket": bkt, "since": "now"}).json()
        assert now["changes"] == []
        bad = api.get(FEED, params={"bucket": bkt, "since": "garbage!"})
        assert bad.status_code == 400 and bad.json()["error"] == "validation_error"


def test_long_poll_returns_when_a_change_commits(env: Env, bkt: str) -> None:
    with env.client(env.admin) as api:
        cursor = api.get(FEED, params={"bucket": bkt, "since": "now"}).json()["cursor"]
        timer = threading.Timer(1.0, lambda: env.s3.put_object(Bucket=bkt, Key="x", Body=b""))
        timer.start()
        began = time.monotonic()
        answer = api.get(FEED, params={"bucket": bkt, "since": cursor, "wait": "20"}).json()
        took = time.monotonic() - began
        timer.join()
        assert [c["key"] for c in answer["changes"]] == ["x"]
        assert took < 15
        quiet = api.get(FEED, params={"bucket": bkt, "since": answer["cursor"], "wait": "1"})
        assert quiet.json()["changes"] == []


def test_only_admins_read_every_bucket(env: Env, bkt: str) -> None:
    with env.client(env.bob) as bob, env.client(env.admin) as admin:
        refused = bob.get(FEED)
        assert refused.status_code == 400 and "bucket" in refused.json()["message"]
        assert bob.get(FEED, params={"bucket": "no-such-bucket-here"}).status_code == 404
        env.s3.put_object(Bucket=bkt, Key="seen-by-admin", Body=b"")
        everything, _ = read_all(admin, None)
        assert any(c["bucket"] == bkt and c["key"] == "seen-by-admin" for c in everything)
        own = f"bob-{uuid.uuid4().hex[:12]}"
        assert bob.post("/api/v1/storage/buckets", json={"name": own}).status_code == 201
        assert bob.put(f"/api/v1/storage/buckets/{own}/objects/mine", content=b"1") \
            .status_code in (200, 201)
        mine, _ = read_all(bob, own)
        assert [c["key"] for c in mine] == ["mine"]


def test_concurrent_writers_get_gapless_ordered_numbers(env: Env, bkt: str) -> None:
    other = f"ch-{uuid.uuid4().hex[:16]}"
    env.s3.create_bucket(Bucket=other)
    with env.client(env.admin) as api:
        _, start = read_all(api, None)

        def write(i: int) -> str:
            client = make_client(env.server)
            target = bkt if i % 2 else other
            client.put_object(Bucket=target, Key=f"c/{i}", Body=b"z" * i)
            return f"{target}/c/{i}"

        with ThreadPoolExecutor(8) as pool:
            acknowledged = set(pool.map(write, range(120)))
        found, _ = read_all(api, None, since=start)
        ours = [c for c in found if c["bucket"] in (bkt, other)]
        assert {f"{c['bucket']}/{c['key']}" for c in ours} == acknowledged
        seqs = [c["sequence"] for c in found]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gapless, in order


def test_the_log_survives_a_restart(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data").start()
    try:
        env = Env(server)
        env.s3.create_bucket(Bucket="durable")
        env.s3.put_object(Bucket="durable", Key="a", Body=b"1")
        with env.client(env.admin) as api:
            before, cursor = read_all(api, "durable")
        server.kill()  # kill -9: nothing flushed at shutdown
        server.start()
        env.s3.put_object(Bucket="durable", Key="b", Body=b"2")
        with env.client(env.admin) as api:
            replay, _ = read_all(api, "durable")
            after, _ = read_all(api, "durable", since=cursor)
        assert [c["key"] for c in replay] == ["a", "b"]
        assert replay[0] == before[0]
        assert [c["key"] for c in after] == ["b"]
    finally:
        server.stop()
