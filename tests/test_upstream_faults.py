"""The upstream of an ``s3://`` backend goes away, mid-request and between requests.

The gateway must answer 503 (XML, ``ServiceUnavailable``) without committing anything,
never show half an object, keep serving what needs only metadata, and recover by itself
when the upstream returns. The upstream is a second gateway on the local filesystem, so its
data survives being killed.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._server import GatewayProcess, cli_json
from tests._upstreams import GatewayUpstream, backend_env
from tests.test_metrics import scrape

MiB = 1024 * 1024


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GatewayUpstream, GatewayProcess, Any]]:
    upstream = GatewayUpstream(tmp_path / "upstream").start()
    bucket = upstream.create_bucket()
    front = GatewayProcess(tmp_path / "front", env_extra=backend_env(upstream, bucket)).start()
    # One attempt per call: the test sees what the gateway answered, not boto3's retries.
    s3 = boto3.client("s3", endpoint_url=front.url, aws_access_key_id=front.access_key,
                      aws_secret_access_key=front.secret_key, region_name="us-east-1",
                      config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    s3.create_bucket(Bucket="data")
    try:
        yield upstream, front, s3
    finally:
        front.stop()
        upstream.stop()


def error_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket="data").get("Contents", [])]


def test_upstream_down_then_back(setup: tuple[GatewayUpstream, GatewayProcess, Any]) -> None:
    upstream, front, s3 = setup
    s3.put_object(Bucket="data", Key="before", Body=b"kept")
    upstream.kill()

    assert error_of(lambda: s3.put_object(Bucket="data", Key="during", Body=b"x" * 1000)) == \
        (503, "ServiceUnavailable")
    assert error_of(lambda: s3.get_object(Bucket="data", Key="before")) == \
        (503, "ServiceUnavailable")
    assert error_of(lambda: s3.copy_object(Bucket="data", Key="copy",
                                           CopySource={"Bucket": "data", "Key": "before"})) \
        == (503, "ServiceUnavailable")
    assert error_of(lambda: s3.create_multipart_upload(Bucket="data", Key="mp")) == \
        (503, "ServiceUnavailable")
    # What needs only the metadata still works, and shows nothing of the failed writes.
    assert s3.head_object(Bucket="data", Key="before")["ContentLength"] == 4
    assert keys(s3) == ["before"]
    assert s3.list_multipart_uploads(Bucket="data").get("Uploads", []) == []
    # Operators see it: four requests failed on the backend, each answered 503.
    metrics = scrape(front)
    assert sum(metrics["gateway_backend_errors_total"].values()) == 4, \
        metrics["gateway_requests_total"]
    assert sum(value for labels, value in metrics["gateway_requests_total"].items()
               if labels[-1] == "503") == 4

    upstream.start()
    s3.put_object(Bucket="data", Key="after", Body=b"new")
    assert s3.get_object(Bucket="data", Key="before")["Body"].read() == b"kept"
    assert s3.get_object(Bucket="data", Key="after")["Body"].read() == b"new"
    assert keys(s3) == ["after", "before"]


def test_upstream_killed_during_an_upload(
    setup: tuple[GatewayUpstream, GatewayProcess, Any],
) -> None:
    """The upstream dies after 8 MiB of a 64 MiB PUT: 503, no object, no quota used."""
    upstream, front, s3 = setup
    s3.put_object(Bucket="data", Key="big", Body=b"old version")
    size = 64 * MiB
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "data", "Key": "big"})
    killed = threading.Event()

    def body() -> Iterator[bytes]:
        block = os.urandom(MiB)
        for i in range(size // MiB):
            if i == 8:
                upstream.kill()
                killed.set()
            yield block

    try:
        response = httpx.put(url, content=body(), headers={"Content-Length": str(size)},
                             timeout=60)
        assert (response.status_code, b"<Code>ServiceUnavailable</Code>" in response.content) \
            == (503, True)
    except httpx.TransportError:
        # The gateway may close the connection while the client is still sending; the
        # answer is then lost to this client, but what it stored is checked below.
        pass
    assert killed.is_set()
    # The old object is untouched: its metadata, and its bytes once the upstream is back.
    assert s3.head_object(Bucket="data", Key="big")["ContentLength"] == len(b"old version")
    usage = cli_json(front.data_dir, "quota", "get", "data")
    assert (usage["used_bytes"], usage["used_objects"]) == (len(b"old version"), 1), usage
    upstream.start()
    assert s3.get_object(Bucket="data", Key="big")["Body"].read() == b"old version"
    assert keys(s3) == ["big"]


def test_upstream_killed_during_a_download(
    setup: tuple[GatewayUpstream, GatewayProcess, Any],
) -> None:
    """Once the answer has started, the only honest signal is a cut connection: the client
    must never receive a short body that looks complete."""
    upstream, _front, s3 = setup
    data = os.urandom(48 * MiB)
    s3.put_object(Bucket="data", Key="big", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "big"})
    received = 0
    with pytest.raises(httpx.TransportError), \
            httpx.stream("GET", url, timeout=30) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == len(data)
        for chunk in response.iter_raw():
            received += len(chunk)
            if received >= 4 * MiB and upstream.server.proc is not None \
                    and upstream.server.proc.poll() is None:
                upstream.kill()
                time.sleep(0.2)
    assert received < len(data)
    upstream.start()
    body = s3.get_object(Bucket="data", Key="big")["Body"].read()
    assert hashlib.md5(body).digest() == hashlib.md5(data).digest()
