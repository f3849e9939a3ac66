"""A bot's package as one archive (``/api/v1/bots/{id}/package``) against a real gateway:
the export streams every object with its content type and metadata (and stays flat in
memory for a 256 MiB object), an import into another bot restores them byte for byte, and
an import that fails for any reason — a damaged archive, a member that is not a file, a
path out of the package, the quota, a client that goes away, a crash — changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import sqlite3
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import pytest

from tests import _postgres
from tests._server import GatewayProcess, database_for
from tests._server import cli_json as cli

MiB = 1024 * 1024
BOTS = "/api/v1/bots"
EVERYTHING = ("bots:read", "bots:write", "storage:read", "storage:write")


def sql(server: GatewayProcess, statement: str) -> list[tuple[Any, ...]]:
    """A statement on the gateway's own database (SQLite in its data dir, or PostgreSQL)."""
    url = database_for(server.data_dir)
    if url:
        return _postgres.query(url, statement)
    with closing(sqlite3.connect(server.data_dir / "gateway.db", timeout=30)) as conn, conn:
        return list(conn.execute(statement).fetchall())


@dataclass
class Env:
    server: GatewayProcess
    tokens: dict[str, str] = field(default_factory=dict)
    s3: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, data: Path, users: tuple[str, ...] = ("alice", "bob", "carol")) -> Env:
        """A gateway with ``users``, each with an API token holding every bot and storage
        permission and an S3 key; ``admin`` is the root administrator's token."""
        made = cls(GatewayProcess(data).start())
        root = cli(data, "token", "create", "--user", "admin", "--name", "root",
                   *[f"--permission={p}" for p in (*EVERYTHING, "admin")])
        made.tokens["admin"] = str(root["token"])
        for user in users:
            made.admin_call("POST", "/api/v1/admin/users", {"name": user})
            made.tokens[user] = made.token(user, *EVERYTHING)
            keys = made.admin_call("POST", f"/api/v1/admin/users/{user}/keys", {})
            made.s3[user] = boto3.client(
                "s3", endpoint_url=made.server.url, region_name="us-east-1",
                aws_access_key_id=keys["access_key"], aws_secret_access_key=keys["secret_key"])
        return made

    def admin_call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        answer = httpx.request(method, self.server.url + path, json=body, timeout=30,
                               headers={"Authorization": f"Bearer {self.tokens['admin']}"})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["data"]

    def token(self, user: str, *permissions: str) -> str:
        made = self.admin_call("POST", "/api/v1/tokens", {
            "name": uuid.uuid4().hex[:8], "user": user, "permissions": list(permissions)})
        return str(made["token"])

    def usage(self, bucket: str) -> tuple[int, int]:
        got = self.admin_call("GET", f"/api/v1/admin/buckets/{bucket}/quota", {})
        return got["used_bytes"], got["used_objects"]

    def api(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.server.url + BOTS, headers=headers, timeout=120)

    def make_bot(self, owner: str, admins: tuple[str, ...] = ()) -> tuple[str, str]:
        """A bot of ``owner`` with its package bucket ``<name>.gbai``: (bot id, bucket).
        Made through the bots API (``admins`` join with the invite code)."""
        name = f"pkg-{uuid.uuid4().hex[:12]}"
        with httpx.Client(base_url=self.server.url + BOTS, timeout=60) as api:
            made = api.post(self.server.url + BOTS, json={"name": name},
                            headers={"Authorization": f"Bearer {self.tokens[owner]}"})
            if made.status_code == 404:
                return self._insert_bot(owner, name, admins)
            assert made.status_code == 201, made.text
            bot = made.json()["data"]
            for admin in admins:
                joined = api.put(f"/{bot['id']}", json={
                    "admins": "me", "customerId": bot["customerId"],
                    "inviteCode": bot["inviteCode"]},
                    headers={"Authorization": f"Bearer {self.tokens[admin]}"})
                assert joined.status_code == 200, joined.text
        return str(bot["id"]), str(bot["bucket"])

    def _insert_bot(self, owner: str, name: str, admins: tuple[str, ...]) -> tuple[str, str]:
        """Without the bots API: the rows it would write (a customer per user, the bot
        naming its bucket, admins as customers of their own) and the bucket."""
        bucket = f"{name}.gbai"
        self.s3[owner].create_bucket(Bucket=bucket)
        bot_id = str(uuid.uuid4())
        sql(self.server, f"INSERT INTO bots (id, customer_id, name, secret, bucket, "
                         f"attributes, created_at) VALUES ('{bot_id}', "
                         f"'{self.customer(owner)}', '{name}', 'unused', '{bucket}', '{{}}', "
                         f"CURRENT_TIMESTAMP)")
        for admin in admins:
            sql(self.server, f"INSERT INTO bot_admins (bot_id, customer_id) VALUES "
                             f"('{bot_id}', '{self.customer(admin)}')")
        return bot_id, bucket

    def customer(self, user: str) -> str:
        user_id = sql(self.server, f"SELECT id FROM users WHERE name = '{user}'")[0][0]
        found = sql(self.server, f"SELECT id FROM customers WHERE user_id = {user_id}")
        if found:
            return str(found[0][0])
        customer_id = str(uuid.uuid4())
        sql(self.server, f"INSERT INTO customers (id, user_id, name, attributes, created_at) "
                         f"VALUES ('{customer_id}', {user_id}, '{user}', '{{}}', "
                         f"CURRENT_TIMESTAMP)")
        return customer_id


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    made = Env.start(tmp_path_factory.mktemp("package") / "data")
    try:
        made.tokens["alice-read"] = made.token("alice", "bots:read", "storage:read")
        made.tokens["alice-bots"] = made.token("alice", "bots:read", "bots:write")
        made.tokens["admin-no-admin"] = made.token("admin", *EVERYTHING)
        yield made
    finally:
        made.server.stop()


# -- helpers -------------------------------------------------------------------------------


def state(s3: Any, bucket: str) -> dict[str, tuple[str, int]]:
    """Every key with its ETag and size."""
    found: dict[str, tuple[str, int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (obj["ETag"], obj["Size"])
    return found


def blob_files(server: GatewayProcess) -> int:
    return sum(len(files) for _, _, files in os.walk(server.data_dir / "objects" / "blobs"))


def archive(*members: tuple[str, bytes | None], fmt: str = "tar",
            kind: bytes = tarfile.REGTYPE) -> bytes:
    """A tar of files (bytes) and directories (None), the way tar tools write them."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if fmt == "tar.gz" else "w",
                      format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = kind
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def post(api: httpx.Client, bot: str, body: bytes, **params: str) -> httpx.Response:
    return api.post(f"/{bot}/package", content=body, params=params)


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body


# -- export and import -----------------------------------------------------------------------

CONTENT: dict[str, dict[str, Any]] = {
    "index.html": {"Body": b"<h1>hi</h1>", "ContentType": "text/html; charset=utf-8",
                   "Metadata": {"author": "alice", "version": "3"},
                   "CacheControl": "max-age=60"},
    "bot.gbdialog/start.bas": {"Body": b'TALK "Hello"\n', "ContentType": "text/plain"},
    "bot.gbkb/docs/manual.pdf": {"Body": b"%PDF-1.7\n" + os.urandom(300 * 1024),
                                 "ContentType": "application/pdf",
                                 "Metadata": {"pages": "12"}},
    "bot.gbkb/data/empty.txt": {"Body": b"", "ContentType": "text/plain"},
    "bot.gbtheme/css/": {"Body": b"", "ContentType": "application/x-directory"},
    "bot.gbtheme/css/site.css": {"Body": b"h1 { color: red }", "ContentType": "text/css"},
    "bot.gbdrive/ünïcödé name.txt": {"Body": "ü".encode(), "ContentType": "text/plain"},
    "deep/" + "nested-folder/" * 8 + "leaf.json": {"Body": b"{}",
                                                  "ContentType": "application/json"},
}


def fill(s3: Any, bucket: str, content: dict[str, dict[str, Any]]) -> None:
    for key, args in content.items():
        s3.put_object(Bucket=bucket, Key=key, **args)


def entry_key(member: tarfile.TarInfo) -> str:
    return member.name + ("/" if member.isdir() else "")


def test_export_round_trip_and_import_into_another_bot(env: Env) -> None:
    s3 = env.s3["alice"]
    source, source_bucket = env.make_bot("alice")
    target, target_bucket = env.make_bot("alice")
    content = dict(CONTENT)
    content["big/blob.bin"] = {"Body": os.urandom(64 * MiB),
                               "ContentType": "application/octet-stream"}
    fill(s3, source_bucket, content)
    keys = sorted(state(s3, source_bucket), key=lambda k: k.encode())  # with the layout
    s3.put_object(Bucket=target_bucket, Key="old.txt", Body=b"to be replaced")
    s3.put_object(Bucket=target_bucket, Key="index.html", Body=b"older")

    with env.api("alice") as api:
        exported = api.get(f"/{source}/package")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"] == "application/x-tar"
        assert exported.headers["content-disposition"] == \
            f'attachment; filename="{source_bucket}.tar"'
        body = exported.content
        assert len(body) % tarfile.RECORDSIZE == 0 and body.endswith(b"\0" * 1024)

        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            members = tar.getmembers()
            assert [entry_key(m) for m in members] == keys
            for member in members:
                key = entry_key(member)
                head = s3.head_object(Bucket=source_bucket, Key=key)
                assert member.mtime == int(head["LastModified"].timestamp())
                assert member.pax_headers["GATEWAY.content-type"] == head["ContentType"]
                assert member.pax_headers["GATEWAY.etag"] == head["ETag"].strip('"')
                for name, value in head["Metadata"].items():
                    assert member.pax_headers[f"GATEWAY.meta.{name}"] == value
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                assert data == s3.get_object(Bucket=source_bucket, Key=key)["Body"].read()
                if key in content:
                    assert data == content[key]["Body"]
                    assert head["ContentType"] == content[key]["ContentType"]

        imported = post(api, target, body)
    assert imported.status_code == 200, imported.text
    answer = imported.json()
    assert answer["success"] is True and answer["message"]
    assert answer["data"] == {
        "bucket": target_bucket, "imported": len(keys), "deleted": 1,
        "bytes": sum(len(args["Body"]) for args in content.values())}

    assert state(s3, target_bucket) == state(s3, source_bucket)  # same keys, ETags, sizes
    for key in keys:
        got = s3.get_object(Bucket=target_bucket, Key=key)
        want = s3.get_object(Bucket=source_bucket, Key=key)
        assert got["Body"].read() == want["Body"].read(), key
        for field_name in ("ContentType", "Metadata", "CacheControl"):
            assert got.get(field_name) == want.get(field_name), (key, field_name)
    assert env.usage(target_bucket) == env.usage(source_bucket)

    # Every change is in the change log: the imports and the removal.
    with httpx.Client(base_url=env.server.url, timeout=30,
                      headers={"Authorization": f"Bearer {env.tokens['alice']}"}) as feed:
        changes = feed.get("/api/v1/storage/changes",
                           params={"bucket": target_bucket, "limit": "1000"})
    assert changes.status_code == 200, changes.text
    events = [(c["event"], c["key"]) for c in changes.json()["changes"]]
    tail = events[-(len(keys) + 1):]
    assert sorted(k for e, k in tail if e == "s3:ObjectCreated:Put") == sorted(keys)
    assert ("s3:ObjectRemoved:Delete", "old.txt") in tail


def test_gzip_export_and_import(env: Env) -> None:
    s3 = env.s3["alice"]
    source, source_bucket = env.make_bot("alice")
    target, target_bucket = env.make_bot("alice")
    fill(s3, source_bucket, CONTENT)
    with env.api("alice") as api:
        plain = api.get(f"/{source}/package")
        packed = api.get(f"/{source}/package", params={"format": "tar.gz"})
        assert packed.status_code == 200, packed.text
        assert packed.headers["content-type"] == "application/gzip"
        assert packed.headers["content-disposition"] == \
            f'attachment; filename="{source_bucket}.tar.gz"'
        assert packed.content[:2] == b"\x1f\x8b"
        assert gzip.decompress(packed.content) == plain.content
        refused(api.get(f"/{source}/package", params={"format": "zip"}), 400,
                "VALIDATION_ERROR")
        imported = post(api, target, packed.content)
    assert imported.status_code == 200, imported.text
    assert imported.json()["data"]["imported"] == len(state(s3, source_bucket))
    assert state(s3, target_bucket) == state(s3, source_bucket)
    got = s3.get_object(Bucket=target_bucket, Key="index.html")
    assert got["Metadata"] == {"author": "alice", "version": "3"}


def test_replace_and_merge(env: Env) -> None:
    s3 = env.s3["alice"]
    bot, bucket = env.make_bot("alice")
    layout = set(state(s3, bucket))  # the folder markers a new package starts with
    old = {"a.txt": b"a.txt" * 10, "b.txt": b"b.txt" * 10, "c/d.txt": b"c/d.txt" * 10}

    def reset() -> None:
        for key in set(state(s3, bucket)) - layout:
            s3.delete_object(Bucket=bucket, Key=key)
        for key, data in old.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)

    # As `tar -C dir .` writes it: a root entry, directories, "./" prefixes.
    body = archive(("./", None), ("./a.txt", b"new a"), ("./docs", None),
                   ("./docs/e.md", b"# e"))
    new = {"a.txt": b"new a", "docs/": b"", "docs/e.md": b"# e"}

    reset()
    with env.api("alice") as api:
        merged = post(api, bot, body, mode="merge")
        assert merged.status_code == 200, merged.text
        assert merged.json()["data"] == {"bucket": bucket, "imported": 3, "deleted": 0,
                                         "bytes": 8}
        assert set(state(s3, bucket)) == layout | set(old) | set(new)
        assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == old["b.txt"]
        assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"new a"

        reset()
        replaced = post(api, bot, body)  # replace is the default
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["data"]["deleted"] == len(layout | {"b.txt", "c/d.txt"})
        refused(post(api, bot, body, mode="sideways"), 400, "VALIDATION_ERROR")
    assert set(state(s3, bucket)) == set(new)
    for key, data in new.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    # Members from other tools get a content type from their name.
    assert s3.head_object(Bucket=bucket, Key="docs/e.md")["ContentType"] == "text/markdown"
    assert env.usage(bucket) == (8, 3)


def test_members_pass_the_package_rules(env: Env) -> None:
    """An import is held to the rules an upload of each member is: one refused member
    refuses the whole archive."""
    s3 = env.s3["alice"]
    bot, bucket = env.make_bot("alice")
    fill(s3, bucket, {"bot.gbkb/docs/ok.txt": {"Body": b"fine"}})
    before, blobs = state(s3, bucket), blob_files(env.server)
    with env.api("alice") as api:
        for member in (("bot.gbkb/docs/fake.pdf", b"not a pdf at all"),
                       ("bot.gbdialog/tool.exe", b"MZ")):
            answer = post(api, bot, archive(("bot.gbkb/docs/new.txt", b"new"), member))
            refused(answer, 415, "UNSUPPORTED_MEDIA_TYPE")
            assert state(s3, bucket) == before
            assert blob_files(env.server) == blobs
        theme = post(api, bot, archive(("bot.gbtheme/css/site.css", b"h1 {}")), mode="merge")
    assert theme.status_code == 200, theme.text
    head = s3.head_object(Bucket=bucket, Key="bot.gbtheme/css/site.css")
    assert head["CacheControl"] == "public, max-age=3600"  # the public theme's headers
    assert httpx.get(f"{env.server.url}/{bucket}/bot.gbtheme/css/site.css").content == b"h1 {}"


# -- what must change nothing ----------------------------------------------------------------

def _truncated_in_data() -> bytes:
    whole = archive(("ok.txt", b"fine"), ("big.bin", os.urandom(200_000)))
    return whole[:len(whole) // 2]


def _without_end_marker() -> bytes:
    whole = archive(("ok.txt", b"fine"), ("second.txt", b"x" * 600))
    return whole[:512 + 512 + 1024]  # both members, not the end-of-archive blocks


def _truncated_gzip() -> bytes:
    whole = archive(("ok.txt", b"fine"), ("more.bin", os.urandom(100_000)), fmt="tar.gz")
    return whole[:-20]


def _garbage_after_member() -> bytes:
    whole = archive(("ok.txt", b"fine"))
    return whole[:1024] + os.urandom(512) + whole[1024:]


BAD_ARCHIVES = {
    "not an archive": lambda: b"this is not a tar archive at all" * 100,
    "empty body": lambda: b"",
    "truncated in a member": _truncated_in_data,
    "truncated at a member boundary": _without_end_marker,
    "truncated gzip": _truncated_gzip,
    "garbage between members": _garbage_after_member,
    "member leading out": lambda: archive(("ok.txt", b"fine"), ("../evil", b"x")),
    "nested member leading out": lambda: archive(("ok.txt", b"fine"),
                                                 ("docs/../../evil", b"x")),
    "absolute member": lambda: archive(("ok.txt", b"fine"), ("/etc/evil", b"x")),
    "symlink member": lambda: archive(("ok.txt", b"fine"), ("link", b""),
                                      kind=tarfile.SYMTYPE),
    "fifo member": lambda: archive(("ok.txt", b"fine"), ("pipe", b""),
                                   kind=tarfile.FIFOTYPE),
    "key too long": lambda: archive(("ok.txt", b"fine"), ("k" * 1025, b"x")),
}


@pytest.fixture(scope="module")
def filled(env: Env) -> tuple[str, str]:
    bot, bucket = env.make_bot("alice")
    fill(env.s3["alice"], bucket, CONTENT)
    return bot, bucket


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_a_bad_archive_changes_nothing(env: Env, filled: tuple[str, str], case: str) -> None:
    bot, bucket = filled
    s3 = env.s3["alice"]
    before, blobs, counters = state(s3, bucket), blob_files(env.server), env.usage(bucket)
    body = BAD_ARCHIVES[case]()
    with env.api("alice") as api:
        for mode in ("replace", "merge"):
            refused(post(api, bot, body, mode=mode), 400, "VALIDATION_ERROR")
    assert state(s3, bucket) == before
    assert env.usage(bucket) == counters
    assert blob_files(env.server) == blobs  # the members stored before the failure: gone


def test_quota_is_checked_against_the_final_package(env: Env) -> None:
    s3 = env.s3["alice"]
    bot, bucket = env.make_bot("alice")
    s3.put_object(Bucket=bucket, Key="kept.bin", Body=b"k" * 600_000)
    env.admin_call("PUT", f"/api/v1/admin/buckets/{bucket}/quota",
                   {"max_bytes": 1_000_000, "max_objects": 20})
    before, blobs = state(s3, bucket), blob_files(env.server)

    too_big = archive(("a.bin", b"a" * 700_000), ("b.bin", b"b" * 400_000))
    fits_alone = archive(("new.bin", b"n" * 600_000))
    too_many = archive(*[(f"f{i:02}", b"x") for i in range(21)])
    with env.api("alice") as api:
        for body, mode in ((too_big, "replace"), (too_big, "merge"),
                           (fits_alone, "merge"), (too_many, "replace")):
            answer = post(api, bot, body, mode=mode)
            refused(answer, 507, "INSUFFICIENT_STORAGE")
            assert state(s3, bucket) == before, mode
            assert blob_files(env.server) == blobs
    # A body larger than the quota could ever hold is refused before it is read.
    conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    try:
        conn.putrequest("POST", f"{BOTS}/{bot}/package")
        conn.putheader("Authorization", f"Bearer {env.tokens['alice']}")
        conn.putheader("Content-Length", str(10**12))
        conn.endheaders(b"\0" * 1024)
        answer = conn.getresponse()
        assert answer.status == 507
        assert json.loads(answer.read())["error"]["code"] == "INSUFFICIENT_STORAGE"
    finally:
        conn.close()
    assert state(s3, bucket) == before

    # Replacing the package with the archive that did not fit beside it: the old go.
    with env.api("alice") as api:
        answer = post(api, bot, fits_alone)
    assert answer.status_code == 200, answer.text
    assert sorted(state(s3, bucket)) == ["new.bin"]
    assert env.usage(bucket) == (600_000, 1)


def test_a_client_that_goes_away_changes_nothing(env: Env, filled: tuple[str, str]) -> None:
    bot, bucket = filled
    s3 = env.s3["alice"]
    before, blobs = state(s3, bucket), blob_files(env.server)
    body = archive(("ok.txt", b"fine"), ("big.bin", os.urandom(4 * MiB)))
    host, port = "127.0.0.1", env.server.port
    with socket.create_connection((host, port)) as conn:
        conn.sendall((f"POST {BOTS}/{bot}/package HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {env.tokens['alice']}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:len(body) // 2])
        time.sleep(0.3)
    time.sleep(1.0)
    assert state(s3, bucket) == before
    assert blob_files(env.server) == blobs


# -- memory, authorization -------------------------------------------------------------------

def test_export_streams_in_flat_memory(env: Env, tmp_path: Path) -> None:
    s3 = env.s3["alice"]
    bot, bucket = env.make_bot("alice")
    source = tmp_path / "big.bin"
    digest = hashlib.md5()
    with source.open("wb") as out:
        block = os.urandom(MiB)
        for i in range(256):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            out.write(chunk)
    s3.upload_file(str(source), bucket, "big.bin")
    s3.put_object(Bucket=bucket, Key="small.txt", Body=b"small")
    source.unlink()

    assert env.server.proc is not None
    process = psutil.Process(env.server.proc.pid)
    baseline = process.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with env.api("alice") as api, api.stream("GET", f"/{bot}/package") as answer:
            assert answer.status_code == 200
            reader = _StreamReader(answer.iter_bytes(MiB))
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                seen = {}
                for member in tar:
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        continue  # the package's folders
                    got = hashlib.md5()
                    while chunk := extracted.read(MiB):
                        got.update(chunk)
                    seen[member.name] = (member.size, got.hexdigest())
    finally:
        stop.set()
        sampler.join()
    assert seen == {"big.bin": (256 * MiB, digest.hexdigest()),
                    "small.txt": (5, hashlib.md5(b"small").hexdigest())}
    assert peak - baseline < 150 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


class _StreamReader(io.RawIOBase):
    """A response body as a file, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def test_who_may_export_and_import(env: Env) -> None:
    bot, bucket = env.make_bot("alice", admins=("bob",))
    s3 = env.s3["alice"]
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    before = set(state(s3, bucket))
    body = archive(("b.txt", b"b"))
    with env.api("carol") as api:
        refused(api.get(f"/{bot}/package"), 403, "FORBIDDEN")
        refused(post(api, bot, body), 403, "FORBIDDEN")
        refused(api.get(f"/{uuid.uuid4()}/package"), 404, "NOT_FOUND")
        refused(post(api, str(uuid.uuid4()), body), 404, "NOT_FOUND")
    with env.api(None) as api:
        refused(api.get(f"/{bot}/package"), 401, "UNAUTHORIZED")
    with env.api("alice-read") as api:
        assert api.get(f"/{bot}/package").status_code == 200
        refused(post(api, bot, body), 403, "FORBIDDEN")  # no bots:write
    with env.api("alice-bots") as api:
        refused(post(api, bot, body), 403, "FORBIDDEN")  # no storage:write
    with env.api("admin-no-admin") as api:  # the admin role, but not this credential
        refused(api.get(f"/{bot}/package"), 403, "FORBIDDEN")
    assert set(state(s3, bucket)) == before

    with env.api("bob") as api:  # an admin of the bot, not the bucket's owner
        exported = api.get(f"/{bot}/package")
        assert exported.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(exported.content)) as tar:
            assert {entry_key(m) for m in tar.getmembers()} == before
        assert post(api, bot, body, mode="merge").status_code == 200
    with env.api("admin") as api:  # a gateway administrator
        assert api.get(f"/{bot}/package").status_code == 200
        head = api.head(f"/{bot}/package")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-disposition"] == f'attachment; filename="{bucket}.tar"'
    assert set(state(s3, bucket)) == before | {"b.txt"}


# -- a crash -------------------------------------------------------------------------------

def test_a_crash_mid_import_leaves_the_old_or_the_new_package(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """kill -9 while an import runs: after the restart the package is exactly as before
    or exactly as the archive says, never a mix."""
    made = Env.start(tmp_path_factory.mktemp("crash") / "data", users=("alice",))
    server, s3 = made.server, made.s3["alice"]
    try:
        bot, bucket = made.make_bot("alice")
        for i in range(20):
            s3.put_object(Bucket=bucket, Key=f"old/{i:02}.txt", Body=b"old" * i)
        before = state(s3, bucket)
        members = [(f"new/{i:03}.bin", os.urandom(256 * 1024)) for i in range(120)]
        body = archive(*members)

        def send() -> None:
            try:
                with made.api("alice") as api:
                    post(api, bot, body)
            except httpx.HTTPError:
                pass  # the gateway died under it

        blobs = blob_files(server)
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 30
        while blob_files(server) < blobs + 30 and time.monotonic() < deadline:
            time.sleep(0.005)  # members are being stored: the commit is still to come
        server.kill()
        sender.join()
        server.start()
        after = state(s3, bucket)
        expected = {key: (f'"{hashlib.md5(data).hexdigest()}"', len(data))
                    for key, data in members}
        assert after in (before, expected), sorted(after)[:5]
    finally:
        server.stop()
