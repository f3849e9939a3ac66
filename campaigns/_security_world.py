"""The security campaign's world: tenants, their credentials and buckets, the dead
credentials, and every secret the campaign handles (to look for at rest and in logs).

Tenant A (alice) and tenant B (bob) each own a bucket, an S3 key, a login password, a
session and an API token. The dead credentials: a second key of alice's that gets disabled
(``X``), a user whose account gets disabled (carol), one of alice's API tokens revoked,
another expired, and one of her sessions logged out.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_urlsafe
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from botocore.exceptions import ClientError

from campaigns._gateway import s3_client
from campaigns._report import Report
from gateway.service.accounts import AccountService
from tests._server import GatewayProcess, cli_json, run_cli_here

DOC = "doc.txt"

#: Where each kind of refusal may come from, and how it must look.
S3_DENIED = "s3-denied"  # 403 AccessDenied (S3 XML)
S3_BAD_KEY = "s3-bad-key"  # 403 InvalidAccessKeyId (S3 XML)
S3_BAD_SIGNATURE = "s3-bad-signature"  # 403 SignatureDoesNotMatch
JSON_DENIED = "json-denied"  # 403, the storage API's flat shape or the envelope
JSON_UNAUTHORIZED = "json-unauthorized"  # 401
WS_FORBIDDEN = "ws-forbidden"  # an error message, code FORBIDDEN
WS_UNAUTHORIZED = "ws-unauthorized"  # the socket closed with 4401
EXPECTED: dict[str, tuple[int, frozenset[str]]] = {
    S3_DENIED: (403, frozenset({"AccessDenied"})),
    S3_BAD_KEY: (403, frozenset({"InvalidAccessKeyId"})),
    S3_BAD_SIGNATURE: (403, frozenset({"SignatureDoesNotMatch"})),
    JSON_DENIED: (403, frozenset({"AccessDenied", "FORBIDDEN"})),
    JSON_UNAUTHORIZED: (401, frozenset({"unauthorized", "UNAUTHORIZED"})),
    WS_FORBIDDEN: (403, frozenset({"FORBIDDEN"})),
    WS_UNAUTHORIZED: (4401, frozenset({"closed"})),
}


class Mismatch(Exception):
    """A call succeeded but did not do (or return) what it should have."""


@dataclass(frozen=True)
class Outcome:
    """One answer: its status and error code ("" on success; a successful call whose
    effect or body was wrong has code ``MISMATCH``)."""

    status: int
    code: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __str__(self) -> str:
        return f"{self.status} {self.code} {self.detail}".strip()


def s3_outcome(call: Callable[[], Any]) -> Outcome:
    """A boto3 call's outcome (it raises on an error answer)."""
    try:
        call()
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return Outcome(status, str(exc.response.get("Error", {}).get("Code", "")),
                       str(exc)[:160])
    except Mismatch as exc:
        return Outcome(200, "MISMATCH", str(exc)[:160])
    except Exception as exc:  # a transport error: neither granted nor a proper refusal
        return Outcome(-1, type(exc).__name__, str(exc)[:160])
    return Outcome(200)


def http_outcome(response: httpx.Response, *, body: bytes | None = None) -> Outcome:
    """An HTTP answer's outcome: the S3 XML ``Code``, or the JSON API's error code. With
    ``body``, a success must carry exactly those bytes."""
    status = response.status_code
    if 200 <= status < 300:
        if body is not None and response.content != body:
            return Outcome(status, "MISMATCH", f"{len(response.content)} bytes, not the object")
        return Outcome(status)
    code = ""
    content = response.content
    if content.lstrip().startswith(b"<"):
        found = re.search(rb"<Code>([^<]*)</Code>", content)
        code = found[1].decode() if found else ""
    elif content:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            error = parsed.get("error")
            if isinstance(error, dict):
                code = str(error.get("code", ""))
            elif status == 403 and parsed.get("code"):
                code = str(parsed["code"])
            else:
                code = str(error or parsed.get("code", ""))
    return Outcome(status, code, response.text[:160])


def transport_outcome(call: Callable[[], httpx.Response], *,
                      body: bytes | None = None) -> Outcome:
    try:
        return http_outcome(call(), body=body)
    except httpx.HTTPError as exc:
        return Outcome(-1, type(exc).__name__, str(exc)[:160])


class Matrix:
    """Cells of the isolation matrix, counted by channel. A refusal cell fails when access
    was granted (or the refused request still changed something), or when the refusal
    has the wrong status or code; a positive control fails when the owner is refused."""

    def __init__(self, report: Report) -> None:
        self.report = report
        #: Channels run side by side, in threads.
        self._lock = threading.Lock()
        self.cells: dict[str, int] = {}
        self.refusals = 0
        self.controls = 0
        self.granted = 0

    def _count(self, channel: str) -> None:
        self.cells[channel] = self.cells.get(channel, 0) + 1

    def deny(self, channel: str, cell: str, outcome: Outcome, kind: str, *,
             changed: bool = False, head: bool = False) -> bool:
        with self._lock:
            return self._deny(channel, cell, outcome, kind, changed, head)

    def _deny(self, channel: str, cell: str, outcome: Outcome, kind: str, changed: bool,
              head: bool) -> bool:
        self._count(channel)
        self.refusals += 1
        if outcome.ok or changed:
            self.granted += 1
            self.report.fail(f"WRONGLY GRANTED [{channel}] {cell}: {outcome}"
                             + (" (and it changed the victim's state)" if changed else ""))
            return False
        status, codes = EXPECTED[kind]
        # HEAD answers have no body: the status alone (botocore then names the code "403").
        right = outcome.status == status and (
            outcome.code in codes or (head and outcome.code in ("", str(status))))
        return self.report.check(right, f"wrong refusal [{channel}] {cell}: {outcome}, "
                                        f"expected {status} {'/'.join(sorted(codes))}")

    def allow(self, channel: str, cell: str, outcome: Outcome, *,
              changed: bool | None = None) -> bool:
        with self._lock:
            return self._allow(channel, cell, outcome, changed)

    def _allow(self, channel: str, cell: str, outcome: Outcome, changed: bool | None
               ) -> bool:
        self._count(channel)
        self.controls += 1
        good = outcome.ok and outcome.code == "" and changed is not False
        return self.report.check(good, f"positive control failed [{channel}] {cell}: "
                                       f"{outcome}" + (" (no effect)" if changed is False
                                                       else ""))

    def figures(self) -> None:
        for channel, count in sorted(self.cells.items()):
            self.report.figure(f"matrix cells: {channel}", count)
        self.report.figure("matrix cells checked", sum(self.cells.values()))
        self.report.figure("matrix refusals checked", self.refusals)
        self.report.figure("matrix positive controls", self.controls)
        self.report.figure("matrix wrongly granted", self.granted)


class Secrets:
    """Every secret the campaign creates or sends, by a label: none may be found in the
    database in clear, nor in any log line."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        #: Signatures sent (header and presigned): never in a log; not stored anyway.
        self.signatures: set[str] = set()
        #: Requests the watched boto3 clients sent.
        self.sent = 0
        self._lock = threading.Lock()

    def add(self, label: str, value: str) -> str:
        self.values[label] = value
        return value

    def add_token(self, label: str, token: str) -> str:
        """A bearer token, raw and Base64 (as ``X-Api-Key`` carries it)."""
        self.add(label, token)
        self.add(f"{label} (base64)", base64.b64encode(token.encode()).decode())
        return token

    def add_url(self, url: str) -> str:
        query = parse_qs(urlsplit(url).query)
        for name in ("X-Amz-Signature", "Signature"):
            self.signatures.update(query.get(name, []))
        return url

    def watch(self, client: Any) -> Any:
        """Record the signature of every request ``client`` sends."""
        def sent(request: Any, **_: Any) -> None:
            with self._lock:
                self.sent += 1
            auth = request.headers.get("Authorization")
            if auth:
                value = auth.decode() if isinstance(auth, bytes) else str(auth)
                found = re.search(r"Signature=([0-9a-f]{64})", value) or re.search(
                    r"^AWS [^:]+:(\S+)$", value)
                if found:
                    self.signatures.add(found[1])
            self.add_url(str(request.url))

        client.meta.events.register("before-send.s3", sent)
        return client

    def all(self) -> dict[str, str]:
        out = dict(self.values)
        out.update({f"signature {s[:6]}…": s for s in self.signatures})
        return out


@dataclass
class Tenant:
    """A user with an S3 key, a password, a session and an API token, and one bucket."""

    name: str
    password: str
    access_key: str
    secret_key: str
    bucket: str
    s3: Any = None
    s3v2: Any = None
    session: str = ""
    token: str = ""
    token_id: str = ""
    api: dict[str, httpx.Client] = field(default_factory=dict)
    doc: bytes = b""

    def client(self, kind: str) -> httpx.Client:
        return self.api[kind]


@dataclass
class World:
    server: GatewayProcess
    data: Path
    report: Report
    secrets: Secrets
    a: Tenant
    b: Tenant
    #: alice's second key, disabled once its positive controls passed.
    x: Tenant
    #: a user disabled (by the CLI, as an operator does) after their positive controls.
    carol: Tenant
    admin: httpx.Client
    #: root's S3 client: the owner's view of any bucket.
    root_s3: Any
    #: a user for the WebSocket's live cells (disabled while subscribed).
    erin: Tenant
    admin_session: str = ""
    #: The long version: every refusal pair and every variant.
    full: bool = False
    #: The console page as served (no secret may be in it).
    console_page: str = ""
    #: JSON API credentials that are dead by the time the matrix runs: label -> bearer.
    dead_bearers: dict[str, str] = field(default_factory=dict)
    #: Presigned URLs and POST forms signed with the X key before it was disabled.
    signed_before_disable: dict[str, Any] = field(default_factory=dict)
    #: B's one-second URLs and form (campaigns._security_matrix.sign_expiring).
    expiring: dict[str, Any] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fresh(self, stem: str = "k") -> str:
        """A name not used before (itertools.count is safe across threads)."""
        return f"{stem}-{next(self.counter):05d}"

    def api(self, bearer: str | None = None, api_key: str | None = None) -> httpx.Client:
        headers = {}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if api_key:
            headers["X-Api-Key"] = base64.b64encode(api_key.encode()).decode()
        return httpx.Client(base_url=self.server.url + "/api/v1", headers=headers, timeout=30)

    def login(self, **credentials: str) -> httpx.Response:
        return httpx.post(self.server.url + "/api/v1/auth/login", json=credentials, timeout=30)

    def session_of(self, name: str, password: str) -> str:
        response = self.login(username=name, password=password)
        if response.status_code != 200:
            raise RuntimeError(f"login {name}: {response.status_code} {response.text}")
        return self.secrets.add_token(f"session {name} {next(self.counter)}",
                                      response.json()["data"]["token"])

    def new_token(self, session: str, *, label: str, expires_at: datetime | None = None
                  ) -> tuple[str, str]:
        body: dict[str, Any] = {"name": label.replace(" ", "-"),
                                "permissions": ["storage:read", "storage:write"]}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat().replace("+00:00", "Z")
        with self.api(bearer=session) as c:
            made = c.post("/tokens", json=body)
        if made.status_code != 201:
            raise RuntimeError(f"token {label}: {made.status_code} {made.text}")
        data = made.json()["data"]
        return self.secrets.add_token(f"token {label}", data["token"]), data["id"]

    def close(self) -> None:
        for tenant in (self.a, self.b, self.x, self.carol, self.erin):
            for c in tenant.api.values():
                c.close()
        self.admin.close()


def sqlite_url(data: Path) -> str:
    """The campaign's database: SQLite in the data dir whatever the test run's default
    (GATEWAY_TEST_DATABASE), as its file bytes are what the at-rest check reads."""
    return f"sqlite+aiosqlite:///{data.resolve() / 'gateway.db'}"


def sqlite_flag(data: Path) -> tuple[str, str]:
    return "--database-url", sqlite_url(data)


def provision(data: Path, secrets: Secrets) -> dict[str, Tenant]:
    """Users, keys and tokens made as an operator does, with the CLI (in this process),
    before the gateway starts."""
    tag = uuid.uuid4().hex[:8]
    tenants: dict[str, Tenant] = {}
    for name in ("alice", "bob", "carol", "erin"):
        password = secrets.add(f"password {name}", f"{name}-{token_urlsafe(18)}")
        done = run_cli_here(data, "user", "add", name, "--password-stdin",
                            *sqlite_flag(data), stdin=password + "\n")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        key = cli_json(data, "key", "create", "--user", name, *sqlite_flag(data))
        tenants[name] = Tenant(name, password, key["access_key"],
                               secrets.add(f"secret key {name}", key["secret_key"]),
                               f"sec-{name[0]}-{tag}")
    extra = cli_json(data, "key", "create", "--user", "alice", *sqlite_flag(data))
    x = tenants["alice"]
    tenants["x"] = Tenant("alice", x.password, extra["access_key"],
                          secrets.add("secret key alice (disabled)", extra["secret_key"]),
                          x.bucket)
    # A CLI-made token, carried through the run like the API-made ones.
    made = cli_json(data, "token", "create", "--user", "bob", "--name", "cli", *sqlite_flag(data),
                    "--permission=storage:read", "--permission=storage:write")
    secrets.add_token("token bob (cli)", made["token"])
    tenants["bob"].token = made["token"]
    tenants["bob"].token_id = made["id"]
    return tenants


def build(server: GatewayProcess, data: Path, report: Report, secrets: Secrets,
          tenants: dict[str, Tenant]) -> World:
    admin_session = secrets.add_token("session admin", httpx.post(
        server.url + "/api/v1/auth/login", json={"access_key": server.access_key,
                                                 "secret_key": server.secret_key},
        timeout=30).json()["data"]["token"])
    secrets.add("secret key root", server.secret_key)
    world = World(server, data, report, secrets, tenants["alice"], tenants["bob"],
                  tenants["x"], tenants["carol"],
                  httpx.Client(base_url=server.url + "/api/v1",
                               headers={"Authorization": f"Bearer {admin_session}"},
                               timeout=30),
                  secrets.watch(s3_client(server)), tenants["erin"])
    world.admin_session = admin_session
    for t in (world.a, world.b, world.x, world.carol, world.erin):
        t.s3 = secrets.watch(s3_client(server, access_key=t.access_key,
                                       secret_key=t.secret_key, signature_version="s3v4"))
        t.s3v2 = secrets.watch(s3_client(server, access_key=t.access_key,
                                         secret_key=t.secret_key, signature_version="s3"))
    for t in (world.a, world.b, world.carol, world.erin):
        t.session = world.session_of(t.name, t.password)
        if not t.token:
            t.token, t.token_id = world.new_token(t.session, label=f"{t.name} api")
        t.api = {"session": world.api(bearer=t.session), "token": world.api(api_key=t.token)}
        t.doc = f"{t.name}'s document in {t.bucket}\n".encode()
        t.s3.create_bucket(Bucket=t.bucket)
        t.s3.put_object(Bucket=t.bucket, Key=DOC, Body=t.doc)
        # Every bucket setting in place, so the owners' reads of them succeed.
        t.s3.put_bucket_tagging(Bucket=t.bucket, Tagging={"TagSet": [
            {"Key": "tenant", "Value": t.name}]})
        t.s3.put_bucket_cors(Bucket=t.bucket, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["https://tenant.example"], "AllowedMethods": ["GET"]}]})
        t.s3.put_bucket_lifecycle_configuration(Bucket=t.bucket, LifecycleConfiguration={
            "Rules": [{"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
                       "Expiration": {"Days": 30}}]})
        t.s3.put_bucket_encryption(Bucket=t.bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    world.x.doc, world.x.session = world.a.doc, world.a.session
    world.x.api = world.a.api
    return world


def kill_credentials(world: World, *, workers: int = 1) -> float:
    """Disable the X key (admin API) and carol (CLI), revoke one of alice's tokens, log
    one of her sessions out, let another token expire. Returns the seconds until the S3
    endpoint refused carol's key (the CLI's change reaches a running server within the
    account cache's lifetime)."""
    a, report = world.a, world.report
    revoked, revoked_id = world.new_token(a.session, label="alice revoked")
    expiring, _ = world.new_token(a.session, label="alice expiring",
                                  expires_at=datetime.now(UTC) + timedelta(seconds=2))
    logged_out = world.session_of("alice", a.password)
    for label, bearer in (("revoked token", revoked), ("expired token", expiring),
                          ("logged-out session", logged_out)):
        with world.api(bearer=bearer) as c:  # alive until now
            report.check(c.get("/auth/me").status_code == 200, f"{label} did not work alive")
    with world.api(bearer=a.session) as c:
        report.check(c.delete(f"/tokens/{revoked_id}").status_code == 200, "revoking failed")
    with world.api(bearer=logged_out) as c:
        report.check(c.post("/auth/logout").status_code == 200, "logout failed")
    answer = world.admin.patch(f"/admin/keys/{world.x.access_key}", json={"enabled": False})
    report.check(answer.status_code == 200, f"disabling a key: {answer.text}")
    done = run_cli_here(world.data, "user", "disable", "carol", *sqlite_flag(world.data))
    report.check(done.returncode == 0, f"gateway user disable: {done.stderr}")
    disabled_at = time.monotonic()
    world.dead_bearers = {"revoked token": revoked, "expired token": expiring,
                          "logged-out session": logged_out,
                          "disabled user's session": world.carol.session,
                          "disabled user's token": world.carol.token}
    if workers == 1:  # the admin API's change is immediate in the process that made it
        refused = s3_outcome(lambda: world.x.s3.list_objects_v2(Bucket=a.bucket))
        report.check(refused.code == "InvalidAccessKeyId",
                     f"a key disabled through the admin API still worked: {refused}")
    # Other processes (the CLI's change, other workers) within the account cache's life.
    limit = AccountService.CACHE_TTL + 2
    pending = {"carol": lambda: world.carol.s3.list_objects_v2(Bucket=world.carol.bucket),
               "X": lambda: world.x.s3.list_objects_v2(Bucket=a.bucket)}
    while pending and time.monotonic() - disabled_at <= limit:
        for name, call in list(pending.items()):
            if not s3_outcome(call).ok:
                del pending[name]
        time.sleep(0.1)
    waited = time.monotonic() - disabled_at
    report.check(not pending, f"still accepted {limit:.0f} s after being disabled: "
                              f"{sorted(pending)}")
    # Each worker's cache expires on its own: a run of refusals shows all have.
    if workers > 1:
        time.sleep(AccountService.CACHE_TTL)
    time.sleep(max(0.0, 2.2 - (time.monotonic() - disabled_at)))  # the expiring token
    return waited
