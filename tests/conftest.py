from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests._server import GatewayProcess


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One real gateway process (SQLite + local filesystem) for the session."""
    server = GatewayProcess(tmp_path_factory.mktemp("gateway") / "data").start()
    yield server
    server.stop()


def make_client(server: GatewayProcess, **kwargs: Any) -> Any:
    """boto3 with its default configuration, pointed at the gateway."""
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        **kwargs,
    )


@pytest.fixture(scope="session")
def s3(gateway: GatewayProcess) -> Any:
    return make_client(gateway)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    yield name
    # Empty and remove it, so tests stay independent.
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def data_path(gateway: GatewayProcess) -> Path:
    return gateway.data_dir
