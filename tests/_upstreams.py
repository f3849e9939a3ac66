"""Upstream S3 servers for tests of the ``s3://`` backend: moto, or a second gateway.

Both kinds listen on a free port of 127.0.0.1, are ready when ``start()`` returns, keep
their port across ``kill()`` / ``start()`` (so a backend pointed at them sees an upstream
that went down and came back), and offer the same small surface::

    upstream.endpoint, .access_key, .secret_key, .region
    upstream.create_bucket(name); upstream.client()  # boto3, path-style
    upstream.kill(); upstream.start(); upstream.stop()

moto keeps everything in memory: after ``kill()`` and ``start()`` it is empty. A gateway
upstream keeps its data directory, so its buckets and objects survive a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config

from tests._server import GatewayProcess, free_port, wait_until_ready

MiB = 1024 * 1024
#: What AWS, MinIO and the gateway itself require of every part but the last.
S3_MIN_PART_SIZE = 5 * MiB


class Upstream(Protocol):
    """What a test needs of an upstream S3 server."""

    name: str
    access_key: str
    secret_key: str
    region: str

    @property
    def endpoint(self) -> str: ...

    #: The smallest size the upstream accepts for a part that is not the last (0: any).
    @property
    def min_part_size(self) -> int: ...

    def start(self, timeout: float = 30.0) -> Upstream: ...

    def kill(self) -> None: ...

    def stop(self) -> None: ...

    def client(self) -> Any: ...

    def create_bucket(self, name: str | None = None) -> str: ...


def _client(endpoint: str, access_key: str, secret_key: str, region: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def unique_bucket(prefix: str = "up") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


class _Base:
    name: str
    access_key: str
    secret_key: str
    region: str
    _client_cache: Any = None

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def client(self) -> Any:
        """A boto3 client for the upstream (one per upstream, reused: clients are
        thread-safe and creating one costs tens of milliseconds)."""
        if self._client_cache is None:
            self._client_cache = _client(self.endpoint, self.access_key, self.secret_key,
                                         self.region)
        return self._client_cache

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name by default); its name."""
        name = name or unique_bucket()
        self.client().create_bucket(Bucket=name)
        return name

    def in_progress_uploads(self, bucket: str, prefix: str = "") -> list[str]:
        """``key@upload-id`` of every multipart upload in progress under ``prefix``."""
        found: list[str] = []
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self.client().list_multipart_uploads(**request)
            found += [f"{u['Key']}@{u['UploadId']}" for u in page.get("Uploads", [])
                      if u["Key"].startswith(prefix)]  # moto filters by prefix, but be sure
            if not page.get("IsTruncated"):
                return sorted(found)
            request.update(KeyMarker=page["NextKeyMarker"],
                           UploadIdMarker=page["NextUploadIdMarker"])

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)


@dataclass(eq=False)
class MotoServer(_Base):
    """``moto_server`` in a subprocess, with two deviations from S3 fixed (see
    ``tests/_moto_server.py``); its log goes to ``log_dir / moto-<port>.log``.

    ``min_part_size`` is moto's ``S3_UPLOAD_PART_MIN_SIZE`` (read once at startup): 0 lets
    every part be of any size, even empty; ``S3_MIN_PART_SIZE`` behaves like AWS.
    """

    log_dir: Path
    min_part_size: int = 0
    port: int = field(default_factory=free_port)
    name: str = "s3-moto"
    access_key: str = "test"
    secret_key: str = "test"
    region: str = "us-east-1"
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"moto-{self.port}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env.update({
            "S3_UPLOAD_PART_MIN_SIZE": str(self.min_part_size),
            # moto derives its in-memory buffer from the minimum part size; with a small
            # minimum that would spill every object to a temporary file.
            "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(16 * MiB),
        })
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_moto_server.py")),
             "-H", "127.0.0.1", "-p", str(self.port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until_ready(self.proc, self.endpoint + "/moto-api/", lambda status: status < 500,
                         "moto_server", self.log, self.stop, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9; moto's state (all of it in memory) is gone."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(eq=False)
class GatewayUpstream(_Base):
    """A second gateway (SQLite + local filesystem) as the upstream, with its root keys."""

    data_dir: Path
    name: str = "s3-gateway"
    region: str = "us-east-1"
    min_part_size: int = S3_MIN_PART_SIZE
    env_extra: dict[str, str] = field(default_factory=dict)
    server: GatewayProcess = field(init=False)

    def __post_init__(self) -> None:
        self.server = GatewayProcess(self.data_dir, env_extra=dict(self.env_extra))
        self.access_key = self.server.access_key
        self.secret_key = self.server.secret_key

    @property
    def endpoint(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def start(self, timeout: float = 30.0) -> GatewayUpstream:
        self.server.start(timeout)
        return self

    def log(self) -> str:
        return self.server.log()

    def kill(self) -> None:
        self.server.kill()

    def stop(self) -> None:
        self.server.stop()


#: The upstream kinds, by the name tests and harnesses use for them.
UPSTREAM_KINDS = ("s3-moto", "s3-gateway")


def make_upstream(kind: str, tmp: Path, *, moto_min_part_size: int = 0) -> Upstream:
    """An upstream of ``kind`` (not started) whose files live under ``tmp``."""
    if kind == "s3-moto":
        return MotoServer(tmp, min_part_size=moto_min_part_size)
    if kind == "s3-gateway":
        return GatewayUpstream(tmp / "upstream-data")
    raise ValueError(f"unknown upstream kind {kind!r}")


def backend_env(upstream: Upstream, bucket: str, prefix: str = "gw") -> dict[str, str]:
    """The environment that points a gateway's blobs at ``s3://bucket/prefix`` upstream."""
    return {
        "GATEWAY_BACKEND": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
        "GATEWAY_S3_ENDPOINT": upstream.endpoint,
        "GATEWAY_S3_ACCESS_KEY": upstream.access_key,
        "GATEWAY_S3_SECRET_KEY": upstream.secret_key,
        "GATEWAY_S3_REGION": upstream.region,
    }
