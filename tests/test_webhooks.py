"""Webhook delivery against a real gateway process and real HTTP receivers: every change in
a bot's bucket reaches its URL once per POST, in order, signed with the bot's secret; a
failing receiver is retried with backoff and counted in the bots table, loses nothing when
it recovers, and blocks no other bot; a restart resumes from ``delivered_seq``; the change
log's purge keeps a bot's backlog."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from gateway.metadata.db import Database
from gateway.metadata.models import bots, change_counter, changes
from gateway.service.egress import (
    AddressNotAllowed,
    AddressPolicy,
    parse_networks,
    policed_transport,
)
from gateway.service.webhooks import backoff_seconds
from tests import _postgres
from tests._server import GatewayProcess, database_for, free_port, run_cli_here

#: Short, so that retries and the purge are seen within seconds (the backoff's growth up
#: to its cap is shown without a server, in ``test_backoff_doubles_up_to_the_cap``).
TIMEOUT_S, MAX_BACKOFF_S, RETENTION_S = 2, 1, 2
#: The receivers here listen on loopback, which webhooks may not reach by default
#: (``test_webhooks_reach_public_addresses_only``).
LOOPBACK_ALLOWED = {"GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


# -- a receiver ------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """A webhook receiver on its own port that records every POST. ``mode``: ``ok`` (204),
    ``fail`` (500 with a body), ``redirect`` (302), ``slow`` (answers after the gateway's
    timeout). ``stop()`` closes the port (connections are refused), ``start()`` reopens it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = owner.mode
                with owner._lock:
                    owner.received.append(Received(
                        {k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                if mode == "slow":
                    time.sleep(TIMEOUT_S + 1.5)
                if mode == "fail":
                    self._answer(500, b"boom: the receiver is broken\n" + b"x" * 500)
                elif mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._answer(204, b"")

            def _answer(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the gateway gave up waiting

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()


# -- the gateway -----------------------------------------------------------------------------


def cli_json(data: Path, *args: str) -> dict[str, Any]:
    """``gateway <args> --data-dir <data> --json``, which must succeed, run by the command's
    own entry point in this process (``run_cli_here``: beside the running gateway, as the
    command would be, without starting an interpreter each time): its object."""
    done = run_cli_here(data, *args, "--json")
    assert done.returncode == 0, (args, done.stderr)
    text = done.stdout.strip()
    return dict(json.loads(text)) if text.startswith("{") else {}



def in_db(data: Path, unit: Callable[[Connection], Any]) -> Any:
    """Run ``unit`` in one transaction on the gateway's metadata database."""
    url = database_for(data) or f"sqlite+aiosqlite:///{(data / 'gateway.db').resolve()}"

    async def go() -> Any:
        db = Database(url)
        await db.start()
        try:
            return await db.write(unit)
        finally:
            await db.aclose()

    return _postgres.run(go)


def admin_view(env: Env, bot_id: str) -> dict[str, Any]:
    """The bot as ``GET /api/v1/bot/admin`` shows it (the Talk bots reference's shape)."""
    listed = httpx.get(env.server.url + "/api/v1/bot/admin", params={"limit": 100},
                       headers={"Authorization": f"Bearer {env.admin_token}"}, timeout=30)
    assert listed.status_code == 200, listed.text
    found: dict[str, Any] = next(b for b in listed.json()["data"] if b["id"] == bot_id)
    return found


def bot_row(data: Path, bot_id: str) -> Any:
    return in_db(data, lambda conn: conn.execute(
        select(bots).where(bots.c.id == bot_id)).one())


@dataclass
class Bot:
    id: str
    bucket: str
    secret: str
    receiver: Receiver


@dataclass
class Env:
    server: GatewayProcess
    token: str  # alice's API token
    admin_token: str  # the administrator's (for GET /api/v1/bot/admin)
    s3: Any  # alice's S3 client
    receivers: list[Receiver]

    @property
    def data(self) -> Path:
        return self.server.data_dir

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url + "/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def receiver(self) -> Receiver:
        made = Receiver().start()
        self.receivers.append(made)
        return made

    def bot(self, receiver: Receiver) -> Bot:
        """A new bot of alice's (``POST /api/v1/bots``) whose webhook is ``receiver``."""
        with self.api() as api:
            made = api.post("/bots", json={"name": f"wh-{uuid.uuid4().hex[:10]}",
                                           "url": receiver.url})
        assert made.status_code == 201, made.text
        data = made.json()["data"]
        return Bot(data["id"], data["bucket"], data["secret"], receiver)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = GatewayProcess(tmp_path_factory.mktemp("webhooks") / "data", env_extra={
        "GATEWAY_WEBHOOK_TIMEOUT": str(TIMEOUT_S),
        "GATEWAY_WEBHOOK_MAX_BACKOFF": str(MAX_BACKOFF_S),
        "GATEWAY_CHANGE_RETENTION": str(RETENTION_S), **LOOPBACK_ALLOWED,
    }).start()
    receivers: list[Receiver] = []
    try:
        data = server.data_dir
        cli_json(data, "user", "add", "alice")
        keys = cli_json(data, "key", "create", "--user", "alice")
        token = cli_json(data, "token", "create", "--user", "alice", "--name", "t",
                         "--permission=storage:read", "--permission=storage:write",
                         "--permission=bots:read", "--permission=bots:write")["token"]
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=keys["access_key"],
                          aws_secret_access_key=keys["secret_key"])
        admin_token = cli_json(data, "token", "create", "--user", "admin", "--name", "a",
                               "--permission=admin")["token"]
        yield Env(server, token, admin_token, s3, receivers)
    finally:
        server.stop()
        for receiver in receivers:
            receiver.stop()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def put(env: Env, bucket: str, key: str, body: bytes = b"hello") -> None:
    env.s3.put_object(Bucket=bucket, Key=key, Body=body)


def head_seq(env: Env) -> int:
    return int(in_db(env.data, lambda conn: conn.execute(
        select(change_counter.c.value)).scalar_one()))


def sequences(receiver: Receiver) -> list[int]:
    return [e["sequence"] for e in receiver.events()]


# -- tests -----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    """1 s, 2 s, 4 s … each within ±20 %, never above ``webhook_max_backoff``."""
    assert [backoff_seconds(n, 3600, rand=lambda: 0.5) for n in range(1, 6)] \
        == [1, 2, 4, 8, 16]
    assert (backoff_seconds(3, 3600, rand=lambda: 0.0),
            backoff_seconds(3, 3600, rand=lambda: 1.0)) == pytest.approx((3.2, 4.8))
    assert backoff_seconds(30, 60, rand=lambda: 0.5) == 60
    assert backoff_seconds(30, 60, rand=lambda: 1.0) == 60
    assert backoff_seconds(30, 60, rand=lambda: 0.0) == 48


def test_events_arrive_in_order_signed(env: Env) -> None:
    receiver = env.receiver()
    bot = env.bot(receiver)
    other = env.bot(env.receiver())
    start = head_seq(env)
    keys = [f".gbdrive/attachments/f{i}.bin" for i in range(5)]
    for i, key in enumerate(keys):
        put(env, bot.bucket, key, b"x" * (i + 1))
        put(env, other.bucket, key)  # another bot's: never sent here
    env.s3.delete_object(Bucket=bot.bucket, Key=keys[0])

    got = wait_for("six events", lambda: len(receiver.received) >= 6 and receiver.received)
    time.sleep(0.5)
    assert len(receiver.received) == 6, "one POST per change, no more"
    events = [r.event for r in got]
    seqs = [e["sequence"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6 and seqs[0] > start
    assert [e["key"] for e in events] == [*keys, keys[0]]
    assert [e["event"] for e in events] == ["s3:ObjectCreated:Put"] * 5 + [
        "s3:ObjectRemoved:Delete"]
    first = events[0]
    assert set(first) == {"sequence", "event", "bucket", "key", "size", "etag", "version_id",
                          "time", "bot"}
    assert first["bot"] == bot.id and first["bucket"] == bot.bucket and first["size"] == 1
    assert first["etag"] == '"' + hashlib.md5(b"x").hexdigest() + '"'
    assert first["time"].endswith("Z")
    assert events[-1]["size"] is None and events[-1]["etag"] is None

    deliveries = set()
    for r in got:
        h = r.headers
        expected = "sha256=" + hmac.new(bot.secret.encode(), r.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["x-gateway-signature"], expected)
        assert h["content-type"] == "application/json"
        assert h["x-gateway-event"] == r.event["event"]
        assert h["x-gateway-sequence"] == str(r.event["sequence"])
        assert "gateway" in h["user-agent"]
        deliveries.add(h["x-gateway-delivery"])
    assert len(deliveries) == 6

    row = wait_for("delivered_seq", lambda: (r := bot_row(env.data, bot.id)).delivered_seq
                   == seqs[-1] and r)
    assert row.error_count == 0 and row.next_attempt_at is None
    wait_for("the other bot's five", lambda: len(other.receiver.received) >= 5)
    assert {e["bucket"] for e in other.receiver.events()} == {other.bucket}


def test_failing_receiver_backs_off_and_recovers(env: Env) -> None:
    receiver = env.receiver()
    bot = env.bot(receiver)
    healthy = env.bot(env.receiver())
    receiver.mode = "fail"
    keys = [f".gbdrive/attachments/r{i}.bin" for i in range(3)]
    for key in keys:
        put(env, bot.bucket, key)

    row = wait_for("two errors", lambda: (r := bot_row(env.data, bot.id)).error_count >= 2
                   and r)
    assert row.last_error_message.startswith("HTTP 500: boom: the receiver is broken")
    assert len(row.last_error_message) <= len("HTTP 500: ") + 200
    assert bot.secret not in row.last_error_message
    assert row.last_error_date is not None and row.next_attempt_at is not None
    shown = admin_view(env, bot.id)
    assert shown["error_count"] >= 2
    assert shown["last_error_message"].startswith("HTTP 500: boom")
    assert isinstance(shown["last_error_date"], int)
    # Later changes wait behind the failing one: every attempt was the first change.
    assert len(set(sequences(receiver))) == 1
    # Retries back off: 1 s each here (the cap), less 20 % at most.
    times = [r.at for r in receiver.received]
    assert all(b - a >= 0.75 for a, b in itertools.pairwise(times)), times

    # A failing bot blocks no other: the healthy one's change arrives meanwhile.
    put(env, healthy.bucket, ".gbdrive/attachments/h.bin")
    wait_for("the healthy bot's event", lambda: healthy.receiver.received)

    receiver.mode = "redirect"
    row = wait_for("a redirect not followed", lambda: (r := bot_row(env.data, bot.id))
                   .last_error_message.startswith("HTTP 302") and r)
    assert "not followed" in row.last_error_message

    receiver.mode = "slow"
    errors_before = row.error_count
    row = wait_for("a timeout", lambda: (r := bot_row(env.data, bot.id))
                   .last_error_message.startswith("timeout") and r)
    assert row.error_count > errors_before

    receiver.stop()
    errors_before = row.error_count
    row = wait_for("connection refused", lambda: (r := bot_row(env.data, bot.id))
                   .last_error_message == "connection refused" and r)
    assert row.error_count > errors_before
    last_error = row.last_error_message

    receiver.mode = "ok"
    receiver.start()
    wait_for("every change", lambda: {e["key"] for e in receiver.events()} >= set(keys),
             timeout=20)
    row = wait_for("the streak reset", lambda: (r := bot_row(env.data, bot.id))
                   .error_count == 0 and r)
    seqs = sequences(receiver)
    # Nothing lost, in order; repeats only of one sequence at a time (retries).
    distinct = list(dict.fromkeys(seqs))
    assert len(distinct) == 3 and distinct == sorted(distinct)
    assert [e["key"] for e in receiver.events()][-3:] == keys
    assert row.delivered_seq == distinct[-1] and row.next_attempt_at is None
    assert row.last_error_message == last_error, "the last error stays, for history"
    shown = admin_view(env, bot.id)
    assert shown["error_count"] == 0 and shown["last_error_message"] == last_error


def test_restart_resumes_from_delivered_seq(env: Env) -> None:
    receiver = env.receiver()
    bot = env.bot(receiver)
    put(env, bot.bucket, ".gbdrive/attachments/before.bin")
    wait_for("the first event", lambda: receiver.received)
    receiver.mode = "fail"
    put(env, bot.bucket, ".gbdrive/attachments/pending-1.bin")
    put(env, bot.bucket, ".gbdrive/attachments/pending-2.bin")
    wait_for("an error", lambda: bot_row(env.data, bot.id).error_count >= 1)

    env.server.stop()
    delivered = bot_row(env.data, bot.id).delivered_seq
    receiver.mode = "ok"
    receiver.clear()
    env.server.start()

    wait_for("the backlog", lambda: len(receiver.received) >= 2)
    put(env, bot.bucket, ".gbdrive/attachments/after.bin")
    wait_for("the new event", lambda: len(receiver.received) >= 3)
    events = receiver.events()
    assert min(e["sequence"] for e in events) > delivered, "nothing delivered is sent again"
    assert [e["key"].rsplit("/", 1)[1] for e in events] == [
        "pending-1.bin", "pending-2.bin", "after.bin"]
    assert bot_row(env.data, bot.id).error_count == 0


def test_purge_keeps_a_bots_backlog(env: Env) -> None:
    # A bucket no bot watches: its old changes go once the retention has passed.
    env.s3.create_bucket(Bucket="plain-bucket")
    put(env, "plain-bucket", "early")
    early = head_seq(env)

    receiver = env.receiver()
    bot = env.bot(receiver)
    receiver.stop()  # down for longer than the retention
    put(env, bot.bucket, ".gbdrive/attachments/backlog.bin")
    backlog_at = time.monotonic()
    backlog = head_seq(env)
    put(env, "plain-bucket", "late")

    def kept(seq: int) -> bool:
        return bool(in_db(env.data, lambda conn: conn.execute(
            select(changes.c.seq).where(changes.c.seq == seq)).first()))

    wait_for("the early change purged", lambda: not kept(early), timeout=RETENTION_S + 10)
    # Until the backlog is older than the retention, and purges (one a second here) ran.
    time.sleep(max(0.0, backlog_at + RETENTION_S + 2 - time.monotonic()))
    assert kept(backlog), "the bot's undelivered change is kept past the retention"
    assert kept(head_seq(env)), "nor is anything after it purged"

    receiver.start()
    wait_for("the backlog delivered", lambda: receiver.received, timeout=20)
    assert receiver.events()[0]["sequence"] == backlog
    wait_for("the backlog purged once delivered", lambda: not kept(backlog), timeout=20)


def test_one_instance_delivers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two worker processes share the database: only the one holding the lease delivers,
    so every change is POSTed once."""
    server = GatewayProcess(tmp_path_factory.mktemp("webhook-workers") / "data",
                            env_extra={"GATEWAY_WORKERS": "2", **LOOPBACK_ALLOWED}).start()
    receiver = Receiver().start()
    try:
        token = cli_json(server.data_dir, "token", "create", "--user", "admin", "--name", "w",
                         "--permission=bots:write")["token"]
        made = httpx.post(server.url + "/api/v1/bots", timeout=30,
                          json={"name": "workers", "url": receiver.url},
                          headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text
        bucket = made.json()["data"]["bucket"]
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key)
        for i in range(10):
            s3.put_object(Bucket=bucket, Key=f".gbdrive/attachments/{i}.bin", Body=b"x")
        wait_for("ten events", lambda: len(receiver.received) >= 10)
        time.sleep(1.5)
        seqs = sequences(receiver)
        assert len(seqs) == 10 and seqs == sorted(set(seqs)), seqs
    finally:
        server.stop()
        receiver.stop()


# -- where webhooks may connect ---------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.5.5.5", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fd00::1", "private"), ("::ffff:10.0.0.1", "private"),
    ("100.64.0.1", "not public"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "private"),
    ("192.0.2.1", "private"), ("8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_address_policy_refuses_what_is_not_public(address: str, kind: str | None) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) == kind


def test_allowed_networks_open_exactly_what_they_name() -> None:
    policy = AddressPolicy(parse_networks(" 10.0.0.0/8, fd00::/8 ,192.168.1.7"))
    assert policy.refusal(ipaddress.ip_address("10.200.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("fd12::1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:10.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("192.168.1.7")) is None
    assert policy.refusal(ipaddress.ip_address("192.168.1.8")) == "private"
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="not a network: 'intranet'"):
        parse_networks("10.0.0.0/8,intranet")


async def test_the_policed_transport_connects_only_to_allowed_addresses() -> None:
    """Over real sockets: a receiver on loopback is never connected to, whether the URL
    names the address, a name resolving to it, or its IPv4-mapped form; once its network
    is allowed the same request goes through (to the address that was checked)."""
    accepted: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(str(writer.get_extra_info("peername")))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        refusing = httpx.AsyncClient(transport=policed_transport(AddressPolicy()))
        async with refusing:
            for url, message in [
                (f"http://127.0.0.1:{port}/", "address not allowed: 127.0.0.1 (loopback)"),
                (f"http://localhost:{port}/", "address not allowed: localhost resolves to"),
                (f"http://[::ffff:127.0.0.1]:{port}/", "(loopback)"),
                ("http://169.254.169.254/latest/meta-data/",
                 "address not allowed: 169.254.169.254 (link-local)"),
            ]:
                with pytest.raises(httpx.ConnectError) as caught:
                    await refusing.post(url, content=b"{}")
                assert isinstance(caught.value.__cause__, AddressNotAllowed)
                assert message in str(caught.value), (url, str(caught.value))
        assert accepted == []

        allowing = httpx.AsyncClient(
            transport=policed_transport(AddressPolicy(parse_networks("127.0.0.0/8"))))
        async with allowing:
            for host in ("127.0.0.1", "localhost"):
                answered = await allowing.post(f"http://{host}:{port}/", content=b"{}")
                assert answered.status_code == 204
        assert len(accepted) == 2
    finally:
        server.close()
        await server.wait_closed()


def test_webhooks_reach_public_addresses_only(tmp_path: Path) -> None:
    """A gateway with the default policy: bots whose URLs point at loopback (by address,
    by name, IPv4-mapped) or at the cloud metadata address get nothing delivered — the
    receiver sees no request — and each bot's error says why."""
    server = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_WEBHOOK_TIMEOUT": str(TIMEOUT_S),
        "GATEWAY_WEBHOOK_MAX_BACKOFF": str(MAX_BACKOFF_S)}).start()
    receiver = Receiver().start()
    try:
        token = cli_json(server.data_dir, "token", "create", "--user", "admin", "--name", "w",
                         "--permission=bots:write")["token"]
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key)
        expected = {
            f"http://127.0.0.1:{receiver.port}/hook": "address not allowed: 127.0.0.1 "
                                                      "(loopback)",
            f"http://localhost:{receiver.port}/hook": "address not allowed: localhost "
                                                      "resolves to ",
            f"http://[::ffff:127.0.0.1]:{receiver.port}/hook": "(loopback)",
            "http://169.254.169.254/latest/meta-data/": "address not allowed: "
                                                        "169.254.169.254 (link-local)",
        }
        made: dict[str, str] = {}
        for i, url in enumerate(expected):
            answer = httpx.post(server.url + "/api/v1/bots", timeout=30,
                                json={"name": f"inward{i}", "url": url},
                                headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 201, answer.text
            made[url] = answer.json()["data"]["id"]
            s3.put_object(Bucket=answer.json()["data"]["bucket"],
                          Key=".gbdrive/attachments/a.bin", Body=b"x")
        head = int(in_db(server.data_dir, lambda conn: conn.execute(
            select(change_counter.c.value)).scalar_one()))
        for url, bot_id in made.items():
            row = wait_for(f"the refusal of {url}", lambda b=bot_id: (
                r := bot_row(server.data_dir, b)).error_count >= 1 and r)
            assert expected[url] in row.last_error_message, row.last_error_message
            assert row.delivered_seq < head  # its change is still owed
        assert receiver.received == []
    finally:
        server.stop()
        receiver.stop()
