"""Virtual-host-style addressing (``bucket.<domain>``) when GATEWAY_DOMAIN is set.

There is no DNS for the test domain on this machine, so this test's process resolves
``*.s3.test`` to 127.0.0.1 itself (the only stand-in here); everything else is real:
a gateway process, boto3 with virtual addressing, real HTTP with ``Host: bkt.s3.test``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests._server import GatewayProcess

DOMAIN = "s3.test"


@pytest.fixture
def resolve_test_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def vhost_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_DOMAIN": DOMAIN}).start()
    yield server
    server.stop()


def test_virtual_host_style(vhost_gateway: GatewayProcess, resolve_test_domain: None) -> None:
    server = vhost_gateway

    def client(style: str) -> Any:
        return boto3.client(
            "s3", endpoint_url=f"http://{DOMAIN}:{server.port}", region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(s3={"addressing_style": style}))

    virtual = client("virtual")
    virtual.create_bucket(Bucket="bot.gbai")
    virtual.put_object(Bucket="bot.gbai", Key="bot.gbkb/faq.md", Body=b"# FAQ")
    got = virtual.get_object(Bucket="bot.gbai", Key="bot.gbkb/faq.md")
    assert got["Body"].read() == b"# FAQ"
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    keys = [o["Key"] for o in virtual.list_objects_v2(Bucket="bot.gbai")["Contents"]]
    assert keys == ["bot.gbkb/faq.md"]
    # Path style keeps working beside it, on the same data.
    path = client("path")
    assert path.get_object(Bucket="bot.gbai", Key="bot.gbkb/faq.md")["Body"].read() == b"# FAQ"
    # A key that looks like a gateway path is still a key under virtual hosting.
    virtual.put_object(Bucket="bot.gbai", Key="healthz", Body=b"not a probe")
    assert virtual.get_object(Bucket="bot.gbai", Key="healthz")["Body"].read() == b"not a probe"
    virtual.delete_object(Bucket="bot.gbai", Key="healthz")
    virtual.delete_object(Bucket="bot.gbai", Key="bot.gbkb/faq.md")
    virtual.delete_bucket(Bucket="bot.gbai")
    assert "bot.gbai" not in [b["Name"] for b in path.list_buckets()["Buckets"]]
