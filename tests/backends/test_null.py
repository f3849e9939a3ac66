"""The ``null`` backend `make bench` measures the gateway's own cost with: it keeps sizes,
never bytes, so what the gateway serves from it is as long as what was written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage_backends.errors import BlobNotFound, InvalidPart, UploadNotFound
from storage_backends.null import NullBackend
from storage_backends.protocol import ByteRange, PartRef
from storage_backends.registry import open_backend
from tests._server import GatewayProcess


async def _body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_sizes_ranges_copies_and_multipart(tmp_path: Path) -> None:
    backend = open_backend("null", data_dir=tmp_path)
    assert isinstance(backend, NullBackend)
    info = await backend.put("b/1/aa/one", _body(b"x" * 3_000_000, b"y" * 5))
    assert info.size == 3_000_005
    reader = await backend.get("b/1/aa/one")
    data = await reader.read_all()  # type: ignore[attr-defined]
    assert data == bytes(3_000_005)
    reader = await backend.get("b/1/aa/one", byte_range=ByteRange(10, 20))
    assert (reader.size, reader.content_length) == (3_000_005, 10)
    assert await reader.read_all() == bytes(10)  # type: ignore[attr-defined]
    assert (await backend.copy("b/1/aa/one", "b/1/aa/two")).size == 3_000_005
    assert [b.key async for b in backend.list("b/1/")] == ["b/1/aa/one", "b/1/aa/two"]
    await backend.delete("b/1/aa/one")
    with pytest.raises(BlobNotFound):
        await backend.head("b/1/aa/one")

    upload = await backend.create_multipart("b/1/aa/mp")
    first = await backend.put_part("b/1/aa/mp", upload, 1, _body(b"p" * 100))
    await backend.put_part("b/1/aa/mp", upload, 1, _body(b"p" * 7))  # a later attempt
    second = await backend.copy_part("b/1/aa/mp", upload, 2, "b/1/aa/two", ByteRange(0, 50))
    with pytest.raises(InvalidPart):
        await backend.complete_multipart("b/1/aa/mp", upload, [PartRef(1, 8)])
    done = await backend.complete_multipart(
        "b/1/aa/mp", upload, [PartRef(1, 100, first.token), PartRef(2, 50, second.token)])
    assert done.size == 150
    with pytest.raises(UploadNotFound):
        await backend.put_part("b/1/aa/mp", upload, 3, _body(b"late"))
    await backend.aclose()


def test_a_gateway_serves_zeros_of_the_written_length(tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_BACKEND": "null"}).start()
    try:
        s3 = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1",
                          # The answer carries the written bytes' checksum, not the zeros'.
                          config=Config(response_checksum_validation="when_required"))
        s3.create_bucket(Bucket="nothing-kept")
        put = s3.put_object(Bucket="nothing-kept", Key="k", Body=b"abc" * 1000)
        got = s3.get_object(Bucket="nothing-kept", Key="k")
        assert got["ContentLength"] == 3000
        assert got["ETag"] == put["ETag"]  # the written bytes' MD5, recorded by the gateway
        assert got["Body"].read() == bytes(3000)
    finally:
        server.stop()
