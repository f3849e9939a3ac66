"""The metadata database fails under a running gateway: SQLite locked by another process or
out of disk, PostgreSQL unreachable or gone between a COMMIT and its answer.

Clients get 503 (with Retry-After) or 507, never 500; nothing refused becomes visible;
an object or part whose COMMIT may have happened stays whole; quota held by a write the
outage cut is given back; and the gateway recovers by itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from sqlalchemy.engine import make_url

from campaigns._faultkit import TcpProxy, fill, outcome, tmpfs, until
from tests import _postgres
from tests._server import GatewayProcess, free_port, run_cli_here

API = "/api/v1/storage"
MiB = 1024 * 1024


def s3_client(server: GatewayProcess) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key,
                        config=Config(retries={"total_max_attempts": 1}))


def api_client(server: GatewayProcess, env: dict[str, str]) -> httpx.Client:
    made = run_cli_here(server.data_dir, "token", "create", "--user", "admin", "--name",
                        uuid.uuid4().hex[:8], "--permission=storage:read",
                        "--permission=storage:write", "--json", env={**os.environ, **env})
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    return httpx.Client(base_url=server.url + API, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})


def put_status(s3: Any, bucket: str, key: str, body: bytes = b"x") -> tuple[int, str]:
    return outcome(partial(s3.put_object, Bucket=bucket, Key=key, Body=body))


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite_locked_elsewhere_answers_503_then_recovers(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": "", "GATEWAY_DATABASE_BUSY_TIMEOUT": "1"}
    server = GatewayProcess(tmp_path / "data", env_extra=env).start()
    try:
        s3 = s3_client(server)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="kept", Body=b"kept")
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "locked", "Key": "k"})
        with api_client(server, env) as api:
            locker = sqlite3.connect(server.data_dir / "gateway.db", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                started = time.monotonic()
                refused = httpx.put(url, content=b"x" * 100, timeout=60)
                assert time.monotonic() - started < 10
                assert refused.status_code == 503, refused.text
                assert b"<Code>ServiceUnavailable</Code>" in refused.content
                assert refused.headers["retry-after"] == "1"
                json_refused = api.put("/buckets/locked/objects/j", content=b"y")
                assert json_refused.status_code == 503, json_refused.text
                assert json_refused.json()["error"] == "service_unavailable"
                assert json_refused.headers["retry-after"] == "1"
                assert outcome(partial(s3.delete_object, Bucket="locked", Key="kept")) == \
                    (503, "ServiceUnavailable")
                # Reads do not wait for the writer's lock.
                assert s3.get_object(Bucket="locked", Key="kept")["Body"].read() == b"kept"
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            assert httpx.put(url, content=b"x" * 100, timeout=60).status_code == 200
            assert api.put("/buckets/locked/objects/j", content=b"y").status_code == 200
        assert s3.get_object(Bucket="locked", Key="kept")["Body"].read() == b"kept"
        assert "internal error" not in server.log()
    finally:
        server.stop()


def test_sqlite_out_of_disk_answers_507_then_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "medium", "8m") as refused:
        if refused is not None:
            pytest.skip(f"cannot mount a tmpfs here: {refused}")
        env = {"GATEWAY_DATABASE_URL": "", "GATEWAY_BACKEND": f"fs://{tmp_path / 'objects'}"}
        server = GatewayProcess(tmp_path / "medium" / "data", env_extra=env).start()
        try:
            s3 = s3_client(server)
            s3.create_bucket(Bucket="full")
            s3.put_object(Bucket="full", Key="kept", Body=b"kept")
            fill(tmp_path / "medium" / "filler")
            for n in range(3):
                assert put_status(s3, "full", f"refused-{n}-" + "k" * 200) == \
                    (507, "InsufficientStorage")
            assert s3.get_object(Bucket="full", Key="kept")["Body"].read() == b"kept"
            (tmp_path / "medium" / "filler").unlink()
            assert put_status(s3, "full", "after") == (200, "")
            listed = [o["Key"] for o in s3.list_objects_v2(Bucket="full")["Contents"]]
            assert listed == ["after", "kept"]
            assert "internal error" not in server.log()
        finally:
            server.stop()


# -- PostgreSQL, through a proxy that can be cut ------------------------------------------


class Through:
    def __init__(self, server: GatewayProcess, proxy: TcpProxy, direct: str) -> None:
        self.server, self.proxy, self.direct = server, proxy, direct
        self.s3 = s3_client(server)

    def reserved_bytes(self, bucket: str) -> int:
        rows = _postgres.query(self.direct,
                               f"SELECT reserved_bytes FROM buckets WHERE name = '{bucket}'")
        return int(rows[0][0])


@pytest.fixture(scope="module")
def through(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Through]:
    why = _postgres.unreachable()
    if why is not None:
        pytest.skip(why)
    direct = _postgres.create_database()
    url = make_url(direct)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432), free_port()).start()
    env = {"GATEWAY_DATABASE_URL": url.set(host="127.0.0.1", port=proxy.port)
           .render_as_string(hide_password=False), "GATEWAY_HEARTBEAT_SECONDS": "1"}
    server = GatewayProcess(tmp_path_factory.mktemp("pg") / "data", env_extra=env).start()
    try:
        yield Through(server, proxy, direct)
    finally:
        server.stop()
        proxy.close()
        _postgres.drop_database(direct)


def test_postgres_unreachable_answers_503_then_recovers(through: Through) -> None:
    s3, server = through.s3, through.server
    s3.create_bucket(Bucket="pgcut")
    done = run_cli_here(server.data_dir, "quota", "set", "pgcut", "--max-bytes", "1GiB",
                        env={**os.environ, "GATEWAY_DATABASE_URL": through.direct})
    assert done.returncode == 0, done.stderr
    s3.put_object(Bucket="pgcut", Key="kept", Body=b"kept")
    # An upload holds quota for its 2 MiB, then the database goes before it commits.
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        for n in range(8):
            if n == 1:
                sent.set()
            time.sleep(0.1)
            yield b"z" * (256 * 1024)

    url = s3.generate_presigned_url("put_object", Params={"Bucket": "pgcut", "Key": "cut"})
    answers: list[int] = []
    uploader = threading.Thread(target=lambda: answers.append(httpx.put(
        url, content=body(), headers={"Content-Length": str(2 * MiB)}, timeout=60).status_code))
    uploader.start()
    assert sent.wait(10)
    through.proxy.cut()
    try:
        assert put_status(s3, "pgcut", "refused") == (503, "ServiceUnavailable")
        assert outcome(lambda: s3.get_object(Bucket="pgcut", Key="kept")["Body"].read()) == \
            (503, "ServiceUnavailable")
        assert outcome(partial(s3.list_objects_v2, Bucket="pgcut")) == \
            (503, "ServiceUnavailable")
        readyz = httpx.get(server.url + "/readyz", timeout=30)
        assert readyz.status_code == 503
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        uploader.join(60)
        assert answers == [503]
    finally:
        through.proxy.restore()
    assert until(lambda: put_status(s3, "pgcut", "after")[0] == 200, 30) is not None
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    assert s3.get_object(Bucket="pgcut", Key="kept")["Body"].read() == b"kept"
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="pgcut")["Contents"]]
    assert listed == ["after", "kept"]
    # The cut upload's hold was released at a heartbeat once the database came back.
    assert until(lambda: through.reserved_bytes("pgcut") == 0, 15) is not None, \
        through.reserved_bytes("pgcut")
    assert "internal error" not in server.log()


def test_postgres_commit_whose_answer_is_lost_keeps_its_bytes(through: Through) -> None:
    """PostgreSQL commits, then the connection drops before the answer: the client hears
    503, and the object (or part) that did commit must be whole, not a row whose blob was
    thrown away."""
    s3 = through.s3
    s3.create_bucket(Bucket="pglost")
    data = os.urandom(100_000)
    through.proxy.lose_commit_ack(b"lost-object")
    assert put_status(s3, "pglost", "lost-object", data) == (503, "ServiceUnavailable")
    assert through.proxy.commit_lost.is_set()
    assert until(lambda: outcome(partial(s3.head_object, Bucket="pglost",
                                         Key="lost-object"))[0] == 200, 30) is not None
    assert s3.get_object(Bucket="pglost", Key="lost-object")["Body"].read() == data

    upload = s3.create_multipart_upload(Bucket="pglost", Key="lost-part")["UploadId"]
    through.proxy.lose_commit_ack(upload.encode())
    assert outcome(partial(s3.upload_part, Bucket="pglost", Key="lost-part", UploadId=upload,
                           PartNumber=1, Body=data)) == (503, "ServiceUnavailable")
    assert through.proxy.commit_lost.is_set()
    parts = s3.list_parts(Bucket="pglost", Key="lost-part", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    s3.complete_multipart_upload(
        Bucket="pglost", Key="lost-part", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": parts[0]["ETag"]}]})
    assert s3.get_object(Bucket="pglost", Key="lost-part")["Body"].read() == data


async def test_busy_timeout_setting_reaches_sqlite(tmp_path: Path) -> None:
    from gateway.metadata.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", busy_timeout=2.5)
    await db.start()
    try:
        assert await db.read(lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout")
                             .scalar()) == 2500
    finally:
        await db.aclose()
