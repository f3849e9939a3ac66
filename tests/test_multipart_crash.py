"""kill -9 while CompleteMultipartUpload runs: afterwards every key holds its old object or
the whole new one, and every upload not completed can still be completed or aborted."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.checksums import DigestingStream
from gateway.metadata import repo
from gateway.types import ObjectAttributes
from tests._inprocess import ROOT_KEY, in_process_gateway
from tests._server import GatewayProcess

MiB = 1024 * 1024
UPLOADS = 12
CYCLES = 2


def client(server: GatewayProcess) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=20,
                      max_pool_connections=UPLOADS))


def multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


@pytest.mark.slow
def test_kill_9_during_complete(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data").start()
    rng = random.Random(11)
    try:
        for cycle in range(CYCLES):
            c = client(server)
            bucket = f"crash-mpu-{cycle}"
            c.create_bucket(Bucket=bucket)
            plan: dict[str, dict[str, Any]] = {}
            for i in range(UPLOADS):
                key = f"obj/{i}"
                old = os.urandom(1000 + i)
                c.put_object(Bucket=bucket, Key=key, Body=old)
                parts = [os.urandom(5 * MiB), os.urandom(rng.randint(1, 300_000))]
                upload_id = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                listed = []
                for n, body in enumerate(parts, start=1):
                    etag = c.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                         PartNumber=n, Body=body)["ETag"]
                    listed.append({"PartNumber": n, "ETag": etag})
                plan[key] = {"old": old, "new": b"".join(parts), "parts": parts,
                             "upload": upload_id, "listed": listed}

            def complete(key: str, c: Any = c, bucket: str = bucket,
                         plan: dict[str, dict[str, Any]] = plan) -> None:
                p = plan[key]
                try:
                    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=p["upload"],
                                                MultipartUpload={"Parts": p["listed"]})
                    p["acknowledged"] = True
                except Exception:  # killed mid-request: expected
                    p["acknowledged"] = False

            threads = [threading.Thread(target=complete, args=(k,)) for k in plan]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.005, 0.06))
            server.kill()
            for t in threads:
                t.join(30)

            server.start()
            c = client(server)
            open_uploads = {u["UploadId"] for u in
                            c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
            outcomes = {"new": 0, "old": 0}
            for key, p in plan.items():
                got = c.get_object(Bucket=bucket, Key=key)
                body = got["Body"].read()
                if body == p["new"]:
                    outcomes["new"] += 1
                    assert got["ETag"] == multipart_etag(p["parts"])
                    assert p["upload"] not in open_uploads
                    continue
                assert body == p["old"], f"{key}: neither the old nor the new object"
                assert not p["acknowledged"], f"{key}: acknowledged completion lost"
                assert got["ETag"] == f'"{hashlib.md5(p["old"]).hexdigest()}"'
                outcomes["old"] += 1
                assert p["upload"] in open_uploads, f"{key}: unfinished upload vanished"
                # The upload survived the crash: it can be finished either way now.
                if outcomes["old"] % 2:
                    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=p["upload"],
                                                MultipartUpload={"Parts": p["listed"]})
                    assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == p["new"]
                else:
                    c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=p["upload"])
                    with pytest.raises(ClientError):
                        c.list_parts(Bucket=bucket, Key=key, UploadId=p["upload"])
                    assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == p["old"]
            assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
            print(f"cycle {cycle}: {outcomes}")
    finally:
        server.stop()


class Crash(BaseException):
    """The process dies here (kill -9): nothing after this point runs."""


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("step", ["backend", "database"])
async def test_parts_never_outlive_the_row_of_an_aborted_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Wherever a crash cuts an abort short, the upload's row remains (aborting it again, or
    its expiry, finishes the job) or its parts are gone: parts with no row are found by
    nothing and would stay forever."""
    async with in_process_gateway(tmp_path) as gw:
        principal, _ = await gw.accounts.lookup(ROOT_KEY)
        assert principal is not None
        await gw.buckets.create(principal, "aborts")
        upload = await gw.multipart.create(principal, "aborts", "k", ObjectAttributes())
        await gw.multipart.upload_part(upload, 1, DigestingStream(_chunks(b"p" * 1000)),
                                       size_hint=1000)
        uploads = tmp_path / "objects" / "uploads"
        assert len(list(uploads.iterdir())) == 1

        async def crash(*args: Any, **kwargs: Any) -> None:
            raise Crash

        target = gw.ctx.backend if step == "backend" else gw.ctx.db
        monkeypatch.setattr(target, "abort_multipart" if step == "backend" else "write",
                            crash)
        with pytest.raises(Crash):
            await gw.multipart.abort(principal, "aborts", "k", upload.id)
        monkeypatch.undo()

        row = await gw.ctx.db.read(lambda conn: repo.upload(conn, upload.id))
        assert row is not None or list(uploads.iterdir()) == [], "parts outlived their row"
        if row is not None:
            await gw.multipart.abort(principal, "aborts", "k", upload.id)
        assert list(uploads.iterdir()) == []
        assert (await gw.quotas.get("aborts")).used_bytes == 0
