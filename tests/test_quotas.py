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
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import _postgres as postgres
from tests._errors import client_error
from tests._server import GatewayProcess, run_cli
from tests.conftest import make_client

MiB = 1024 * 1024


def gw(server: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(server.data_dir, *args, env=server.env())


def quota(server: GatewayProcess, bucket: str) -> dict[str, Any]:
    done = gw(server, "quota", "get", bucket, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def set_quota(server: GatewayProcess, bucket: str, *flags: str) -> dict[str, Any]:
    done = gw(server, "quota", "set", bucket, *flags, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Quotas hold in one SQL statement: shown on both databases."""
    env = {"GATEWAY_HEARTBEAT_SECONDS": "1"}
    if request.param == "postgresql":
        reason = postgres.unreachable()
        if reason is not None:
            pytest.skip(reason)
        env["GATEWAY_DATABASE_URL"] = postgres.create_database()
    proc = GatewayProcess(tmp_path_factory.mktemp("quotas") / "data", env_extra=env).start()
    yield proc
    proc.stop()
    if request.param == "postgresql":
        postgres.drop_database(env["GATEWAY_DATABASE_URL"])


@pytest.fixture(scope="module")
def s3(server: GatewayProcess) -> Any:
    # Standard retries, as users have them: the quota error must not be retried.
    return make_client(server, config=Config(retries={"mode": "standard",
                                                      "max_attempts": 5}))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"q-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def stored(s3: Any, bucket: str) -> tuple[int, int]:
    objs = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sum(o["Size"] for o in objs), len(objs)


def test_the_reference_defaults_apply_to_new_buckets(tmp_path: Path) -> None:
    # Unset, the limits are the Storage API reference's: 10 GiB, 10,000 objects, 100 MiB.
    proc = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_QUOTA_BUCKET_BYTES": "", "GATEWAY_QUOTA_BUCKET_OBJECTS": "",
        "GATEWAY_QUOTA_MAX_OBJECT_SIZE": ""}).start()
    try:
        client = make_client(proc)
        client.create_bucket(Bucket="defaults")
        got = quota(proc, "defaults")
        assert (got["max_bytes"], got["max_objects"], got["max_object_size"]) == (
            10 * 1024**3, 10_000, 100 * MiB)
        assert got["overrides"] == []
        # Refused from the announced length, before the body is taken.
        code, status = client_error(client.put_object, Bucket="defaults", Key="big",
                                    Body=b"x" * (100 * MiB + 1))
        assert (code, status) == ("EntityTooLarge", 400)
        client.put_object(Bucket="defaults", Key="ok", Body=b"x" * 1000)
        assert quota(proc, "defaults")["used_bytes"] == 1000
    finally:
        proc.stop()


def test_quota_error_is_final_and_not_retried(server: GatewayProcess, s3: Any,
                                              bucket: str) -> None:
    set_quota(server, bucket, "--max-bytes", "1000")
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
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"], got["percent_bytes"]) == (1000, 1, 100.0)


def test_overwrites_count_the_difference_and_deletes_free(server: GatewayProcess, s3: Any,
                                                          bucket: str) -> None:
    set_quota(server, bucket, "--max-bytes", "3000")
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 2000)
    s3.put_object(Bucket=bucket, Key="a", Body=b"y" * 2500)  # +500
    assert quota(server, bucket)["used_bytes"] == 2500
    assert client_error(s3.put_object, Bucket=bucket, Key="b",
                        Body=b"z" * 501)[0] == "QuotaExceeded"
    s3.put_object(Bucket=bucket, Key="b", Body=b"z" * 500)
    assert client_error(s3.copy_object, Bucket=bucket, Key="c",
                        CopySource={"Bucket": bucket, "Key": "b"})[0] == "QuotaExceeded"
    s3.delete_object(Bucket=bucket, Key="a")
    s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "b"})
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}]})
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"]) == (500, 1) == stored(s3, bucket)


def test_object_count_and_object_size_limits(server: GatewayProcess, s3: Any,
                                             bucket: str) -> None:
    set_quota(server, bucket, "--max-objects", "3", "--max-object-size", "100")
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    assert client_error(s3.put_object, Bucket=bucket, Key="d", Body=b"1") == (
        "QuotaExceeded", 403)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 100)  # an overwrite adds no object
    assert client_error(s3.put_object, Bucket=bucket, Key="a", Body=b"x" * 101) == (
        "EntityTooLarge", 400)
    s3.delete_object(Bucket=bucket, Key="b")
    s3.put_object(Bucket=bucket, Key="d", Body=b"1")
    got = set_quota(server, bucket, "--max-objects", "unlimited", "--max-object-size",
                    "default")
    assert got["max_objects"] is None and got["overrides"] == ["max_objects"]
    s3.put_object(Bucket=bucket, Key="e", Body=b"1")
    assert quota(server, bucket)["used_objects"] == 4


def test_multipart_parts_count_as_used(server: GatewayProcess, s3: Any, bucket: str) -> None:
    set_quota(server, bucket, "--max-bytes", str(8 * MiB))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                          Body=b"p" * (5 * MiB))
    assert quota(server, bucket)["used_bytes"] == 5 * MiB
    assert client_error(s3.put_object, Bucket=bucket, Key="other",
                        Body=b"o" * (4 * MiB))[0] == "QuotaExceeded"
    # Replacing a part counts the difference.
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                          Body=b"q" * (6 * MiB))
    assert quota(server, bucket)["used_bytes"] == 6 * MiB
    assert client_error(s3.upload_part, Bucket=bucket, Key="mp", UploadId=upload,
                        PartNumber=2, Body=b"r" * (3 * MiB))[0] == "QuotaExceeded"
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"]) == (6 * MiB, 1)
    # An aborted upload frees what its parts held.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp2")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp2", UploadId=upload, PartNumber=1, Body=b"s" * MiB)
    assert quota(server, bucket)["used_bytes"] == 7 * MiB
    s3.abort_multipart_upload(Bucket=bucket, Key="mp2", UploadId=upload)
    got = quota(server, bucket)
    assert (got["used_bytes"], got["reserved_bytes"]) == (6 * MiB, 0)


def test_parts_beyond_the_largest_object_are_refused_early(server: GatewayProcess, s3: Any,
                                                          bucket: str) -> None:
    set_quota(server, bucket, "--max-object-size", str(6 * MiB))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                   Body=b"a" * (5 * MiB))
    # Refused before its bytes are taken: the parts would make a 7 MiB object.
    assert client_error(s3.upload_part, Bucket=bucket, Key="mp", UploadId=upload,
                        PartNumber=2, Body=b"b" * (2 * MiB)) == ("EntityTooLarge", 400)
    assert quota(server, bucket)["used_bytes"] == 5 * MiB
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
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"]) == (6 * MiB, 1)


def test_completing_needs_room_for_one_more_object(server: GatewayProcess, s3: Any,
                                                   bucket: str) -> None:
    set_quota(server, bucket, "--max-objects", "1")
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
    assert quota(server, bucket)["used_objects"] == 1


def test_quota_race_never_overshoots(server: GatewayProcess, s3: Any, bucket: str) -> None:
    """20 uploads at once (10 single PUTs of 2 MiB, 10 multipart uploads of 5 MiB + 512 KiB)
    that together need 75 MiB, into a 16 MiB bucket."""
    limit = 16 * MiB
    set_quota(server, bucket, "--max-bytes", str(limit))

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
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"]) == (size, count)
    assert (got["reserved_bytes"], got["reserved_objects"]) == (0, 0)


def test_a_crash_mid_upload_releases_its_reservation(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "data",
                          env_extra={"GATEWAY_HEARTBEAT_SECONDS": "1"}).start()
    try:
        client = make_client(proc)
        client.create_bucket(Bucket="crash")
        set_quota(proc, "crash", "--max-bytes", str(10 * MiB))
        client.put_object(Bucket="crash", Key="kept", Body=b"k" * MiB)
        url = client.generate_presigned_url("put_object",
                                            Params={"Bucket": "crash", "Key": "torn"})
        path = url.split(str(proc.port), 1)[1]
        with socket.create_connection(("127.0.0.1", proc.port)) as sock:
            sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{proc.port}\r\n"
                         f"Content-Length: {8 * MiB}\r\n\r\n".encode() + b"t" * MiB)
            deadline = time.monotonic() + 10
            while quota(proc, "crash")["reserved_bytes"] != 8 * MiB:
                assert time.monotonic() < deadline, "the upload reserved nothing"
                time.sleep(0.1)
            # The reservation holds: a second writer cannot take the same room.
            assert client_error(client.put_object, Bucket="crash", Key="other",
                                Body=b"o" * (2 * MiB))[0] == "QuotaExceeded"
            proc.kill()
        db = sqlite3.connect(proc.data_dir / "gateway.db")
        assert db.execute("SELECT COUNT(*) FROM quota_reservations").fetchone()[0] == 1
        db.close()
        proc.start()
        deadline = time.monotonic() + 15
        while quota(proc, "crash")["reserved_bytes"]:
            assert time.monotonic() < deadline, "the dead instance's reservation stayed"
            time.sleep(0.2)
        got = quota(proc, "crash")
        assert (got["used_bytes"], got["used_objects"]) == (MiB, 1)
        with pytest.raises(ClientError):
            client.head_object(Bucket="crash", Key="torn")
        client.put_object(Bucket="crash", Key="other", Body=b"o" * (9 * MiB))
    finally:
        proc.stop()


def test_quota_cli_lists_for_people_and_scripts(server: GatewayProcess, s3: Any,
                                                bucket: str) -> None:
    set_quota(server, bucket, "--max-bytes", "10GiB")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 2048)
    table = gw(server, "quota", "list")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if row.startswith(bucket))
    assert "2.0 KiB" in line and "10.0 GiB" in line
    listed = json.loads(gw(server, "quota", "list", "--json").stdout)
    mine = next(u for u in listed if u["bucket"] == bucket)
    assert (mine["max_bytes"], mine["used_bytes"], mine["owner"]) == (10 * 1024**3, 2048,
                                                                      "admin")
    bad = gw(server, "quota", "set", bucket, "--max-bytes", "lots")
    assert bad.returncode == 1 and "not a size" in bad.stderr
    missing = gw(server, "quota", "get", "no-such-bucket")
    assert missing.returncode == 1


def test_usage_is_exact_after_many_mixed_writes(server: GatewayProcess, s3: Any,
                                                bucket: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"k{i % 7}",
                                              Body=b"x" * (i * 37)), range(60)))
        list(pool.map(lambda i: s3.delete_object(Bucket=bucket, Key=f"k{i}"), range(3)))
    got = quota(server, bucket)
    assert (got["used_bytes"], got["used_objects"]) == stored(s3, bucket)


def test_limits_sql_cannot_hold_are_refused(server: GatewayProcess, bucket: str) -> None:
    """2**63 - 1 is the largest limit (SQL's BIGINT); a larger one is refused everywhere,
    never stored (SQLite's INTEGER would overflow: a 500)."""
    top = 2**63 - 1
    before = quota(server, bucket)
    too_big = gw(server, "quota", "set", bucket, "--max-bytes", str(top + 1))
    assert too_big.returncode == 1 and "at most" in too_big.stderr
    # --max-objects is a plain count: QuotaService.set itself refuses it.
    too_many = gw(server, "quota", "set", bucket, "--max-objects", str(top + 1))
    assert too_many.returncode == 1 and str(top) in too_many.stderr
    assert quota(server, bucket) == before
    assert set_quota(server, bucket, "--max-bytes", str(top))["max_bytes"] == top

    made = json.loads(gw(server, "token", "create", "--user", "admin", "--name",
                         uuid.uuid4().hex[:8], "--permission", "admin",
                         "--permission", "storage:read", "--json").stdout)
    with httpx.Client(base_url=server.url + "/api/v1/admin", timeout=30,
                      headers={"Authorization": f"Bearer {made['token']}"}) as api:
        for name in ("max_bytes", "max_objects", "max_object_size"):
            for value in (top + 1, 2**64, 10**30):
                r = api.put(f"/buckets/{bucket}/quota", json={name: value})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        r = api.put(f"/buckets/{bucket}/quota", json={"max_objects": top})
        assert r.status_code == 200 and r.json()["data"]["max_objects"] == top
        assert api.get("/quotas", params={"offset": str(top + 1)}).status_code == 400
        page = api.get("/quotas", params={"offset": str(top), "limit": str(2**70)})
        assert page.status_code == 200, page.text
        assert page.json()["data"]["buckets"] == [] and page.json()["data"]["limit"] == 100
    assert quota(server, bucket)["max_bytes"] == top
