"""Real tools that upload in parts, with their default settings: the AWS CLI (``s3 cp`` of
100 MiB), boto3's TransferManager (files and a non-seekable stream) and minio-py
(``fput_object`` / ``fget_object``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from minio import Minio

from tests._server import GatewayProcess
from tests.test_multipart import MiB, assert_bytes, multipart_etag, read


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def chunked_etag(data: bytes, part_size: int) -> str:
    return multipart_etag([data[i:i + part_size] for i in range(0, len(data), part_size)])


def test_aws_cli_cp_100_mib(aws: Any, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(100 * MiB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    aws("s3", "cp", str(source), f"s3://{bucket}/dir/big.bin")
    head = json.loads(
        aws("s3api", "head-object", "--bucket", bucket, "--key", "dir/big.bin").stdout)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-13"), head["ETag"]
    assert head["ETag"] == chunked_etag(data, 8 * MiB)  # the CLI's default 8 MiB parts
    target = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{bucket}/dir/big.bin", str(target))
    assert target.stat().st_size == len(data)
    assert file_md5(target) == hashlib.md5(data).hexdigest()


TRANSFER = TransferConfig(max_concurrency=10, multipart_threshold=8 * MiB,
                          multipart_chunksize=8 * MiB)


def test_boto3_transfer_manager_files(s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(60 * MiB + 12345)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    s3.upload_file(str(source), bucket, "transfer/file.bin", Config=TRANSFER)
    head = s3.head_object(Bucket=bucket, Key="transfer/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == chunked_etag(data, 8 * MiB)
    target = tmp_path / "download.bin"
    s3.download_file(bucket, "transfer/file.bin", str(target), Config=TRANSFER)
    assert target.stat().st_size == len(data)
    assert file_md5(target) == hashlib.md5(data).hexdigest()


class NonSeekable(io.RawIOBase):
    """A stream that can only be read forward, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def test_boto3_upload_fileobj_non_seekable(s3: Any, bucket: str) -> None:
    data = os.urandom(20 * MiB + 777)
    s3.upload_fileobj(NonSeekable(data), bucket, "transfer/stream.bin", Config=TRANSFER)
    head = s3.head_object(Bucket=bucket, Key="transfer/stream.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    assert_bytes(read(s3, bucket, "transfer/stream.bin"), data)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "transfer/stream.bin", out, Config=TRANSFER)
    assert_bytes(out.getvalue(), data, "download_fileobj")


def test_minio_fput_fget(gateway: GatewayProcess, s3: Any, bucket: str,
                         tmp_path: Path) -> None:
    mc = Minio(f"127.0.0.1:{gateway.port}", access_key=gateway.access_key,
               secret_key=gateway.secret_key, secure=False, region="us-east-1")
    data = os.urandom(20 * MiB + 4321)
    source = tmp_path / "minio.bin"
    source.write_bytes(data)
    result = mc.fput_object(bucket, "minio/file.bin", str(source),
                            content_type="application/x-test")
    stat = mc.stat_object(bucket, "minio/file.bin")
    assert stat.size == len(data)
    assert stat.content_type == "application/x-test"
    assert stat.etag == result.etag
    assert stat.etag is not None and stat.etag.endswith("-5"), stat.etag  # 5 MiB parts
    assert f'"{stat.etag}"' == chunked_etag(data, 5 * MiB)
    target = tmp_path / "minio-back.bin"
    mc.fget_object(bucket, "minio/file.bin", str(target))
    assert file_md5(target) == hashlib.md5(data).hexdigest()
