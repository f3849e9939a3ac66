"""``/ws`` against a real gateway process with the ``websockets`` client: authentication by
header and by first message, live events filtered by bucket and prefix, tenancy, replay
with ``since``, unsubscribing, many sockets at once; and, in process, what keeps a slow
reader from growing the server's memory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from gateway.api.ws import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    ChangeFanout,
    Outbox,
    Subscription,
)
from gateway.checksums import DigestingStream
from gateway.core import Gateway
from gateway.service import changes
from gateway.service.changes import encode_cursor
from gateway.types import ObjectAttributes
from tests._inprocess import in_process_gateway
from tests._server import GatewayProcess, cli_json


@dataclass
class Env:
    server: GatewayProcess
    token: str  # alice: storage:read + storage:write
    bots_only: str  # alice: bots:read only
    alice_keys: tuple[str, str]
    bob_s3: Any

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://") + "/ws"

    def s3(self, keys: tuple[str, str] | None = None) -> Any:
        access, secret = keys or self.alice_keys
        return boto3.client("s3", endpoint_url=self.server.url, region_name="us-east-1",
                            aws_access_key_id=access, aws_secret_access_key=secret)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = GatewayProcess(tmp_path_factory.mktemp("ws") / "data").start()
    try:
        data = server.data_dir
        for user in ("alice", "bob"):
            cli_json(data, "user", "add", user)
        alice = cli_json(data, "key", "create", "--user", "alice")
        bob = cli_json(data, "key", "create", "--user", "bob")
        token = cli_json(data, "token", "create", "--user", "alice", "--name", "rw",
                         "--permission=storage:read", "--permission=storage:write")["token"]
        bots_only = cli_json(data, "token", "create", "--user", "alice", "--name", "b",
                             "--permission=bots:read")["token"]
        made = Env(server, token, bots_only, (alice["access_key"], alice["secret_key"]),
                   None)
        made.bob_s3 = made.s3((bob["access_key"], bob["secret_key"]))
        s3 = made.s3()
        for bucket in ("ws-live", "ws-replay", "ws-many", "ws-unsub"):
            s3.create_bucket(Bucket=bucket)
        made.bob_s3.create_bucket(Bucket="ws-bobs")
        yield made
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def socket(env: Env, headers: dict[str, str] | None = None
                 ) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(env.ws_url, additional_headers=headers or {},
                                  open_timeout=10) as ws:
        yield ws


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def recv(ws: ClientConnection, within: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def subscribe(ws: ClientConnection, bucket: str, **options: Any) -> dict[str, Any]:
    await send(ws, type="subscribe", bucket=bucket, **options)
    answer = await recv(ws)
    assert answer["type"] == "subscribed", answer
    return answer


async def closed(ws: ClientConnection, within: float = 15) -> tuple[int, str]:
    """The close code and reason the server sent."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), within)
    frame = info.value.rcvd
    assert frame is not None, "closed without a close frame"
    return frame.code, frame.reason


async def quiet(ws: ClientConnection, seconds: float = 1.5) -> None:
    """Nothing more arrives for a while."""
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected message {extra!r}")


async def put(env: Env, bucket: str, key: str, body: bytes = b"data") -> None:
    await asyncio.to_thread(env.s3().put_object, Bucket=bucket, Key=key, Body=body)


async def delete(env: Env, bucket: str, key: str) -> None:
    await asyncio.to_thread(env.s3().delete_object, Bucket=bucket, Key=key)


# -- over the wire ---------------------------------------------------------------------------


async def test_header_auth_and_live_events_by_prefix(env: Env) -> None:
    async with socket(env, bearer(env.token)) as ws:
        assert await recv(ws) == {"type": "authenticated", "user": "alice"}
        sub = await subscribe(ws, "ws-live", prefix="in/")
        assert sub["bucket"] == "ws-live" and sub["prefix"] == "in/" and sub["cursor"]
        await put(env, "ws-live", "in/a", b"hello")
        await put(env, "ws-live", "out/b")
        await put(env, "ws-live", "in/c")
        await delete(env, "ws-live", "in/a")
        events = [await recv(ws) for _ in range(3)]
        assert [(e["key"], e["event"]) for e in events] == [
            ("in/a", "s3:ObjectCreated:Put"), ("in/c", "s3:ObjectCreated:Put"),
            ("in/a", "s3:ObjectRemoved:Delete")]
        first = events[0]
        assert first["type"] == "event" and first["subscription"] == sub["id"]
        assert first["bucket"] == "ws-live" and first["size"] == 5
        assert first["etag"] == '"5d41402abc4b2a76b9719d911017c592"'
        assert first["cursor"] == encode_cursor(first["sequence"])
        assert {"sequence", "time", "version_id"} <= set(first)
        seqs = [e["sequence"] for e in events]
        assert seqs == sorted(seqs)
        await quiet(ws)


async def test_api_key_header_and_first_message_auth(env: Env) -> None:
    api_key = base64.b64encode(env.token.encode()).decode()
    async with socket(env, {"X-Api-Key": api_key}) as ws:
        assert (await recv(ws))["type"] == "authenticated"
        await subscribe(ws, "ws-live")

    async with socket(env) as ws:  # a browser: no headers, no Origin needed
        await send(ws, type="auth", token=env.token)
        assert await recv(ws) == {"type": "authenticated", "user": "alice"}
        await subscribe(ws, "ws-live", prefix="browser/")
        await put(env, "ws-live", "browser/x")
        assert (await recv(ws))["key"] == "browser/x"

    async with httpx.AsyncClient() as client:
        login = await client.post(env.server.url + "/api/v1/auth/login", json={
            "access_key": env.alice_keys[0], "secret_key": env.alice_keys[1]})
    session = login.json()["data"]["token"]
    async with socket(env) as ws:
        await send(ws, type="auth", token=session)
        assert (await recv(ws))["type"] == "authenticated"
        await send(ws, type="ping")
        assert await recv(ws) == {"type": "pong"}


async def test_unauthenticated_sockets_are_closed(env: Env) -> None:
    async def no_credentials_then_subscribe() -> tuple[int, str]:
        async with socket(env) as ws:
            await send(ws, type="subscribe", bucket="ws-live")
            return await closed(ws)

    async def bad_bearer() -> tuple[int, str]:
        async with socket(env, bearer("gwt_not-a-real-token")) as ws:
            return await closed(ws)

    async def bad_first_message_token() -> tuple[int, str]:
        async with socket(env) as ws:
            await send(ws, type="auth", token="gws_nope")
            return await closed(ws)

    async def silent() -> tuple[int, str]:
        async with socket(env) as ws:
            return await closed(ws, within=20)

    async def lacking_storage_read() -> tuple[int, str]:
        async with socket(env, bearer(env.bots_only)) as ws:
            return await closed(ws)

    results = await asyncio.gather(no_credentials_then_subscribe(), bad_bearer(),
                                   bad_first_message_token(), silent(), lacking_storage_read())
    *unauthorized, forbidden = results
    for code, reason in unauthorized:
        assert code == CLOSE_UNAUTHORIZED and reason
    assert forbidden[0] == CLOSE_FORBIDDEN and "storage:read" in forbidden[1]


async def test_other_tenants_buckets_are_refused(env: Env) -> None:
    async with socket(env, bearer(env.token)) as ws:
        await recv(ws)
        await send(ws, type="subscribe", bucket="ws-bobs")
        refused = await recv(ws)
        assert refused["type"] == "error" and refused["code"] == "FORBIDDEN"
        assert refused["bucket"] == "ws-bobs" and refused["request"] == "subscribe"
        await send(ws, type="subscribe", bucket="ws-no-such-bucket")
        assert (await recv(ws))["code"] == "NOT_FOUND"
        await send(ws, type="subscribe", bucket="ws-live", since="not-a-cursor")
        assert (await recv(ws))["code"] == "VALIDATION_ERROR"
        await send(ws, type="dance")
        assert (await recv(ws))["code"] == "VALIDATION_ERROR"
        await ws.send("{not json")
        assert (await recv(ws))["code"] == "VALIDATION_ERROR"
        # Bob's writes reach nobody else; the socket still works after refusals.
        await asyncio.to_thread(env.bob_s3.put_object, Bucket="ws-bobs", Key="secret",
                                Body=b"x")
        await send(ws, type="ping")
        assert await recv(ws) == {"type": "pong"}


async def test_since_replays_what_was_missed(env: Env) -> None:
    async with socket(env, bearer(env.token)) as ws:
        await recv(ws)
        cursor = (await subscribe(ws, "ws-replay"))["cursor"]
    for i in range(3):
        await put(env, "ws-replay", f"k{i}")
    await put(env, "ws-live", "elsewhere")

    async with socket(env, bearer(env.token)) as ws:
        await recv(ws)
        await subscribe(ws, "ws-replay", since=cursor)
        replayed = [await recv(ws) for _ in range(3)]
        assert [e["key"] for e in replayed] == ["k0", "k1", "k2"]
        await put(env, "ws-replay", "k3")  # then live, after the replay
        assert (await recv(ws))["key"] == "k3"
        await quiet(ws, 1)

    async with socket(env, bearer(env.token)) as ws:  # from a middle event's cursor
        await recv(ws)
        await subscribe(ws, "ws-replay", since=replayed[1]["cursor"], prefix="k")
        assert [(await recv(ws))["key"] for _ in range(2)] == ["k2", "k3"]
        await quiet(ws, 1)


async def test_unsubscribe(env: Env) -> None:
    async with socket(env, bearer(env.token)) as ws:
        await recv(ws)
        a = await subscribe(ws, "ws-unsub", prefix="a/")
        b = await subscribe(ws, "ws-unsub", prefix="b/")
        assert a["id"] != b["id"]
        await send(ws, type="unsubscribe", id=a["id"])
        assert await recv(ws) == {"type": "unsubscribed", "id": a["id"]}
        await put(env, "ws-unsub", "a/1")
        await put(env, "ws-unsub", "b/1")
        event = await recv(ws)
        assert event["key"] == "b/1" and event["subscription"] == b["id"]
        await send(ws, type="unsubscribe", id=a["id"])
        assert (await recv(ws))["code"] == "NOT_FOUND"


async def test_many_sockets_each_get_every_event(env: Env) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(socket(env, bearer(env.token)))
                   for _ in range(20)]
        for ws in sockets:
            await recv(ws)
            await subscribe(ws, "ws-many")
        await put(env, "ws-many", "one")
        await put(env, "ws-many", "two")
        for ws in sockets:
            assert [(await recv(ws))["key"] for _ in range(2)] == ["one", "two"]


async def until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int]:
    """The messages received until the server closed the socket, and its close code."""
    received: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            received.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    frame = info.value.rcvd
    assert frame is not None, "closed without a close frame"
    return received, frame.code


async def test_access_lost_while_subscribed_stops_delivery(env: Env) -> None:
    """Access is checked again before events are sent: the socket of a revoked token is
    closed, a subscription to a bucket the caller may no longer read (a grant revoked; the
    bucket deleted and its name taken by another tenant) ends, and nothing that happens
    afterwards reaches either."""
    data, s3 = env.server.data_dir, env.s3()
    doomed = await asyncio.to_thread(cli_json, data, "token", "create", "--user", "alice",
                                     "--name", "doomed", "--permission=storage:read")
    guest = await asyncio.to_thread(cli_json, data, "token", "create", "--user", "bob",
                                    "--name", "guest", "--permission=storage:read")
    for bucket in ("ws-revoked", "ws-shared", "ws-moved"):
        await asyncio.to_thread(s3.create_bucket, Bucket=bucket)
    await asyncio.to_thread(cli_json, data, "grant", "set", "ws-shared", "--user", "bob",
                            "--permission", "read")
    async with socket(env, bearer(doomed["token"])) as revoked, \
            socket(env, bearer(guest["token"])) as granted, \
            socket(env, bearer(env.token)) as mover:
        subs = {}
        for ws, bucket in ((revoked, "ws-revoked"), (granted, "ws-shared"),
                           (mover, "ws-moved")):
            await recv(ws)
            subs[bucket] = (await subscribe(ws, bucket))["id"]
            await put(env, bucket, "before")
            assert (await recv(ws))["key"] == "before"

        await asyncio.to_thread(cli_json, data, "token", "revoke", doomed["id"])
        await put(env, "ws-revoked", "after")
        received, code = await until_closed(revoked)
        assert code == CLOSE_UNAUTHORIZED
        assert not [m for m in received if m["type"] == "event"], received

        await asyncio.to_thread(cli_json, data, "grant", "revoke", "ws-shared", "--user", "bob")
        await put(env, "ws-shared", "after")
        assert await recv(granted) == {
            "type": "error", "code": "FORBIDDEN", "reason": "access_lost",
            "id": subs["ws-shared"], "bucket": "ws-shared",
            "message": "Access to the bucket was lost; the subscription has ended"}
        await put(env, "ws-shared", "later")
        await quiet(granted)

        await asyncio.to_thread(s3.delete_object, Bucket="ws-moved", Key="before")
        await asyncio.to_thread(s3.delete_bucket, Bucket="ws-moved")
        await asyncio.to_thread(env.bob_s3.create_bucket, Bucket="ws-moved")
        await asyncio.to_thread(env.bob_s3.put_object, Bucket="ws-moved", Key="bobs",
                                Body=b"not alice's")
        ended = await recv(mover)
        while ended["type"] == "event" and ended["key"] == "before":  # her own delete
            ended = await recv(mover)
        assert ended["type"] == "error" and ended["reason"] == "access_lost", ended
        assert ended["id"] == subs["ws-moved"]
        await quiet(mover)
        await send(mover, type="ping")  # the socket itself goes on
        assert await recv(mover) == {"type": "pong"}


# -- in process: the shared reader and slow readers ------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with in_process_gateway(tmp_path) as gw:
        yield gw


async def _write(gw: Gateway, bucket: str, key: str) -> None:
    principal, _ = await gw.accounts.lookup("AK")
    assert principal is not None

    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    await gw.objects.put(principal, bucket, key, DigestingStream(body()), ObjectAttributes(),
                         size_hint=1)


@contextlib.asynccontextmanager
async def running(fanout: ChangeFanout) -> AsyncIterator[None]:
    task = asyncio.create_task(fanout.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_reader_that_falls_behind_overflows_without_growing(gateway: Gateway
                                                                    ) -> None:
    principal, _ = await gateway.accounts.lookup("AK")
    assert principal is not None
    await gateway.buckets.create(principal, "slow")
    fanout = ChangeFanout(gateway.ctx)
    outbox = Outbox(limit=5)
    head = await gateway.ctx.db.read(changes.head)
    sub = Subscription(1, "slow", "", head, outbox)
    async with running(fanout):
        fanout.add(sub)
        await fanout.catch_up(sub)
        assert sub.live
        for i in range(12):  # nobody takes from the outbox
            await _write(gateway, "slow", f"k{i}")
        await asyncio.wait_for(outbox.overflowed.wait(), 5)
    assert len(outbox) == 5, "an outbox never holds more than its limit"
    assert await outbox.take() is None, "an overflowed outbox sends nothing more"


async def test_a_replay_goes_at_the_readers_pace(gateway: Gateway) -> None:
    principal, _ = await gateway.accounts.lookup("AK")
    assert principal is not None
    await gateway.buckets.create(principal, "replay")
    for i in range(30):
        await _write(gateway, "replay", f"k{i:02}")
    fanout = ChangeFanout(gateway.ctx)
    outbox = Outbox(limit=8)
    sub = Subscription(1, "replay", "", 0, outbox)
    async with running(fanout):
        fanout.add(sub)
        catching_up = asyncio.create_task(fanout.catch_up(sub))
        keys: list[str] = []
        while len(keys) < 31:
            message = await asyncio.wait_for(outbox.take(), 5)
            assert message is not None
            keys.append(message["key"])
            assert len(outbox) <= 8
            if len(keys) == 30:
                await catching_up
                await _write(gateway, "replay", "live")
        assert keys == [f"k{i:02}" for i in range(30)] + ["live"]
        assert not outbox.overflowed.is_set()
