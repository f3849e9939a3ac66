"""Bucket grants: what ``read``, ``write`` and ``full`` open to another user, directly or
through a group, over S3 header auth and presigned URLs alike; revoking closes it again."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._server import GatewayProcess, run_cli, run_cli_here

ALICE = ("AKGRANTALICE00000001", "alice-grant-secret-0123456789")
BOB = ("AKGRANTBOB0000000001", "bob-grant-secret-0123456789")

READ_OPS = ("list", "get", "head", "copy_from", "presign_get_v2", "presign_get_v4",
            "list_uploads")
WRITE_OPS = ("put", "presign_put", "delete", "copy_into", "multipart", "delete_many")
FULL_OPS = ("put_public", "put_bucket_acl", "get_bucket_acl", "put_bucket_cors",
            "put_object_acl")
ALL_OPS = READ_OPS + WRITE_OPS + FULL_OPS


def gw(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The ``gateway`` command, as its own process, which must succeed."""
    result = run_cli(data, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stderr)
    return result


def cli(data: Path, *args: str) -> str:
    """``gateway <args> --data-dir <data>``, which must succeed, run by the command's own
    entry point in this process (``run_cli_here``: a process apart from the gateway's, as
    with :func:`gw`, without starting an interpreter each time): its standard output."""
    done = run_cli_here(data, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout



def client(server: GatewayProcess, key: tuple[str, str], **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=Config(**config) if config else None)


class World:
    def __init__(self, data: Path, server: GatewayProcess) -> None:
        self.data = data
        self.server = server
        self.alice = client(server, ALICE)
        self.bob = client(server, BOB)
        self.bob_v4 = client(server, BOB, signature_version="s3v4")
        self.shared = f"shared-{uuid.uuid4().hex[:12]}"
        self.own = f"bobs-{uuid.uuid4().hex[:12]}"
        self.alice.create_bucket(Bucket=self.shared)
        self.alice.put_object(Bucket=self.shared, Key="doc.txt", Body=b"alice's doc")
        self.bob.create_bucket(Bucket=self.own)
        self.bob.put_object(Bucket=self.own, Key="mine.txt", Body=b"bob's")

    def cli(self, *args: str) -> None:
        cli(self.data, *args)

    def victim(self) -> str:
        key = f"victim-{uuid.uuid4().hex[:8]}"
        self.alice.put_object(Bucket=self.shared, Key=key, Body=b"v")
        return key

    def operations(self) -> dict[str, Callable[[], Any]]:
        b, bob, shared = self.bob, self.bob, self.shared

        def presigned(method: str, c: Any, op: str, **params: Any) -> None:
            url = c.generate_presigned_url(op, Params={"Bucket": shared, **params})
            response = httpx.request(method, url, content=b"x" if method == "PUT" else None)
            if response.status_code == 403:
                assert b"AccessDenied" in response.content
                raise PermissionError
            assert response.status_code == 200, response.text

        def multipart() -> None:
            upload = bob.create_multipart_upload(Bucket=shared, Key="mp")["UploadId"]
            bob.abort_multipart_upload(Bucket=shared, Key="mp", UploadId=upload)

        def delete_many() -> None:
            out = bob.delete_objects(Bucket=shared,
                                     Delete={"Objects": [{"Key": self.victim()}]})
            assert not out.get("Errors"), out

        cors = {"CORSRules": [{"AllowedOrigins": ["https://example.com"],
                               "AllowedMethods": ["GET"]}]}
        return {
            "list": lambda: b.list_objects_v2(Bucket=shared),
            "get": lambda: b.get_object(Bucket=shared, Key="doc.txt")["Body"].read(),
            "head": lambda: b.head_object(Bucket=shared, Key="doc.txt"),
            "copy_from": lambda: b.copy_object(Bucket=self.own, Key="copied",
                                               CopySource={"Bucket": shared, "Key": "doc.txt"}),
            "presign_get_v2": lambda: presigned("GET", b, "get_object", Key="doc.txt"),
            "presign_get_v4": lambda: presigned("GET", self.bob_v4, "get_object",
                                                Key="doc.txt"),
            "list_uploads": lambda: b.list_multipart_uploads(Bucket=shared),
            "put": lambda: b.put_object(Bucket=shared, Key="by-bob", Body=b"b"),
            "presign_put": lambda: presigned("PUT", self.bob_v4, "put_object",
                                             Key="by-bob-url"),
            "delete": lambda: b.delete_object(Bucket=shared, Key=self.victim()),
            "copy_into": lambda: b.copy_object(Bucket=shared, Key="from-bob",
                                               CopySource={"Bucket": self.own,
                                                           "Key": "mine.txt"}),
            "multipart": multipart,
            "delete_many": delete_many,
            "put_public": lambda: b.put_object(Bucket=shared, Key="public-by-bob", Body=b"p",
                                               ACL="public-read"),
            "put_bucket_acl": lambda: b.put_bucket_acl(Bucket=shared, ACL="private"),
            "get_bucket_acl": lambda: b.get_bucket_acl(Bucket=shared),
            "put_bucket_cors": lambda: b.put_bucket_cors(Bucket=shared,
                                                         CORSConfiguration=cors),
            "put_object_acl": lambda: b.put_object_acl(Bucket=shared, Key="doc.txt",
                                                       ACL="private"),
        }

    def allowed(self) -> set[str]:
        result = set()
        for name, call in self.operations().items():
            try:
                call()
            except PermissionError:
                continue
            except ClientError as exc:
                error = exc.response["Error"]
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                assert status == 403 and error["Code"] in ("AccessDenied", "403"), (name, error)
                continue
            result.add(name)
        return result

    def bob_sees_bucket(self) -> bool:
        return self.shared in {b["Name"] for b in self.bob.list_buckets()["Buckets"]}

    def bob_cannot_delete_bucket(self) -> None:
        with pytest.raises(ClientError) as info:
            self.bob.delete_bucket(Bucket=self.shared)
        assert info.value.response["Error"]["Code"] == "AccessDenied"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("grants") / "data"
    for name, (key, secret) in (("alice", ALICE), ("bob", BOB)):
        cli(data, "user", "add", name)
        cli(data, "key", "create", "--user", name, "--access-key", key, "--secret-key", secret)
    server = GatewayProcess(data).start()
    try:
        yield World(data, server)
    finally:
        server.stop()


def test_no_grant_opens_nothing(world: World) -> None:
    assert world.allowed() == set()
    assert not world.bob_sees_bucket()
    world.bob_cannot_delete_bucket()


@pytest.mark.parametrize(("permission", "expected"), [
    ("read", set(READ_OPS)),
    ("write", set(READ_OPS + WRITE_OPS)),
    ("full", set(ALL_OPS)),
])
def test_user_grants(world: World, permission: str, expected: set[str]) -> None:
    world.cli("grant", "set", world.shared, "--user", "bob", "--permission", permission)
    try:
        assert world.allowed() == expected
        assert world.bob_sees_bucket()
        world.bob_cannot_delete_bucket()
    finally:
        world.cli("grant", "revoke", world.shared, "--user", "bob")
    # Revoking closes it again, at once (grants are not cached).
    assert world.allowed() == set()
    assert not world.bob_sees_bucket()


def test_grant_through_a_group(world: World) -> None:
    world.cli("group", "add", "editors")
    world.cli("grant", "set", world.shared, "--group", "editors", "--permission", "write")
    assert world.allowed() == set()  # bob is not a member yet
    gw(world.data, "group", "add-member", "editors", "bob")  # the real command, once
    assert world.allowed() == set(READ_OPS + WRITE_OPS)
    assert world.bob_sees_bucket()
    listed = gw(world.data, "grant", "list", world.shared, "--json").stdout
    assert '"grantee": "editors"' in listed and '"permission": "write"' in listed
    # Leaving the group takes the access away, without waiting for any cache.
    world.cli("group", "remove-member", "editors", "bob")
    assert world.allowed() == set()
    assert not world.bob_sees_bucket()
    # A direct grant and a group's: the stronger one counts.
    world.cli("group", "add-member", "editors", "bob")
    world.cli("grant", "set", world.shared, "--user", "bob", "--permission", "read")
    assert "put" in world.allowed()
    # Deleting the group deletes its grants.
    world.cli("group", "delete", "editors")
    assert world.allowed() == set(READ_OPS)
    world.cli("grant", "revoke", world.shared, "--user", "bob")
    assert world.allowed() == set()


def test_public_bucket_still_readable_anonymously_but_not_writable(world: World) -> None:
    world.alice.put_bucket_acl(Bucket=world.shared, ACL="public-read")
    try:
        url = f"{world.server.url}/{world.shared}/doc.txt"
        assert httpx.get(url).status_code == 200
        assert httpx.put(url + "-anon", content=b"x").status_code == 403
        # Bob reads it too (authenticated users count as "anyone"), but writes nothing.
        assert world.allowed() == {"list", "get", "head", "copy_from", "presign_get_v2",
                                   "presign_get_v4", "list_uploads"}
    finally:
        world.alice.put_bucket_acl(Bucket=world.shared, ACL="private")
