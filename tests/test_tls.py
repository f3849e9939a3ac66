"""HTTPS: ``gateway serve`` with ``GATEWAY_SSL_CERTFILE`` / ``GATEWAY_SSL_KEYFILE`` and a
self-signed certificate for 127.0.0.1, against boto3 and httpx that trust it; plain HTTP
and clients that do not trust it are refused; and a graceful stop is prompt although
pooled clients keep idle TLS connections open (closing one waits for the peer's
close_notify, which an idle client never sends)."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError

from tests._tls import TlsGateway, self_signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: tuple[Path, Path]
           ) -> Iterator[TlsGateway]:
    gateway = TlsGateway.serving(tmp_path_factory.mktemp("tls") / "data", *pki,
                                 {"GATEWAY_LOG_LEVEL": "info"}).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def client(server: TlsGateway, verify: str | bool | None, **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, verify=verify,
                        config=Config(retries={"total_max_attempts": 1}, **config))


def test_boto3_and_presigned_urls_over_tls(server: TlsGateway) -> None:
    s3 = client(server, server.cafile)
    s3.create_bucket(Bucket="over-tls")
    bodies = {f"k{i}": bytes([i]) * (1000 * i + 1) for i in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket="over-tls", Key=key, Body=body)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="over-tls")["Contents"]] == [*bodies]
    assert s3.get_object(Bucket="over-tls", Key="k2")["Body"].read() == bodies["k2"]
    trusting = ssl.create_default_context(cafile=server.cafile)
    for version in ("s3v4", "s3"):
        url = client(server, server.cafile, signature_version=version).generate_presigned_url(
            "get_object", Params={"Bucket": "over-tls", "Key": "k1"}, ExpiresIn=60)
        assert url.startswith(f"https://127.0.0.1:{server.port}/over-tls/k1?")
        answer = httpx.get(url, verify=trusting)
        assert answer.status_code == 200 and answer.content == bodies["k1"]
    assert f"Uvicorn running on https://127.0.0.1:{server.port}" in server.log()


def test_plain_http_and_untrusting_clients_are_refused(server: TlsGateway) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url + "/healthz", timeout=5)  # the system's trust store
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client(server, None).list_buckets()
    # The refused handshakes leave the server serving.
    assert client(server, server.cafile).list_buckets()["ResponseMetadata"][
        "HTTPStatusCode"] == 200


def test_stop_is_prompt_with_idle_tls_connections(tmp_path: Path,
                                                  pki: tuple[Path, Path]) -> None:
    gateway = TlsGateway.serving(tmp_path / "data", *pki).start()
    try:
        pooled = client(gateway, gateway.cafile)
        pooled.list_buckets()  # its connection stays open, idle, in the pool
        with httpx.Client(verify=ssl.create_default_context(cafile=gateway.cafile)) as c:
            assert c.get(gateway.url + "/healthz").status_code == 200
            started = time.monotonic()
            gateway.stop()
            took = time.monotonic() - started
    finally:
        gateway.stop()
    # uvicorn ends a graceful shutdown by re-raising the signal it caught: -SIGTERM, not
    # the -SIGKILL of GatewayProcess.stop giving up.
    assert gateway.proc is not None and gateway.proc.returncode == -signal.SIGTERM
    assert took < 5, f"stopping took {took:.1f} s"
