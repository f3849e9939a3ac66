"""Multipart uploads under concurrency, and expiry of abandoned uploads.

Parts uploaded in parallel; CompleteMultipartUpload racing AbortMultipartUpload (exactly
one wins, never a torn object); a late UploadPart racing CompleteMultipartUpload (the object
is always made of the bytes whose ETags the completion listed); and a second gateway with
a 2-second expiry that aborts old uploads by itself.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests._errors import client_error
from tests._server import GatewayProcess
from tests.conftest import make_client
from tests.test_multipart import (
    MIN_PART,
    KiB,
    MiB,
    assert_bytes,
    body_of,
    complete,
    md5_hex,
    multipart_etag,
    put_part,
    read,
    start,
    status_of,
)


def outcome(call: Any, **kwargs: Any) -> tuple[str, Any]:
    """("ok", response) or (error code, response)."""
    try:
        return "ok", call(**kwargs)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"]), exc.response


def race(first: Callable[[], Any], second: Callable[[], Any], first_delay: float,
         second_delay: float) -> tuple[Any, Any]:
    """Run both calls in threads released together (each after its delay)."""
    barrier = threading.Barrier(2)

    def run(call: Callable[[], Any], delay: float) -> Any:
        barrier.wait()
        if delay:
            time.sleep(delay)
        return call()

    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(run, first, first_delay)
        b = pool.submit(run, second, second_delay)
        return a.result(), b.result()


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404, exc.response
        return False
    return True


def open_upload_ids(s3: Any, bucket: str) -> set[str]:
    return {u["UploadId"] for page in s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket) for u in page.get("Uploads", [])}


def test_parallel_parts(s3: Any, bucket: str) -> None:
    bodies = [body_of(MIN_PART) for _ in range(9)] + [body_of(MiB + 123)]
    upload_id = start(s3, bucket, "parallel")
    numbered = list(enumerate(bodies, 1))
    random.shuffle(numbered)
    with ThreadPoolExecutor(max_workers=10) as pool:
        parts = list(pool.map(lambda nb: put_part(s3, bucket, "parallel", upload_id, *nb),
                              numbered))
    listed = s3.list_parts(Bucket=bucket, Key="parallel", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (n, f'"{md5_hex(b)}"', len(b)) for n, b in enumerate(bodies, 1)]
    done = complete(s3, bucket, "parallel", upload_id,
                    sorted(parts, key=lambda p: p["PartNumber"]))
    assert done["ETag"] == multipart_etag(bodies)
    assert_bytes(read(s3, bucket, "parallel"), b"".join(bodies))


ROUNDS = 20


def test_complete_racing_abort(s3: Any, bucket: str) -> None:
    tail = body_of(3 * KiB)
    head = body_of(MIN_PART)
    s3.put_object(Bucket=bucket, Key="source", Body=head)
    winners: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        key = f"race-{round_}"
        upload_id = start(s3, bucket, key)
        # Part 1 by server-side copy (cheap), part 2 uploaded.
        copied = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": bucket, "Key": "source"})
        parts = [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
                 put_part(s3, bucket, key, upload_id, 2, tail)]
        # A completion takes a few milliseconds: aborts sent 0-25 ms later land before,
        # during and after it.
        (c_code, c_resp), (a_code, a_resp) = race(
            partial(outcome, complete, s3=s3, bucket=bucket, key=key, upload_id=upload_id,
                    parts=parts),
            partial(outcome, s3.abort_multipart_upload, Bucket=bucket, Key=key,
                    UploadId=upload_id),
            0.0, random.uniform(0, 0.025))

        assert upload_id not in open_upload_ids(s3, bucket), round_
        if c_code == "ok":
            assert c_resp["ETag"] == multipart_etag([head, tail])
            got = s3.get_object(Bucket=bucket, Key=key)
            assert got["ETag"] == multipart_etag([head, tail])
            assert_bytes(got["Body"].read(), head + tail, f"round {round_}")
            # The completion won, so the abort must not also report success.
            assert a_code == "NoSuchUpload", (round_, a_code, status_of(a_resp))
            winners["complete"] += 1
        else:
            assert c_code == "NoSuchUpload", (round_, c_code, c_resp)
            assert a_code == "ok", (round_, a_code, a_resp)
            assert status_of(a_resp) == 204
            assert not object_exists(s3, bucket, key), round_
            winners["abort"] += 1
    assert sum(winners.values()) == ROUNDS, winners


def test_late_part_racing_complete(s3: Any, bucket: str) -> None:
    first = body_of(MIN_PART)
    s3.put_object(Bucket=bucket, Key="source", Body=first)
    seen: Counter[tuple[str, str]] = Counter()
    for round_ in range(10):
        key = f"late-{round_}"
        early, late = body_of(256 * KiB), body_of(256 * KiB)
        upload_id = start(s3, bucket, key)
        copied = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                                     CopySource={"Bucket": bucket, "Key": "source"})
        parts = [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
                 put_part(s3, bucket, key, upload_id, 2, early)]
        delay = random.uniform(0, 0.03)
        (u_code, u_resp), (c_code, c_resp) = race(
            partial(outcome, s3.upload_part, Bucket=bucket, Key=key, UploadId=upload_id,
                    PartNumber=2, Body=late),
            partial(outcome, complete, s3=s3, bucket=bucket, key=key, upload_id=upload_id,
                    parts=parts),
            delay if round_ % 2 else 0.0, 0.0 if round_ % 2 else delay)
        seen[(u_code, c_code)] += 1

        assert u_code in ("ok", "NoSuchUpload"), (round_, u_code, u_resp)
        if u_code == "ok":
            assert u_resp["ETag"] == f'"{md5_hex(late)}"'
        if c_code == "ok":
            # The object is exactly the parts Complete listed, whatever the late upload did.
            assert c_resp["ETag"] == multipart_etag([first, early])
            part2 = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
            assert hashlib.md5(part2["Body"].read()).hexdigest() == md5_hex(early)
            assert_bytes(read(s3, bucket, key), first + early, f"round {round_}")
            assert upload_id not in open_upload_ids(s3, bucket)
        else:
            # Complete may lose only because the late part replaced the listed one first.
            assert c_code == "InvalidPart", (round_, c_code, c_resp)
            assert u_code == "ok", (round_, u_code, c_code)
            assert not object_exists(s3, bucket, key)
            listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
            assert [(p["PartNumber"], p["ETag"]) for p in listed] == [
                (1, parts[0]["ETag"]), (2, f'"{md5_hex(late)}"')]
            # The upload is still usable with the part it now has.
            done = complete(s3, bucket, key, upload_id,
                            [parts[0], {"PartNumber": 2, "ETag": f'"{md5_hex(late)}"'}])
            assert done["ETag"] == multipart_etag([first, late])
            assert_bytes(read(s3, bucket, key), first + late, f"round {round_} (retry)")
    assert sum(seen.values()) == 10, seen


@pytest.fixture
def short_expiry_gateway(tmp_path: Path) -> Any:
    server = GatewayProcess(tmp_path / "data",
                            env_extra={"GATEWAY_MULTIPART_EXPIRY": "2s"}).start()
    try:
        yield server
    finally:
        server.stop()


def test_old_uploads_expire(short_expiry_gateway: GatewayProcess) -> None:
    s3 = make_client(short_expiry_gateway)
    bucket = f"exp-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    old = start(s3, bucket, "old")
    part = put_part(s3, bucket, "old", old, 1, b"abandoned")
    assert open_upload_ids(s3, bucket) == {old}

    deadline = time.monotonic() + 15
    while old in open_upload_ids(s3, bucket):
        assert time.monotonic() < deadline, "an upload older than the expiry is still open"
        time.sleep(0.25)
    assert client_error(s3.list_parts, Bucket=bucket, Key="old",
                        UploadId=old) == ("NoSuchUpload", 404)
    assert client_error(s3.upload_part, Bucket=bucket, Key="old", UploadId=old,
                        PartNumber=2, Body=b"late") == ("NoSuchUpload", 404)
    assert client_error(complete, s3=s3, bucket=bucket, key="old", upload_id=old,
                        parts=[part]) == ("NoSuchUpload", 404)
    assert client_error(s3.head_object, Bucket=bucket, Key="old") == ("404", 404)

    # A young upload survives (for at least a second with a 2-second expiry).
    created = time.monotonic()
    young = start(s3, bucket, "young")
    young_part = put_part(s3, bucket, "young", young, 1, b"fresh")
    while time.monotonic() - created < 1.0:
        assert young in open_upload_ids(s3, bucket)
        time.sleep(0.2)
    done = complete(s3, bucket, "young", young, [young_part])
    assert done["ETag"] == multipart_etag([b"fresh"])
    assert read(s3, bucket, "young") == b"fresh"
    s3.delete_object(Bucket=bucket, Key="young")
    s3.delete_bucket(Bucket=bucket)
