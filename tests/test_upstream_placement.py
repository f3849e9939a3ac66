"""``GATEWAY_S3_PLACEMENT=keys``: each object at ``<prefix><bucket>/<key>`` upstream, so other
tools read the data directly, with the gateway's guarantees kept by upstream versions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests._server import GatewayProcess
from tests._upstreams import MotoServer, backend_env

MiB = 1024 * 1024


@pytest.fixture
def placed(tmp_path: Path) -> Iterator[tuple[Any, Any, str, GatewayProcess]]:
    upstream = MotoServer(tmp_path / "moto").start()
    bucket = upstream.create_bucket()
    up = upstream.client()
    up.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {**backend_env(upstream, bucket, "site"), "GATEWAY_S3_PLACEMENT": "keys",
           "GATEWAY_GC_GRACE_SECONDS": "0"}
    gateway = GatewayProcess(tmp_path / "data", env_extra=env).start()
    s3 = boto3.client("s3", endpoint_url=gateway.url, aws_access_key_id=gateway.access_key,
                      aws_secret_access_key=gateway.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket="docs")
    try:
        yield s3, up, bucket, gateway
    finally:
        gateway.stop()
        upstream.stop()


def versions(up: Any, bucket: str) -> dict[str, int]:
    """Upstream key -> how many versions (and delete markers) it has."""
    answer = up.list_object_versions(Bucket=bucket)
    counts: dict[str, int] = {}
    for item in answer.get("Versions", []) + answer.get("DeleteMarkers", []):
        counts[item["Key"]] = counts.get(item["Key"], 0) + 1
    return counts


def test_objects_are_readable_upstream_by_their_keys(
    placed: tuple[Any, Any, str, GatewayProcess],
) -> None:
    s3, up, bucket, _gateway = placed
    s3.put_object(Bucket="docs", Key="kb/faq.md", Body=b"v1")
    s3.put_object(Bucket="docs", Key="kb/faq.md", Body=b"version two")  # overwrite
    s3.copy_object(Bucket="docs", Key="kb/copy.md",
                   CopySource={"Bucket": "docs", "Key": "kb/faq.md"})
    parts = [os.urandom(5 * MiB), b"tail"]
    upload = s3.create_multipart_upload(Bucket="docs", Key="big.bin")["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket="docs", Key="big.bin",
                                                     UploadId=upload, PartNumber=n,
                                                     Body=p)["ETag"]}
            for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket="docs", Key="big.bin", UploadId=upload,
                                 MultipartUpload={"Parts": done})
    s3.put_object(Bucket="docs", Key="gone.txt", Body=b"x")
    s3.delete_object(Bucket="docs", Key="gone.txt")

    # Another tool sees the gateway's namespace, with the committed bytes, one version each.
    read = {key: up.get_object(Bucket=bucket, Key=f"site/docs/{key}")["Body"].read()
            for key in ("kb/faq.md", "kb/copy.md", "big.bin")}
    assert read == {"kb/faq.md": b"version two", "kb/copy.md": b"version two",
                    "big.bin": b"".join(parts)}
    assert versions(up, bucket) == {"site/docs/kb/faq.md": 1, "site/docs/kb/copy.md": 1,
                                    "site/docs/big.bin": 1}
    # And the gateway serves the same.
    assert s3.get_object(Bucket="docs", Key="kb/faq.md")["Body"].read() == b"version two"
    assert s3.get_object(Bucket="docs", Key="big.bin", Range="bytes=5242878-5242881"
                         )["Body"].read() == parts[0][-2:] + b"ta"


def test_a_losing_conditional_write_changes_nothing_upstream(
    placed: tuple[Any, Any, str, GatewayProcess],
) -> None:
    s3, up, bucket, _gateway = placed
    first = s3.put_object(Bucket="docs", Key="lock", Body=b"first")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="docs", Key="lock", Body=b"second", IfMatch='"0000"')
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert up.get_object(Bucket=bucket, Key="site/docs/lock")["Body"].read() == b"first"
    assert s3.get_object(Bucket="docs", Key="lock")["ETag"] == first["ETag"]


def test_keys_a_server_cannot_hold_as_names_stay_opaque(
    placed: tuple[Any, Any, str, GatewayProcess],
) -> None:
    s3, up, bucket, _gateway = placed
    odd = ["a//b", "../up", "x" * 1020]
    for key in odd:
        s3.put_object(Bucket="docs", Key=key, Body=key.encode())
    for key in odd:
        assert s3.get_object(Bucket="docs", Key=key)["Body"].read() == key.encode()
    names = set(versions(up, bucket))
    assert not names & {f"site/docs/{key}" for key in odd}
    assert all(name.startswith("site/b/") for name in names)


def test_an_unversioned_upstream_bucket_is_refused(tmp_path: Path) -> None:
    upstream = MotoServer(tmp_path / "moto").start()
    try:
        bucket = upstream.create_bucket()
        env = {**backend_env(upstream, bucket, "site"), "GATEWAY_S3_PLACEMENT": "keys"}
        gateway = GatewayProcess(tmp_path / "data", env_extra=env).start()
        try:
            s3 = boto3.client("s3", endpoint_url=gateway.url,
                              aws_access_key_id=gateway.access_key,
                              aws_secret_access_key=gateway.secret_key, region_name="us-east-1")
            s3.create_bucket(Bucket="docs")
            with pytest.raises(ClientError) as info:
                s3.put_object(Bucket="docs", Key="k", Body=b"x")
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert "versioning" in gateway.log()
            assert upstream.object_keys(bucket) == []
        finally:
            gateway.stop()
    finally:
        upstream.stop()
