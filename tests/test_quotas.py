"""Bucket quotas are exact at write time: bytes, objects and object size, through single
PUTs, copies and multipart parts, under concurrency, and across a crash."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import _postgres as postgres
from tests._errors import client_error
from tests._server import GatewayProcess, run_cli, run_cli_here
from tests.conftest import make_client

MiB = 1024 * 1024
#: Unset, the limits are the Storage API reference's (10 GiB, 10,000 objects, 100 MiB):
#: the module's gateways run with them, and each test sets its bucket's own.
REFERENCE_DEFAULTS = {"GATEWAY_QUOTA_BUCKET_BYTES": "", "GATEWAY_QUOTA_BUCKET_OBJECTS": "",
                      "GATEWAY_QUOTA_MAX_OBJECT_SIZE": ""}


def gw(server: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway <args>`` spawned, as an operator runs it (once below: ``quota set``)."""
    return run_cli(server.data_dir, *args, env=server.env())


def cli(server: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway <args>`` by the CLI's own ``main`` in this process (``run_cli_here``), in
    the server's environment: as the spawned command (``gw``), without an interpreter
    start-up each time."""
    return run_cli_here(server.data_dir, *args, env=server.env())



def cli_json(server: GatewayProcess, *args: str) -> Any:
    done = cli(server, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Target:
    """A gateway under test, an S3 client of its root user, and an admin session on its
    JSON API. Quotas are read and set through the API here (the same ``QuotaService`` and
    the same fields as ``gateway quota get|set --json``); the CLI has tests of its own."""

    server: GatewayProcess
    s3: Any
    api: httpx.Client

    @classmethod
    def of(cls, server: GatewayProcess) -> Target:
        login = httpx.post(server.url + "/api/v1/auth/login", timeout=30, json={
            "access_key": server.access_key, "secret_key": server.secret_key})
        assert login.status_code == 200, login.text
        api = httpx.Client(base_url=server.url + "/api/v1/admin", timeout=30, headers={
            "Authorization": f"Bearer {login.json()['data']['token']}"})
        # Standard retries, as users have them: the quota error must not be retried.
        s3 = make_client(server, config=Config(retries={"mode": "standard",
                                                        "max_attempts": 5}))
        return cls(server, s3, api)

    def quota(self, bucket: str) -> dict[str, Any]:
        got = self.api.get(f"/buckets/{bucket}/quota")
        assert got.status_code == 200, got.text
        result: dict[str, Any] = got.json()["data"]
        return result

    def set_quota(self, bucket: str, **limits: Any) -> dict[str, Any]:
        done = self.api.put(f"/buckets/{bucket}/quota", json=limits)
        assert done.status_code == 200, done.text
        result: dict[str, Any] = done.json()["data"]
        return result


class Targets:
    """The module's gateways, one per database, started when a test first needs it."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.started: dict[str, Target] = {}
        self.servers: list[GatewayProcess] = []
        self.databases: list[str] = []

    def get(self, database: str) -> Target:
        if database not in self.started:
            env = {"GATEWAY_HEARTBEAT_SECONDS": "1", **REFERENCE_DEFAULTS}
            if database == "postgresql":
                reason = postgres.unreachable()
                if reason is not None:
                    pytest.skip(reason)
                env["GATEWAY_DATABASE_URL"] = postgres.create_database()
                self.databases.append(env["GATEWAY_DATABASE_URL"])
            server = GatewayProcess(self.tmp.mktemp(f"quotas-{database}") / "data",
                                    env_extra=env)
            self.servers.append(server)
            self.started[database] = Target.of(server.start())
        return self.started[database]

    def close(self) -> None:
        for target in self.started.values():
            target.api.close()
        for server in self.servers:
            server.stop()
        for url in self.databases:
            postgres.drop_database(url)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    pool = Targets(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, targets: Targets) -> Target:
    """Quotas hold in one SQL statement: shown on both databases (tests whose point is not
    the database narrow this to SQLite with ``sqlite_only``)."""
    return targets.get(str(request.param))


sqlite_only = pytest.mark.parametrize("target", ["sqlite"], indirect=True)


@pytest.fixture
def bucket(target: Target) -> str:
    name = f"q-{uuid.uuid4().hex[:16]}"
    target.s3.create_bucket(Bucket=name)
    return name


def stored(s3: Any, bucket: str) -> tuple[int, int]:
    objs = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sum(o["Size"] for o in objs), len(objs)


@sqlite_only
def test_the_reference_defaults_apply_to_new_buckets(target: Target, bucket: str) -> None:
    # Unset, the limits are the Storage API reference's: 10 GiB, 10,000 objects, 100 MiB.
    got = target.quota(bucket)
    assert (got["max_bytes"], got["max_objects"], got["max_object_size"]) == (
        10 * 1024**3, 10_000, 100 * MiB)
    assert got["overrides"] == []
    # Refused from the announced length, before the body is taken.
    code, status = client_error(target.s3.put_object, Bucket=bucket, Key="big",
                                Body=b"x" * (100 * MiB + 1))
    assert (code, status) == ("EntityTooLarge", 400)
    target.s3.put_object(Bucket=bucket, Key="ok", Body=b"x" * 1000)
    assert target.quota(bucket)["used_bytes"] == 1000


@sqlite_only
def test_quota_error_is_final_and_not_retried(target: Target, bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_bytes=1000)
    sent: list[str] = []
    s3.meta.events.register("before-send.s3.PutObject",
                            lambda request, **_: sent.append(request.url))
    try:
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1001)
    finally:
        s3.meta.events.unregister("before-send.s3.PutObject")
    error = info.value.response
    assert error["Error"]["Code"] == "QuotaExceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Quota"] == "1000"
    assert error["Error"]["Used"] == "0"
    assert len(sent) == 1  # standard retry mode did not try again
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)  # exactly at the limit
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"], got["percent_bytes"]) == (1000, 1, 100.0)


def test_overwrites_count_the_difference_and_deletes_free(target: Target, bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_bytes=3000)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 2000)
    s3.put_object(Bucket=bucket, Key="a", Body=b"y" * 2500)  # +500
    assert target.quota(bucket)["used_bytes"] == 2500
    assert client_error(s3.put_object, Bucket=bucket, Key="b",
                        Body=b"z" * 501)[0] == "QuotaExceeded"
    s3.put_object(Bucket=bucket, Key="b", Body=b"z" * 500)
    assert client_error(s3.copy_object, Bucket=bucket, Key="c",
                        CopySource={"Bucket": bucket, "Key": "b"})[0] == "QuotaExceeded"
    s3.delete_object(Bucket=bucket, Key="a")
    s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "b"})
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}]})
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"]) == (500, 1) == stored(s3, bucket)


def test_object_count_and_object_size_limits(target: Target, bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_objects=3, max_object_size=100)
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    assert client_error(s3.put_object, Bucket=bucket, Key="d", Body=b"1") == (
        "QuotaExceeded", 403)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 100)  # an overwrite adds no object
    assert client_error(s3.put_object, Bucket=bucket, Key="a", Body=b"x" * 101) == (
        "EntityTooLarge", 400)
    s3.delete_object(Bucket=bucket, Key="b")
    s3.put_object(Bucket=bucket, Key="d", Body=b"1")
    got = target.set_quota(bucket, max_objects=None, max_object_size="default")
    assert got["max_objects"] is None and got["overrides"] == ["max_objects"]
    s3.put_object(Bucket=bucket, Key="e", Body=b"1")
    assert target.quota(bucket)["used_objects"] == 4


def test_multipart_parts_count_as_used(target: Target, bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_bytes=8 * MiB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                          Body=b"p" * (5 * MiB))
    assert target.quota(bucket)["used_bytes"] == 5 * MiB
    assert client_error(s3.put_object, Bucket=bucket, Key="other",
                        Body=b"o" * (4 * MiB))[0] == "QuotaExceeded"
    # Replacing a part counts the difference.
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                          Body=b"q" * (6 * MiB))
    assert target.quota(bucket)["used_bytes"] == 6 * MiB
    assert client_error(s3.upload_part, Bucket=bucket, Key="mp", UploadId=upload,
                        PartNumber=2, Body=b"r" * (3 * MiB))[0] == "QuotaExceeded"
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"]) == (6 * MiB, 1)
    # An aborted upload frees what its parts held.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp2")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp2", UploadId=upload, PartNumber=1, Body=b"s" * MiB)
    assert target.quota(bucket)["used_bytes"] == 7 * MiB
    s3.abort_multipart_upload(Bucket=bucket, Key="mp2", UploadId=upload)
    got = target.quota(bucket)
    assert (got["used_bytes"], got["reserved_bytes"]) == (6 * MiB, 0)


def test_parts_beyond_the_largest_object_are_refused_early(target: Target,
                                                          bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_object_size=6 * MiB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                   Body=b"a" * (5 * MiB))
    # Refused before its bytes are taken: the parts would make a 7 MiB object.
    assert client_error(s3.upload_part, Bucket=bucket, Key="mp", UploadId=upload,
                        PartNumber=2, Body=b"b" * (2 * MiB)) == ("EntityTooLarge", 400)
    assert target.quota(bucket)["used_bytes"] == 5 * MiB
    # Exactly at the limit; uploading a part again counts only what it replaces.
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=b"d" * MiB)
    p1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                        Body=b"c" * (5 * MiB))
    p2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2,
                        Body=b"e" * MiB)
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                                   {"PartNumber": 2, "ETag": p2["ETag"]}]})
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"]) == (6 * MiB, 1)


def test_completing_needs_room_for_one_more_object(target: Target, bucket: str) -> None:
    s3 = target.s3
    target.set_quota(bucket, max_objects=1)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"a")
    s3.put_object(Bucket=bucket, Key="first", Body=b"1")
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    assert client_error(s3.complete_multipart_upload, Bucket=bucket, Key="mp",
                        UploadId=upload, MultipartUpload=parts)[0] == "QuotaExceeded"
    s3.delete_object(Bucket=bucket, Key="first")
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload=parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"a"
    assert target.quota(bucket)["used_objects"] == 1


def test_quota_race_never_overshoots(target: Target, bucket: str) -> None:
    """20 uploads at once (10 single PUTs of 2 MiB, 10 multipart uploads of 5 MiB + 512 KiB)
    that together need 75 MiB, into a 16 MiB bucket."""
    s3 = target.s3
    limit = 16 * MiB
    target.set_quota(bucket, max_bytes=limit)

    def single(i: int) -> str:
        try:
            s3.put_object(Bucket=bucket, Key=f"single-{i}", Body=bytes([i]) * (2 * MiB))
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ok"

    def multipart(i: int) -> str:
        key = f"multi-{i}"
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        try:
            p1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1,
                                Body=bytes([i]) * (5 * MiB))
            p2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=2,
                                Body=bytes([i]) * (512 * 1024))
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                                           {"PartNumber": 2, "ETag": p2["ETag"]}]})
        except ClientError as exc:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            return str(exc.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(single if i % 2 else multipart, i) for i in range(20)]
        outcomes = [f.result() for f in futures]
    assert set(outcomes) == {"ok", "QuotaExceeded"}, outcomes
    size, count = stored(s3, bucket)
    assert size <= limit
    assert count == outcomes.count("ok")
    # Every object that exists is whole; nothing partial remains.
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        expected = 2 * MiB if obj["Key"].startswith("single") else 5 * MiB + 512 * 1024
        assert obj["Size"] == expected
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"]) == (size, count)
    assert (got["reserved_bytes"], got["reserved_objects"]) == (0, 0)


def test_a_crash_mid_upload_releases_its_reservation(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "data",
                          env_extra={"GATEWAY_HEARTBEAT_SECONDS": "1"}).start()
    apis: list[httpx.Client] = []
    try:
        target = Target.of(proc)
        apis.append(target.api)
        client = target.s3
        client.create_bucket(Bucket="crash")
        target.set_quota("crash", max_bytes=10 * MiB)
        client.put_object(Bucket="crash", Key="kept", Body=b"k" * MiB)
        url = client.generate_presigned_url("put_object",
                                            Params={"Bucket": "crash", "Key": "torn"})
        path = url.split(str(proc.port), 1)[1]
        with socket.create_connection(("127.0.0.1", proc.port)) as sock:
            sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{proc.port}\r\n"
                         f"Content-Length: {8 * MiB}\r\n\r\n".encode() + b"t" * MiB)
            deadline = time.monotonic() + 10
            while target.quota("crash")["reserved_bytes"] != 8 * MiB:
                assert time.monotonic() < deadline, "the upload reserved nothing"
                time.sleep(0.05)
            # The reservation holds: a second writer cannot take the same room.
            assert client_error(client.put_object, Bucket="crash", Key="other",
                                Body=b"o" * (2 * MiB))[0] == "QuotaExceeded"
            proc.kill()
        db = sqlite3.connect(proc.data_dir / "gateway.db")
        assert db.execute("SELECT COUNT(*) FROM quota_reservations").fetchone()[0] == 1
        db.close()
        proc.start()
        target = Target.of(proc)
        apis.append(target.api)
        deadline = time.monotonic() + 15
        while target.quota("crash")["reserved_bytes"]:
            assert time.monotonic() < deadline, "the dead instance's reservation stayed"
            time.sleep(0.1)
        got = target.quota("crash")
        assert (got["used_bytes"], got["used_objects"]) == (MiB, 1)
        with pytest.raises(ClientError):
            target.s3.head_object(Bucket="crash", Key="torn")
        target.s3.put_object(Bucket="crash", Key="other", Body=b"o" * (9 * MiB))
    finally:
        for api in apis:
            api.close()
        proc.stop()


@sqlite_only
def test_quota_cli_lists_for_people_and_scripts(target: Target, bucket: str) -> None:
    server = target.server
    target.set_quota(bucket, max_object_size=100)
    # Sizes with units, "unlimited" and "default" (follow GATEWAY_QUOTA_*) in one call.
    spawned = gw(server, "quota", "set", bucket, "--max-bytes", "10GiB", "--max-objects",
                 "unlimited", "--max-object-size", "default", "--json")
    assert spawned.returncode == 0, spawned.stderr
    got = json.loads(spawned.stdout)
    assert (got["max_bytes"], got["max_objects"], got["max_object_size"]) == (
        10 * 1024**3, None, 100 * MiB)
    assert got["overrides"] == ["max_bytes", "max_objects"]
    target.s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 2048)
    table = cli(server, "quota", "list")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if row.startswith(bucket))
    assert "2.0 KiB" in line and "10.0 GiB" in line
    listed = cli_json(server, "quota", "list")
    mine = next(u for u in listed if u["bucket"] == bucket)
    assert (mine["max_bytes"], mine["used_bytes"], mine["owner"]) == (10 * 1024**3, 2048,
                                                                      "admin")
    # What the CLI reads is what the gateway serves.
    assert cli_json(server, "quota", "get", bucket) == target.quota(bucket) == mine
    bad = cli(server, "quota", "set", bucket, "--max-bytes", "lots")
    assert bad.returncode == 1 and "not a size" in bad.stderr
    missing = cli(server, "quota", "get", "no-such-bucket")
    assert missing.returncode == 1


def test_usage_is_exact_after_many_mixed_writes(target: Target, bucket: str) -> None:
    s3 = target.s3
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"k{i % 7}",
                                              Body=b"x" * (i * 37)), range(60)))
        list(pool.map(lambda i: s3.delete_object(Bucket=bucket, Key=f"k{i}"), range(3)))
    got = target.quota(bucket)
    assert (got["used_bytes"], got["used_objects"]) == stored(s3, bucket)


def test_limits_sql_cannot_hold_are_refused(target: Target, bucket: str) -> None:
    """2**63 - 1 is the largest limit (SQL's BIGINT); a larger one is refused everywhere,
    never stored (SQLite's INTEGER would overflow: a 500)."""
    server, api, top = target.server, target.api, 2**63 - 1
    before = target.quota(bucket)
    too_big = cli(server, "quota", "set", bucket, "--max-bytes", str(top + 1))
    assert too_big.returncode == 1 and "at most" in too_big.stderr
    # --max-objects is a plain count: QuotaService.set itself refuses it.
    too_many = cli(server, "quota", "set", bucket, "--max-objects", str(top + 1))
    assert too_many.returncode == 1 and str(top) in too_many.stderr
    for name in ("max_bytes", "max_objects", "max_object_size"):
        for value in (top + 1, 2**64, 10**30):
            r = api.put(f"/buckets/{bucket}/quota", json={name: value})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert target.quota(bucket) == before
    assert cli_json(server, "quota", "set", bucket, "--max-bytes", str(top))["max_bytes"] == top
    got = target.set_quota(bucket, max_objects=top, max_object_size=top)
    assert (got["max_bytes"], got["max_objects"], got["max_object_size"]) == (top, top, top)
    assert api.get("/quotas", params={"offset": str(top + 1)}).status_code == 400
    page = api.get("/quotas", params={"offset": str(top), "limit": str(2**70)})
    assert page.status_code == 200, page.text
    assert page.json()["data"]["buckets"] == [] and page.json()["data"]["limit"] == 100
    assert cli_json(server, "quota", "get", bucket) == target.quota(bucket) == got
