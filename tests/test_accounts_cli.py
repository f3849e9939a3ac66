"""Accounts from the shell: users and imported keys work against a real server, tenants
are kept apart, disabling takes effect, and secrets are never stored or logged in clear."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tests._errors import client_error
from tests._server import GatewayProcess
from tests._server import run_cli as gw
from tests._server import run_cli_here as run_main

BOB_CANONICAL = "b0b" + "0" * 61
ALICE_KEY, ALICE_SECRET = "AKALICE0000000000001", "alice-secret-0123456789"
BOB_KEY, BOB_SECRET = "AKBOB00000000000001", "bob-secret-0123456789"


def client(server: GatewayProcess, key: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


def test_users_and_keys_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Spawned, as an operator runs them: ``user`` here, ``key`` below.
    assert gw(data, "user", "add", "alice", "--display-name", "Alice").returncode == 0
    assert run_main(data, "user", "add", "bob", "--canonical-id", BOB_CANONICAL).returncode \
        == 0
    again = run_main(data, "user", "add", "alice")
    assert again.returncode == 1 and "exists" in again.stderr
    made = run_main(data, "key", "create", "--user", "alice", "--access-key", ALICE_KEY,
                    "--secret-key", ALICE_SECRET, "--json")
    assert json.loads(made.stdout)["access_key"] == ALICE_KEY
    spawned = gw(data, "key", "create", "--user", "bob", "--json")
    assert spawned.returncode == 0, spawned.stderr
    generated = json.loads(spawned.stdout)
    users = json.loads(run_main(data, "user", "list", "--json").stdout)
    assert {u["name"] for u in users} == {"alice", "bob"}
    table = run_main(data, "user", "list").stdout
    assert "ALICE" not in table  # table header is NAME, ROLE …
    assert "alice" in table

    server = GatewayProcess(data, env_extra={"GATEWAY_LOG_LEVEL": "debug"}).start()
    try:
        alice = client(server, ALICE_KEY, ALICE_SECRET)
        bob = client(server, generated["access_key"], generated["secret_key"])
        root = client(server, server.access_key, server.secret_key)
        alice.create_bucket(Bucket="alice-kb")
        alice.put_object(Bucket="alice-kb", Key="faq.md", Body=b"# FAQ")
        # S3 answers name users by their canonical id and display name.
        assert alice.list_buckets()["Owner"]["DisplayName"] == "Alice"
        assert bob.list_buckets()["Owner"] == {"ID": BOB_CANONICAL, "DisplayName": "bob"}
        listed = alice.list_objects_v2(Bucket="alice-kb", FetchOwner=True)["Contents"][0]
        assert listed["Owner"]["DisplayName"] == "Alice"
        acl_owner = alice.get_bucket_acl(Bucket="alice-kb")["Owner"]
        assert acl_owner == alice.list_buckets()["Owner"]
        # Tenants are kept apart; the admin sees everything.
        assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == []
        for call, kwargs in [
            (bob.list_objects_v2, {"Bucket": "alice-kb"}),
            (bob.get_object, {"Bucket": "alice-kb", "Key": "faq.md"}),
            (bob.head_object, {"Bucket": "alice-kb", "Key": "faq.md"}),
            (bob.put_object, {"Bucket": "alice-kb", "Key": "x", "Body": b"x"}),
            (bob.delete_object, {"Bucket": "alice-kb", "Key": "faq.md"}),
            (bob.delete_bucket, {"Bucket": "alice-kb"}),
            (bob.get_bucket_acl, {"Bucket": "alice-kb"}),
        ]:
            code, status = client_error(call, **kwargs)
            assert status == 403 and code in ("AccessDenied", "403"), (call, code)
        bob.create_bucket(Bucket="bob-kb")
        assert client_error(bob.copy_object, Bucket="bob-kb", Key="stolen",
                            CopySource={"Bucket": "alice-kb", "Key": "faq.md"})[1] == 403
        stolen_url = bob.generate_presigned_url("get_object", Params={
            "Bucket": "alice-kb", "Key": "faq.md"})
        assert httpx.get(stolen_url).status_code == 403
        assert root.get_object(Bucket="alice-kb", Key="faq.md")["Body"].read() == b"# FAQ"
        assert {b["Name"] for b in root.list_buckets()["Buckets"]} == {"alice-kb", "bob-kb"}

        # Disabling a key, and a user, locks them out (within the 5 s lookup cache); both
        # caches expire meanwhile.
        assert run_main(data, "key", "disable", generated["access_key"]).returncode == 0
        assert run_main(data, "user", "disable", "alice").returncode == 0
        _wait_denied(bob, "InvalidAccessKeyId")
        _wait_denied(alice, "InvalidAccessKeyId")
        # Enabling lets the user back in, once the refusal's cache entry expires.
        assert run_main(data, "user", "enable", "alice").returncode == 0
        _wait_allowed(alice, "InvalidAccessKeyId")
        assert alice.head_bucket(Bucket="alice-kb")["ResponseMetadata"]["HTTPStatusCode"] \
            == 200
    finally:
        server.stop()

    with sqlite3.connect(data / "gateway.db") as db:
        stored = [row[0] for row in db.execute("select secret from access_keys")]
    assert len(stored) == 3 and all(s.startswith("enc1:") for s in stored)
    for secret in (ALICE_SECRET, generated["secret_key"], server.secret_key):
        assert all(secret not in s for s in stored)
        assert secret not in server.log()
    assert (data / "secret.key").stat().st_mode & 0o077 == 0


def _wait_denied(c: Any, code: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c.list_buckets()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == code
            return
        time.sleep(0.1)
    pytest.fail("access was not revoked")


def _wait_allowed(c: Any, code: str) -> None:
    """Until ``c`` is served again; refused meanwhile only with ``code``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c.list_buckets()
            return
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == code
        time.sleep(0.1)
    pytest.fail("access was not restored")
