"""minio-py (newest) against the gateway with its defaults."""

from __future__ import annotations

import io
import uuid

import pytest
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from tests._server import GatewayProcess

#: fs, and the s3:// backend on moto and on a second gateway (tests/conftest.py).
pytestmark = pytest.mark.upstreams


@pytest.fixture
def mc(gateway: GatewayProcess) -> Minio:
    return Minio(f"127.0.0.1:{gateway.port}", access_key=gateway.access_key,
                 secret_key=gateway.secret_key, secure=False, region="us-east-1")


def test_minio_round_trip(mc: Minio) -> None:
    bucket = f"minio-{uuid.uuid4().hex[:12]}"
    mc.make_bucket(bucket)
    assert mc.bucket_exists(bucket)
    data = b"knowledge base entry\n" * 1000
    result = mc.put_object(bucket, "kb/doc one.txt", io.BytesIO(data), len(data),
                           content_type="text/plain", metadata={"x-amz-meta-source": "bot"})
    stat = mc.stat_object(bucket, "kb/doc one.txt")
    assert stat.size == len(data) and stat.etag == result.etag
    assert stat.content_type == "text/plain"
    assert stat.metadata["x-amz-meta-source"] == "bot"
    response = mc.get_object(bucket, "kb/doc one.txt")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    partial = mc.get_object(bucket, "kb/doc one.txt", offset=5, length=10)
    assert partial.read() == data[5:15]
    partial.close()
    partial.release_conn()
    mc.copy_object(bucket, "kb/copy.txt", CopySource(bucket, "kb/doc one.txt"))
    names = sorted(o.object_name for o in mc.list_objects(bucket, prefix="kb/", recursive=True))
    assert names == ["kb/copy.txt", "kb/doc one.txt"]
    top = [o.object_name for o in mc.list_objects(bucket)]
    assert top == ["kb/"]
    errors = list(mc.remove_objects(bucket, [DeleteObject("kb/copy.txt"),
                                             DeleteObject("kb/doc one.txt")]))
    assert errors == []
    with pytest.raises(S3Error) as info:
        mc.stat_object(bucket, "kb/doc one.txt")
    assert info.value.code == "NoSuchKey"
    mc.remove_bucket(bucket)
    assert not mc.bucket_exists(bucket)
