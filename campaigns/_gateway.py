"""Gateway processes for campaigns (the same launcher the tests use)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests._server import GatewayProcess


@contextmanager
def running_gateway(data_dir: Path, **env: str) -> Iterator[GatewayProcess]:
    server = GatewayProcess(data_dir, env_extra=env).start()
    try:
        yield server
    finally:
        server.stop()


def s3_client(server: GatewayProcess, *, access_key: str | None = None,
              secret_key: str | None = None, timeout: float = 30.0, **config: Any) -> Any:
    """boto3 without retries: a campaign counts every answer the gateway gives."""
    return boto3.client(
        "s3", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=access_key or server.access_key,
        aws_secret_access_key=secret_key or server.secret_key,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5,
                      read_timeout=timeout, max_pool_connections=64, **config))


def read_until_closed(sock: socket.socket, wait: float = 10) -> bytes:
    """Everything the server sends on a raw connection until it closes it (or ``wait``
    seconds pass without a byte)."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data
