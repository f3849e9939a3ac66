from __future__ import annotations

import os
import subprocess
import sys
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


AWS_CLI = Path(sys.executable).parent / "aws"


@pytest.fixture
def aws(gateway: GatewayProcess, tmp_path: Path) -> Any:
    """Run aws-cli against the gateway with its default settings (empty config files)."""
    config = tmp_path / "aws-config"
    credentials = tmp_path / "aws-credentials"
    config.write_text("")
    credentials.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": gateway.access_key,
        "AWS_SECRET_ACCESS_KEY": gateway.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_PAGER": "",
    })

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(AWS_CLI), "--endpoint-url", gateway.url, *args],
            env=env, capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    return run
