"""The first admin: generated and printed once when not configured; flags as settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

from tests._server import free_port


def _serve(data_dir: Path, port: int, env_extra: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(env_extra or {})
    env["GATEWAY_LOG_LEVEL"] = "warning"
    # Settings given as flags, not environment variables.
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_ready(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gateway exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return out


def _client(port: int, access: str, secret: str) -> object:
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=access, aws_secret_access_key=secret)


def test_generated_root_key_is_printed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = _serve(data, port)
    _wait_ready(port, proc)
    first_out = _stop(proc)
    access = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", first_out)
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", first_out)
    assert access and secret, first_out
    assert (data / "gateway.db").exists()

    port = free_port()
    proc = _serve(data, port)
    try:
        _wait_ready(port, proc)
        s3 = _client(port, access.group(1), secret.group(1))
        s3.create_bucket(Bucket="first")  # type: ignore[attr-defined]
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]  # type: ignore[attr-defined]
        assert names == ["first"]
    finally:
        second_out = _stop(proc)
    assert secret.group(1) not in second_out
    assert "AWS_SECRET_ACCESS_KEY" not in second_out


def test_configured_root_key(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path / "data", port, {"GATEWAY_ROOT_ACCESS_KEY": "ROOTKEYEXAMPLE0001",
                                            "GATEWAY_ROOT_SECRET_KEY": "root-secret-example"})
    try:
        _wait_ready(port, proc)
        s3 = _client(port, "ROOTKEYEXAMPLE0001", "root-secret-example")
        assert s3.list_buckets()["Buckets"] == []  # type: ignore[attr-defined]
    finally:
        out = _stop(proc)
    assert "root-secret-example" not in out
