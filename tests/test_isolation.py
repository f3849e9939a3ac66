"""Tenant isolation through every door — S3 header auth, presigned URLs (SigV2 and SigV4)
and the JSON API (login session, API token) — as one table of operations by doors; grants
open exactly what they say and revoking closes again. Then API token permissions and
expiry over HTTP, and secrets that must never reach the logs or the database in clear."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._server import GatewayProcess, run_cli, run_cli_here

ALICE_KEY = ("AKISOALICE0000000001", "alice-iso-secret-0123456789abcdef")
BOB_KEY = ("AKISOBOB000000000001", "bob-iso-secret-0123456789abcdef")
PASSWORDS = {"alice": "alice's long password", "bob": "bob's long password",
             "carol": "carol's long password"}
DOC = "doc.txt"
A_OBJECTS = {DOC: b"alice's document\n", "dir/data.bin": bytes(range(256)) * 41}
VICTIM = b"delete me if you may"

S3, V2, V4, SESSION, TOKEN = "s3", "presigned-v2", "presigned-v4", "json-session", "json-token"
DOORS = (S3, V2, V4, SESSION, TOKEN)
JSON = (SESSION, TOKEN)
# operation: (the weakest grant that opens it, the doors that offer it). "owner": no grant.
OPERATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "list": ("read", DOORS),
    "get": ("read", DOORS),
    "head": ("read", DOORS),
    "copy_from": ("read", DOORS),  # into the caller's own bucket
    "presign_get": ("read", JSON),  # POST …/presign: the URL must work too
    "quota": ("read", JSON),  # GET /api/v1/admin/buckets/{bucket}/quota
    "put": ("write", DOORS),
    "delete": ("write", DOORS),
    "presign_put": ("write", JSON),
    "bucket_acl": ("full", (S3, V2, V4)),
    "bucket_cors": ("full", (S3,)),
    "grants": ("full", JSON),  # PUT + DELETE /api/v1/admin/buckets/{bucket}/grants
    "delete_bucket": ("owner", (S3, SESSION, TOKEN)),
}
RANK = {None: 0, "read": 1, "write": 2, "full": 3, "owner": 4}


def expected(permission: str | None) -> set[tuple[str, str]]:
    return {(door, op) for op, (needed, doors) in OPERATIONS.items() for door in doors
            if RANK[permission] >= RANK[needed]}


def gw(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI, as its own process, with default logging (GATEWAY_LOG_LEVEL unset)."""
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_LOG_LEVEL"}
    result = run_cli(data, *args, stdin=stdin, env=env)
    assert result.returncode == 0, (args, result.stderr)
    return result


def gw_together(data: Path, *commands: tuple[str, ...],
                stdin: dict[int, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """:func:`gw` for several commands that do not depend on one another, at the same time
    (``stdin``: by the command's index)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda i: gw(data, *commands[i], stdin=(stdin or {}).get(i)),
                             range(len(commands))))


def cli(data: Path, *args: str, stdin: str = "") -> str:
    """``gateway <args> --data-dir <data>``, which must succeed, run by the command's own
    entry point in this process (``run_cli_here``: a process apart from the gateway's, as
    with :func:`gw`, without starting an interpreter each time): what it would show in a
    terminal — its standard output and error, WARNING logs included."""
    done = run_cli_here(data, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr



def s3_client(server: GatewayProcess, key: tuple[str, str], **config: Any) -> Any:
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=Config(**config) if config else None)


def login(server: GatewayProcess, **credentials: str) -> str:
    response = httpx.post(server.url + "/api/v1/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["token"]
    return token


def api(server: GatewayProcess, *, bearer: str | None = None,
        api_key: str | None = None) -> httpx.Client:
    headers = {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if api_key:
        headers["X-Api-Key"] = base64.b64encode(api_key.encode()).decode()
    return httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=30)


def s3_outcome(call: Callable[[], Any]) -> bool:
    """True when the boto3 call succeeds; False on 403 AccessDenied; anything else fails."""
    try:
        call()
    except ClientError as exc:
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        code = exc.response["Error"]["Code"]
        assert status == 403 and code in ("AccessDenied", "403"), exc.response  # 403: HEAD
        return False
    return True


def http_outcome(response: httpx.Response, shape: str, ok: tuple[int, ...] = (200,)) -> bool:
    """True on success; False on a 403 of the door's shape: S3 XML, the storage API's flat
    JSON or the API envelope. HEAD answers carry no body."""
    if response.status_code in ok:
        return True
    where = (response.request.method, str(response.request.url.path), response.status_code,
             response.text)
    assert response.status_code == 403, where
    if response.request.method == "HEAD":
        assert not response.content, where
    elif shape == "xml":
        assert b"<Code>AccessDenied</Code>" in response.content, where
    elif shape == "storage":
        body = response.json()
        assert (body["error"], body["code"]) == ("forbidden", "AccessDenied"), where
        assert body["request_id"] == response.headers["x-request-id"], where
    else:
        body = response.json()
        assert body["success"] is False and body["error"]["code"] == "FORBIDDEN", where
    return False


def then(done: bool, check: Callable[[], bool | None]) -> bool:
    """``done``, after asserting the success had its effect (``check`` is falsy only when
    it is a failed comparison; None means it asserted itself)."""
    if done:
        assert check() is not False
    return done


class World:
    def __init__(self, data: Path, server: GatewayProcess) -> None:
        self.data, self.server = data, server
        self.alice = s3_client(server, ALICE_KEY)
        self.bob = s3_client(server, BOB_KEY)
        self.bob_v2 = s3_client(server, BOB_KEY, signature_version="s3")
        self.bob_v4 = s3_client(server, BOB_KEY, signature_version="s3v4")
        self.shared = f"alice-{uuid.uuid4().hex[:12]}"
        self.own = f"bob-{uuid.uuid4().hex[:12]}"
        self.alice.create_bucket(Bucket=self.shared)
        for key, body in A_OBJECTS.items():
            self.alice.put_object(Bucket=self.shared, Key=key, Body=body)
        self.bob.create_bucket(Bucket=self.own)
        self.bob.put_object(Bucket=self.own, Key="mine.txt", Body=b"bob's")
        self.alice_api = api(server, bearer=login(server, username="alice",
                                                  password=PASSWORDS["alice"]))
        self.bob_session = login(server, username="bob", password=PASSWORDS["bob"])
        made = api(server, bearer=self.bob_session).post("/tokens", json={
            "name": "iso", "permissions": ["storage:read", "storage:write"]})
        assert made.status_code == 201, made.text
        self.json = {SESSION: api(server, bearer=self.bob_session),
                     TOKEN: api(server, api_key=made.json()["data"]["token"])}

    # -- the table's cells -------------------------------------------------------------------

    def ops(self, door: str) -> dict[str, Callable[[], bool]]:
        if door == S3:
            return self._s3_ops()
        if door in (V2, V4):
            return self._presigned_ops(self.bob_v2 if door == V2 else self.bob_v4, door)
        return self._json_ops(self.json[door], door)

    def _read_back(self, key: str, body: bytes) -> None:
        assert self.alice.get_object(Bucket=self.shared, Key=key)["Body"].read() == body

    def _gone(self, key: str) -> None:
        with pytest.raises(ClientError):
            self.alice.head_object(Bucket=self.shared, Key=key)

    def _copied(self, key: str) -> None:
        got = self.bob.get_object(Bucket=self.own, Key=key)["Body"].read()
        assert got == A_OBJECTS[DOC]

    def _s3_ops(self) -> dict[str, Callable[[], bool]]:
        b, sh = self.bob, self.shared
        cors = {"CORSRules": [{"AllowedOrigins": ["https://bob.example"],
                               "AllowedMethods": ["GET"]}]}

        def get() -> None:
            assert b.get_object(Bucket=sh, Key=DOC)["Body"].read() == A_OBJECTS[DOC]

        def put() -> None:
            b.put_object(Bucket=sh, Key="by-s3", Body=b"s3")
            self._read_back("by-s3", b"s3")

        def delete() -> None:
            b.delete_object(Bucket=sh, Key="victim-s3")
            self._gone("victim-s3")

        def copy() -> None:
            b.copy_object(Bucket=self.own, Key="copy-s3", CopySource={"Bucket": sh, "Key": DOC})
            self._copied("copy-s3")

        return {
            "list": lambda: s3_outcome(lambda: b.list_objects_v2(Bucket=sh)),
            "get": lambda: s3_outcome(get),
            "head": lambda: s3_outcome(lambda: b.head_object(Bucket=sh, Key=DOC)),
            "copy_from": lambda: s3_outcome(copy),
            "put": lambda: s3_outcome(put),
            "delete": lambda: s3_outcome(delete),
            "bucket_acl": lambda: s3_outcome(lambda: b.put_bucket_acl(Bucket=sh, ACL="private")),
            "bucket_cors": lambda: s3_outcome(
                lambda: (b.put_bucket_cors(Bucket=sh, CORSConfiguration=cors),
                         self.alice.delete_bucket_cors(Bucket=sh))),
            "delete_bucket": lambda: s3_outcome(lambda: b.delete_bucket(Bucket=sh)),
        }

    def _presigned_ops(self, signer: Any, door: str) -> dict[str, Callable[[], bool]]:
        sh = self.shared

        def fetch(method: str, operation: str, params: dict[str, Any], ok: int = 200,
                  **kwargs: Any) -> bool:
            url = signer.generate_presigned_url(operation, Params={"Bucket": sh, **params})
            return http_outcome(httpx.request(method, url, **kwargs), "xml", ok=(ok,))

        def get() -> bool:
            url = signer.generate_presigned_url("get_object", Params={"Bucket": sh, "Key": DOC})
            response = httpx.get(url)
            return then(http_outcome(response, "xml"),
                        lambda: response.content == A_OBJECTS[DOC])

        copy = {"Bucket": self.own, "Key": f"copy-{door}", "CopySource": f"{sh}/{DOC}"}
        return {
            "list": lambda: fetch("GET", "list_objects_v2", {}),
            "get": get,
            "head": lambda: fetch("HEAD", "head_object", {"Key": DOC}),
            "copy_from": lambda: then(
                http_outcome(httpx.put(signer.generate_presigned_url("copy_object", Params=copy),
                                       headers={"x-amz-copy-source": f"{sh}/{DOC}"}), "xml"),
                lambda: self._copied(f"copy-{door}")),
            "put": lambda: then(fetch("PUT", "put_object", {"Key": f"by-{door}"}, content=b"url"),
                                lambda: self._read_back(f"by-{door}", b"url")),
            "delete": lambda: then(fetch("DELETE", "delete_object", {"Key": f"victim-{door}"},
                                         ok=204), lambda: self._gone(f"victim-{door}")),
            "bucket_acl": lambda: fetch("PUT", "put_bucket_acl", {"ACL": "private"},
                                        headers={"x-amz-acl": "private"}),
        }

    def _json_ops(self, c: httpx.Client, door: str) -> dict[str, Callable[[], bool]]:
        sh = self.shared
        objects = f"/storage/buckets/{sh}/objects"
        grants = f"/admin/buckets/{sh}/grants"
        carol = {"grantee_type": "user", "grantee": "carol"}

        def get() -> bool:
            response = c.get(f"{objects}/{DOC}")
            return then(http_outcome(response, "storage"),
                        lambda: response.content == A_OBJECTS[DOC])

        def presign(operation: str) -> bool:
            key = DOC if operation == "GET" else f"by-{door}-url"
            response = c.post(f"{objects}/{key}/presign", json={"operation": operation})
            if not http_outcome(response, "storage"):
                return False
            url = response.json()["url"]
            if operation == "GET":
                assert httpx.get(url).content == A_OBJECTS[DOC]
            else:
                assert httpx.put(url, content=b"presigned").status_code == 200
                self._read_back(key, b"presigned")
            return True

        return {
            "list": lambda: http_outcome(c.get(objects), "storage"),
            "get": get,
            "head": lambda: http_outcome(c.head(f"{objects}/{DOC}"), "storage"),
            "copy_from": lambda: then(http_outcome(c.post(f"{objects}/{DOC}/copy", json={
                "destination_bucket": self.own, "destination_key": f"copy-{door}"}),
                "storage"), lambda: self._copied(f"copy-{door}")),
            "presign_get": lambda: presign("GET"),
            "quota": lambda: http_outcome(c.get(f"/admin/buckets/{sh}/quota"), "envelope"),
            "put": lambda: then(http_outcome(c.put(f"{objects}/by-{door}", content=b"json"),
                                             "storage"),
                                lambda: self._read_back(f"by-{door}", b"json")),
            "delete": lambda: then(http_outcome(c.delete(f"{objects}/victim-{door}"),
                                                "storage"),
                                   lambda: self._gone(f"victim-{door}")),
            "presign_put": lambda: presign("PUT"),
            "grants": lambda: then(  # Bob shares Alice's bucket with Carol, then takes it back
                http_outcome(c.put(grants, json={**carol, "permission": "read"}), "envelope"),
                lambda: c.request("DELETE", grants, params=carol).status_code == 200),
            "delete_bucket": lambda: http_outcome(c.delete(f"/storage/buckets/{sh}"),
                                                  "storage"),
        }

    # -- sweeping the table ------------------------------------------------------------------

    def reset(self) -> None:
        """Victims back in place; whatever Bob wrote or copied removed."""
        keys = {o["Key"] for o in self.alice.list_objects_v2(Bucket=self.shared)
                .get("Contents", [])}
        for key in keys - set(A_OBJECTS):
            self.alice.delete_object(Bucket=self.shared, Key=key)
        for door in DOORS:
            self.alice.put_object(Bucket=self.shared, Key=f"victim-{door}", Body=VICTIM)
        for obj in self.bob.list_objects_v2(Bucket=self.own).get("Contents", []):
            if obj["Key"] != "mine.txt":
                self.bob.delete_object(Bucket=self.own, Key=obj["Key"])

    def allowed(self) -> set[tuple[str, str]]:
        self.reset()
        done = set()
        for door in DOORS:
            ops = self.ops(door)
            assert set(ops) == {op for op, (_, doors) in OPERATIONS.items() if door in doors}
            done |= {(door, op) for op, call in ops.items() if call()}
        return done

    def sees(self) -> dict[str, bool]:
        """Whether Alice's bucket shows in Bob's bucket listings, per door."""
        url = self.bob_v4.generate_presigned_url("list_buckets")
        return {
            S3: self.shared in {b["Name"] for b in self.bob.list_buckets()["Buckets"]},
            V4: f"<Name>{self.shared}</Name>" in httpx.get(url).text,
            **{door: self.shared in {b["name"] for b in
                                     self.json[door].get("/storage/buckets").json()["buckets"]}
               for door in JSON},
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything about Alice's bucket a refused request might have changed."""
        a, sh = self.alice, self.shared
        objects = {o["Key"]: (o["ETag"], o["Size"],
                              a.get_object(Bucket=sh, Key=o["Key"])["Body"].read())
                   for o in a.list_objects_v2(Bucket=sh).get("Contents", [])}
        try:
            cors = a.get_bucket_cors(Bucket=sh)["CORSRules"]
        except ClientError as exc:
            cors = exc.response["Error"]["Code"]
        return {"objects": objects, "acl": a.get_bucket_acl(Bucket=sh)["Grants"], "cors": cors,
                "grants": self.alice_api.get(f"/admin/buckets/{sh}/grants").json()["data"],
                "bob": [o["Key"] for o in self.bob.list_objects_v2(Bucket=self.own)["Contents"]]}

    def assert_closed(self) -> None:
        self.reset()
        before = self.snapshot()
        assert self.allowed() == set()
        assert self.sees() == dict.fromkeys((S3, V4, *JSON), False)
        after = self.snapshot()
        assert after == before
        for key, body in A_OBJECTS.items():
            assert after["objects"][key][2] == body  # byte for byte

    def grant(self, kind: str, name: str, permission: str | None) -> None:
        path = f"/admin/buckets/{self.shared}/grants"
        if permission is None:
            response = self.alice_api.request("DELETE", path, params={
                "grantee_type": kind, "grantee": name})
        else:
            response = self.alice_api.put(path, json={"grantee_type": kind, "grantee": name,
                                                      "permission": permission})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("isolation") / "data"
    for name, password in PASSWORDS.items():
        cli(data, "user", "add", name, "--password-stdin", stdin=password + "\n")
    for name, (key, secret) in (("alice", ALICE_KEY), ("bob", BOB_KEY)):
        cli(data, "key", "create", "--user", name, "--access-key", key, "--secret-key", secret)
    server = GatewayProcess(data).start()
    try:
        yield World(data, server)
    finally:
        server.stop()


# -- 1. the isolation matrix -------------------------------------------------------------------

def test_no_grant_opens_nothing(world: World) -> None:
    world.assert_closed()


@pytest.mark.parametrize("permission", ["read", "write", "full"])
def test_grants_open_exactly_what_they_say(world: World, permission: str) -> None:
    world.grant("user", "bob", permission)
    try:
        assert world.allowed() == expected(permission)
        assert all(world.sees().values())
    finally:
        world.grant("user", "bob", None)
    world.assert_closed()  # revoking closes again, at once


def test_grant_through_a_group(world: World) -> None:
    group = f"iso-{uuid.uuid4().hex[:6]}"
    cli(world.data, "group", "add", group)
    try:
        world.grant("group", group, "write")
        world.assert_closed()  # Bob is not a member yet
        cli(world.data, "group", "add-member", group, "bob")
        assert world.allowed() == expected("write")
        assert all(world.sees().values())
        cli(world.data, "group", "remove-member", group, "bob")
        world.assert_closed()
    finally:
        cli(world.data, "group", "delete", group)


# -- 2. API token permissions and expiry --------------------------------------------------------

def storage_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden" and body["message"] and body["request_id"]


def unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]  # the storage API's flat shape, or the envelope
    assert error == "unauthorized" if isinstance(error, str) else error["code"] == "UNAUTHORIZED"


def new_token(c: httpx.Client, *permissions: str, **extra: Any) -> tuple[str, str]:
    made = c.post("/tokens", json={"name": uuid.uuid4().hex[:8],
                                   "permissions": list(permissions), **extra})
    assert made.status_code == 201, made.text
    return made.json()["data"]["token"], made.json()["data"]["id"]


def test_token_permissions(world: World) -> None:
    server, session = world.server, world.json[SESSION]
    read_only, _ = new_token(session, "storage:read")
    with api(server, api_key=read_only) as c:
        mine = f"/storage/buckets/{world.own}/objects/mine.txt"
        assert c.get(mine).content == b"bob's"
        storage_forbidden(c.put(mine, content=b"overwritten"))
        storage_forbidden(c.delete(mine))
        storage_forbidden(c.post(f"/storage/buckets/{world.own}/objects/mine.txt/presign",
                                 json={"operation": "PUT"}))
        assert c.post("/tokens", json={"name": "w", "permissions": ["storage:write"]}
                      ).status_code == 403
    assert world.bob.get_object(Bucket=world.own, Key="mine.txt")["Body"].read() == b"bob's"

    # A member can mint no admin token, nor a token for someone else.
    refused = session.post("/tokens", json={"name": "x", "permissions": ["admin"]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert session.post("/tokens", json={"name": "x", "permissions": ["storage:read"],
                                         "user": "alice"}).status_code == 403

    # An admin's token without `admin` reaches no admin endpoint; the admin's session does.
    admin = api(server, bearer=login(server, access_key=server.access_key,
                                     secret_key=server.secret_key))
    plain, _ = new_token(admin, "storage:read", "storage:write")
    with api(server, api_key=plain) as c:
        for method, path, body in [
            ("GET", "/admin/users", None), ("POST", "/admin/users", {"name": "mallory"}),
            ("GET", "/admin/groups", None), ("GET", "/admin/quotas", None),
            ("PUT", f"/admin/buckets/{world.shared}/quota", {"max_objects": 1}),
            ("POST", "/admin/users/bob/keys", {}), ("GET", "/admin/usage", None),
        ]:
            response = c.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "FORBIDDEN"
        assert c.get("/tokens", params={"user": "bob"}).status_code == 403
    assert admin.get("/admin/users").status_code == 200
    assert admin.post("/tokens", json={"name": "x", "permissions": ["admin"],
                                       "user": "bob"}).status_code == 400  # members: never
    assert "mallory" not in {u["name"] for u in admin.get("/admin/users").json()["data"]}


def test_revoked_and_expired_tokens(world: World) -> None:
    server, session = world.server, world.json[SESSION]
    revoked, token_id = new_token(session, "storage:read")
    with api(server, api_key=revoked) as c:
        assert c.get("/storage/buckets").status_code == 200
        assert session.delete(f"/tokens/{token_id}").status_code == 200
        unauthorized(c.get("/storage/buckets"))
    with api(server, bearer=revoked) as c:
        unauthorized(c.get("/auth/me"))

    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    short, _ = new_token(session, "storage:read",
                         expires_at=expires_at.isoformat().replace("+00:00", "Z"))
    with api(server, api_key=short) as c:
        assert c.get(f"/storage/buckets/{world.own}/objects").status_code == 200
        time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.5)
        unauthorized(c.get(f"/storage/buckets/{world.own}/objects"))
        unauthorized(c.get(f"/storage/buckets/{world.own}/objects/mine.txt"))
    with api(server, bearer=short) as c:
        unauthorized(c.get("/auth/me"))
    past = session.post("/tokens", json={"name": "past", "permissions": ["storage:read"],
                                         "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400, past.text


# -- 3. secrets never logged nor stored in clear ------------------------------------------------

def signatures(url: str) -> list[str]:
    query = parse_qs(urlsplit(url).query)
    found = query.get("X-Amz-Signature", []) + query.get("Signature", [])
    assert found, url
    return found


def test_secrets_stay_out_of_logs_and_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    carol_key = ("AKISOCAROL0000000001", "carol-log-secret-0123456789abcdef")
    wrong = {"secret": "wrong-secret-value-0123456789abcdef", "password": "a wrong password!"}
    secrets: dict[str, str] = {"carol secret": carol_key[1], "carol password": PASSWORDS[
        "carol"], "new password": "carol's newer password", **wrong}
    cli_out: list[str] = []

    # The commands that take a secret, each in its own process (those that do not depend on
    # one another at the same time), as an operator runs them.
    added = gw(data, "user", "add", "carol", "--password-stdin", stdin=PASSWORDS["carol"] + "\n")
    cli_out.append(added.stdout + added.stderr)
    # An imported secret is the operator's already: not echoed into provisioning logs.
    imported, shown, cli_token, passwd = gw_together(
        data,
        ("key", "create", "--user", "carol", "--access-key", carol_key[0],
         "--secret-key", carol_key[1]),
        ("key", "create", "--user", "carol", "--json"),
        ("token", "create", "--user", "carol", "--name", "cli", "--permission", "storage:read"),
        ("user", "passwd", "carol", "--password-stdin"),
        stdin={3: secrets["new password"] + "\n"})
    cli_out += [imported.stdout + imported.stderr, shown.stderr, cli_token.stderr,
                passwd.stdout + passwd.stderr]
    secrets["cli secret"] = re.search(r'"secret_key": "([^"]+)"', shown.stdout)[1]  # type: ignore[index]
    secrets["cli token"] = re.search(r"token: (gwt_\S+)", cli_token.stdout)[1]  # type: ignore[index]
    # The listings (read only) in this process: same code, same output, less time.
    listed = [cli(data, what, "list", *flag) for what in ("user", "key", "token")
              for flag in ((), ("--json",))]
    cli_out += listed
    assert carol_key[0] in listed[2] and '"name": "cli"' in listed[5]

    server = GatewayProcess(data, env_extra={"GATEWAY_LOG_LEVEL": "debug"}).start()
    secrets["root secret"] = server.secret_key
    signed: list[str] = []
    try:
        base = server.url + "/api/v1"
        carol = s3_client(server, carol_key)
        impostor = s3_client(server, (carol_key[0], wrong["secret"]))
        for c in (carol, impostor):  # header signatures are secrets too
            c.meta.events.register("before-send.s3", lambda request, **_: signed.append(
                str(request.headers["Authorization"]).rpartition("Signature=")[2][:64]))
        carol.create_bucket(Bucket="carol-logs")
        carol.put_object(Bucket="carol-logs", Key="k", Body=b"v")
        assert carol.get_object(Bucket="carol-logs", Key="k")["Body"].read() == b"v"
        for version in ("s3", "s3v4"):
            signer = s3_client(server, carol_key, signature_version=version)
            for method, operation in (("GET", "get_object"), ("PUT", "put_object")):
                key = "k" if method == "GET" else f"url-{version}"
                url = signer.generate_presigned_url(operation, Params={
                    "Bucket": "carol-logs", "Key": key})
                response = httpx.request(method, url, content=b"u" if method == "PUT" else None)
                assert response.status_code == 200, response.text
                signed += signatures(url)
        ok_url = s3_client(server, carol_key, signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": "carol-logs", "Key": "k"})
        assert httpx.get(ok_url).content == b"v"
        signed += signatures(ok_url)
        bad_url = re.sub(r"X-Amz-Signature=\w+", "X-Amz-Signature=" + "0" * 64, ok_url)
        assert httpx.get(bad_url).status_code == 403
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            impostor.list_objects_v2(Bucket="carol-logs")

        def post(path: str, token: str | None = None, **body: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.post(base + path, json=body, headers=headers)

        assert post("/auth/login", username="carol", password=wrong["password"]
                    ).status_code == 401
        assert post("/auth/login", access_key=carol_key[0], secret_key=wrong["secret"]
                    ).status_code == 401
        session = login(server, username="carol", password=secrets["new password"])
        key_session = login(server, access_key=carol_key[0], secret_key=carol_key[1])
        admin = login(server, access_key=server.access_key, secret_key=server.secret_key)
        made = post("/tokens", session, name="api", permissions=["storage:read"])
        token = made.json()["data"]["token"]
        secrets.update({"session": session, "key session": key_session,
                        "admin session": admin, "api token": token,
                        "api token b64": base64.b64encode(token.encode()).decode(),
                        "cli token b64": base64.b64encode(secrets["cli token"].encode())
                        .decode()})
        for header in ({"X-Api-Key": secrets["api token b64"]},
                       {"Authorization": f"Bearer {token}"},
                       {"X-Api-Key": secrets["cli token b64"]}):
            assert httpx.get(base + "/storage/buckets", headers=header).status_code == 200
        presigned = post("/storage/buckets/carol-logs/objects/k/presign", session)
        assert httpx.get(presigned.json()["url"]).content == b"v"
        signed += signatures(presigned.json()["url"])
        new_key = post("/admin/users/carol/keys", admin)
        assert new_key.status_code == 201, new_key.text
        secrets["admin api secret"] = new_key.json()["data"]["secret_key"]
        for logged_in in (session, key_session, admin):
            assert post("/auth/logout", logged_in).status_code == 200
    finally:
        server.stop()

    log = server.log()
    assert "GET /carol-logs/k" in log  # the debug access log did run
    assert len(signed) >= 10 and all(len(s) >= 20 for s in signed), signed
    # SigV2 signatures are Base64: look for them percent-encoded as well.
    secrets.update({f"signature {i} {form}": value for i, s in enumerate(signed)
                    for form, value in (("raw", s), ("quoted", quote(s, safe="")))})
    leaks = {name for name, value in secrets.items() if value in log}
    assert not leaks, f"in the server's log: {sorted(leaks)}"
    leaks = {name for name, value in secrets.items() if any(value in o for o in cli_out)}
    assert not leaks, f"in the CLI's output: {sorted(leaks)}"

    stored = b"".join(path.read_bytes() for path in data.glob("gateway.db*"))
    assert len(stored) > 0
    at_rest = {name: value for name, value in secrets.items() if not name.startswith("sig")}
    leaks = {name for name, value in at_rest.items() if value.encode() in stored}
    assert not leaks, f"in the database in clear: {sorted(leaks)}"
