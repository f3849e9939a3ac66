"""Login sessions of the JSON API: password and key logins, refusals, logout, expiry, and
what is stored (a hash of the token; scrypt strings for passwords). Plus the token and
admin endpoints that sit on top of them."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests._server import GatewayProcess, run_cli_here
from tests._server import run_cli as spawned

ALICE_PASSWORD = "correct horse battery"
ALICE_KEY = ("AKSESSIONALICE000001", "alice-session-secret-0123456789")


def gw(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``gateway <args> --data-dir <data>`` by the CLI's own ``main`` in this process
    (``run_cli_here``: a process apart from the gateway's, as the spawned command is)."""
    return run_cli_here(data, *args, stdin=stdin)



def setup_users(data: Path) -> None:
    # Spawned once, as an operator runs it (``user``); the other commands run in process.
    assert spawned(data, "user", "add", "alice", "--password-stdin",
                   stdin=ALICE_PASSWORD + "\n").returncode == 0
    assert gw(data, "key", "create", "--user", "alice", "--access-key", ALICE_KEY[0],
              "--secret-key", ALICE_KEY[1]).returncode == 0
    assert gw(data, "user", "add", "dave", "--password-stdin",
              stdin="dave's password\n").returncode == 0
    too_short = gw(data, "user", "add", "eve", "--password-stdin", stdin="short\n")
    assert too_short.returncode == 1 and "at least 8" in too_short.stderr


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """The module's gateway, and a second one on its data dir (the same users) whose
    sessions last 2 s; started together."""
    data = tmp_path_factory.mktemp("sessions") / "data"
    setup_users(data)
    both = (GatewayProcess(data), GatewayProcess(data, env_extra={"GATEWAY_SESSION_TTL": "2"}))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(GatewayProcess.start, both))
        yield both
    finally:
        for process in both:
            process.stop()


@pytest.fixture(scope="module")
def server(gateways: tuple[GatewayProcess, GatewayProcess]) -> GatewayProcess:
    return gateways[0]


class Api:
    def __init__(self, server: GatewayProcess) -> None:
        self.base = server.url + "/api/v1"

    def login(self, **credentials: str) -> httpx.Response:
        return httpx.post(self.base + "/auth/login", json=credentials)

    def token(self, **credentials: str) -> str:
        response = self.login(**credentials)
        assert response.status_code == 200, response.text
        token: str = response.json()["data"]["token"]
        return token

    def call(self, method: str, path: str, token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.base + path, headers=headers, **kwargs)

    def me(self, token: str) -> httpx.Response:
        return self.call("GET", "/auth/me", token)


@pytest.fixture(scope="module")
def api(server: GatewayProcess) -> Api:
    return Api(server)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "UNAUTHORIZED"


def test_password_login(api: Api, server: GatewayProcess) -> None:
    response = api.login(username="alice", password=ALICE_PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    token = body["data"]["token"]
    assert token.startswith("gws_") and len(token) > 40
    assert body["data"]["expires_at"]
    me = api.me(token)
    assert me.status_code == 200
    assert me.json()["data"]["username"] == "alice"
    assert me.json()["data"]["role"] == "member"
    assert me.json()["data"]["groups"] == []
    # Groups show up (memberships are read per request).
    assert gw(server.data_dir, "group", "add", "kb-editors").returncode == 0
    assert gw(server.data_dir, "group", "add-member", "kb-editors", "alice").returncode == 0
    assert api.me(token).json()["data"]["groups"] == ["kb-editors"]


def test_key_login(api: Api) -> None:
    token = api.token(access_key=ALICE_KEY[0], secret_key=ALICE_KEY[1])
    assert api.me(token).json()["data"]["username"] == "alice"
    assert_unauthorized(api.login(access_key=ALICE_KEY[0], secret_key="wrong-secret-value"))
    assert_unauthorized(api.login(access_key="AKNOSUCHKEY000000000", secret_key=ALICE_KEY[1]))


def test_bad_credentials(api: Api) -> None:
    assert_unauthorized(api.login(username="alice", password="not the password"))
    assert_unauthorized(api.login(username="nobody", password="not the password"))
    assert_unauthorized(api.login(username="alice"))
    assert_unauthorized(api.login())
    assert_unauthorized(api.me("gws_made-up-token"))
    assert_unauthorized(api.call("GET", "/auth/me"))


def test_unknown_users_cost_the_same(api: Api) -> None:
    """No shortcut for unknown names: both refusals run scrypt."""
    def timed(username: str) -> float:
        start = time.perf_counter()
        assert_unauthorized(api.login(username=username, password="wrong password"))
        return time.perf_counter() - start

    # Interleaved, so that a burst of load on a shared machine slows both kinds alike; the
    # fastest of each shows the work done (a skipped scrypt would be ~100x faster).
    known: list[float] = []
    unknown: list[float] = []
    for _ in range(5):
        known.append(timed("alice"))
        unknown.append(timed(f"ghost-{uuid.uuid4().hex[:6]}"))
    assert min(unknown) > min(known) * 0.5, (known, unknown)


def test_disabled_user(api: Api, server: GatewayProcess) -> None:
    token = api.token(username="dave", password="dave's password")
    assert gw(server.data_dir, "user", "disable", "dave").returncode == 0
    try:
        assert_unauthorized(api.login(username="dave", password="dave's password"))
        assert_unauthorized(api.me(token))  # open sessions stop at once
    finally:
        assert gw(server.data_dir, "user", "enable", "dave").returncode == 0
    assert api.me(token).status_code == 200


def test_logout(api: Api) -> None:
    token = api.token(username="alice", password=ALICE_PASSWORD)
    other = api.token(username="alice", password=ALICE_PASSWORD)
    response = api.call("POST", "/auth/logout", token)
    assert response.status_code == 200 and response.json()["success"] is True
    assert_unauthorized(api.me(token))
    assert_unauthorized(api.call("POST", "/auth/logout", token))
    assert api.me(other).status_code == 200  # only that session ended


def test_password_change_ends_sessions(api: Api, server: GatewayProcess) -> None:
    token = api.token(username="dave", password="dave's password")
    assert gw(server.data_dir, "user", "passwd", "dave", "--password-stdin",
              stdin="dave's new password\n").returncode == 0
    assert_unauthorized(api.me(token))
    assert_unauthorized(api.login(username="dave", password="dave's password"))
    api.token(username="dave", password="dave's new password")


def test_what_is_stored(api: Api, server: GatewayProcess) -> None:
    token = api.token(username="alice", password=ALICE_PASSWORD)
    with sqlite3.connect(server.data_dir / "gateway.db") as db:
        hashes = {row[0] for row in db.execute("select token_hash from sessions")}
        passwords = dict(db.execute("select name, password_hash from users").fetchall())
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes
    for path in server.data_dir.glob("gateway.db*"):
        content = path.read_bytes()
        assert token.encode() not in content
        assert ALICE_PASSWORD.encode() not in content
    scheme, n, r, p, salt, digest = passwords["alice"].split("$")
    assert (scheme, int(n) >= 2**14, int(r), int(p)) == ("scrypt", True, 8, 1)
    assert salt and digest and passwords["alice"] != passwords["dave"]
    assert passwords["admin"] is None  # no password: no password login
    assert token not in server.log() and ALICE_PASSWORD not in server.log()


def test_session_expiry(gateways: tuple[GatewayProcess, GatewayProcess]) -> None:
    api = Api(gateways[1])  # GATEWAY_SESSION_TTL=2
    token = api.token(username="alice", password=ALICE_PASSWORD)
    assert api.me(token).status_code == 200
    deadline = time.monotonic() + 10
    while (me := api.me(token)).status_code == 200:
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.1)
    assert_unauthorized(me)


def test_api_tokens(api: Api) -> None:
    session = api.token(username="alice", password=ALICE_PASSWORD)
    made = api.call("POST", "/tokens", session, json={
        "name": "kb-sync", "permissions": ["storage:read"],
        "expires_at": "2099-01-01T00:00:00Z"})
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert data["token"].startswith("gwt_") and data["name"] == "kb-sync"
    assert data["permissions"] == ["storage:read"] and data["expires_at"].startswith("2099")
    header = {"X-Api-Key": base64.b64encode(data["token"].encode()).decode()}
    me = httpx.get(api.base + "/auth/me", headers=header)
    assert me.json()["data"]["permissions"] == ["storage:read"]
    # A token cannot mint one with more than it holds; members get no admin tokens.
    wider = httpx.post(api.base + "/tokens", headers=header, json={
        "name": "x", "permissions": ["storage:write"]})
    assert wider.status_code == 403
    bad = api.call("POST", "/tokens", session, json={"name": "x", "permissions": ["nope"]})
    assert bad.status_code in (400, 422) and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    listed = api.call("GET", "/tokens", session).json()["data"]
    assert data["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed)
    assert api.call("GET", "/tokens?user=admin", session).status_code == 403
    assert api.call("DELETE", f"/tokens/{data['id']}", session).status_code == 200
    assert httpx.get(api.base + "/auth/me", headers=header).status_code == 401
    assert api.call("DELETE", f"/tokens/{data['id']}", session).status_code == 404


def test_admin_endpoints(api: Api, server: GatewayProcess) -> None:
    admin = api.token(access_key=server.access_key, secret_key=server.secret_key)
    alice = api.token(username="alice", password=ALICE_PASSWORD)
    assert api.call("GET", "/admin/users", alice).status_code == 403
    name = f"frank-{uuid.uuid4().hex[:6]}"
    made = api.call("POST", "/admin/users", admin,
                    json={"name": name, "password": "frank's password"})
    assert made.status_code == 201, made.text
    assert api.call("POST", "/admin/users", admin, json={"name": name}).status_code == 409
    frank = api.token(username=name, password="frank's password")
    key = api.call("POST", f"/admin/users/{name}/keys", admin)
    assert key.status_code == 201
    secret = key.json()["data"]["secret_key"]
    keys = api.call("GET", f"/admin/users/{name}/keys", admin).json()["data"]
    assert [k["access_key"] for k in keys] == [key.json()["data"]["access_key"]]
    assert secret not in str(keys)

    # Alice shares her bucket with a group Frank joins; she manages the grants herself.
    alice_s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                            aws_access_key_id=ALICE_KEY[0], aws_secret_access_key=ALICE_KEY[1])
    frank_s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                            aws_access_key_id=key.json()["data"]["access_key"],
                            aws_secret_access_key=secret)
    bucket = f"alice-{uuid.uuid4().hex[:8]}"
    alice_s3.create_bucket(Bucket=bucket)
    alice_s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    group = f"readers-{uuid.uuid4().hex[:6]}"
    assert api.call("POST", "/admin/groups", admin, json={"name": group}).status_code == 201
    joined = api.call("PUT", f"/admin/groups/{group}/members/{name}", admin)
    assert joined.json()["data"]["members"] == [name]
    grant = {"grantee_type": "group", "grantee": group, "permission": "read"}
    assert api.call("PUT", f"/admin/buckets/{bucket}/grants", frank,
                    json=grant).status_code == 403
    assert api.call("PUT", f"/admin/buckets/{bucket}/grants", alice,
                    json=grant).status_code == 200
    grants = api.call("GET", f"/admin/buckets/{bucket}/grants", alice).json()["data"]
    assert [(g["grantee"], g["permission"]) for g in grants] == [(group, "read")]
    assert frank_s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert api.call("DELETE", f"/admin/buckets/{bucket}/grants?grantee_type=group"
                    f"&grantee={group}", alice).status_code == 200
    with pytest.raises(Exception, match="AccessDenied"):
        frank_s3.get_object(Bucket=bucket, Key="k")

    # Disable, role, password; an admin cannot lock themselves out.
    patched = api.call("PATCH", f"/admin/users/{name}", admin, json={"disabled": True})
    assert patched.json()["data"]["disabled"] is True
    assert_unauthorized(api.me(frank))
    assert api.call("PATCH", "/admin/users/admin", admin,
                    json={"disabled": True}).status_code == 400
    assert api.call("PATCH", "/admin/users/nobody", admin,
                    json={"disabled": True}).status_code == 404
    off = api.call("PATCH", f"/admin/keys/{key.json()['data']['access_key']}", admin,
                   json={"enabled": False})
    assert off.json()["data"]["enabled"] is False
    assert api.call("DELETE", f"/admin/groups/{group}", admin).status_code == 200
    assert api.call("DELETE", f"/admin/groups/{group}", admin).status_code == 404
