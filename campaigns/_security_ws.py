"""The isolation matrix's WebSocket channel (``/ws``): subscribing to another tenant's
bucket, dead credentials on the upgrade and in the first message, and access lost while
subscribed (a grant revoked, a token revoked, a session ended, a user disabled, the bucket
deleted and made again by another tenant), after which no event may be delivered."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from campaigns._security_world import (
    WS_FORBIDDEN,
    WS_UNAUTHORIZED,
    Matrix,
    Outcome,
    Tenant,
    World,
)

#: How long a socket must stay silent to show that an event did not reach it.
QUIET = 2.0


def _url(world: World) -> str:
    return world.server.url.replace("http://", "ws://", 1) + "/ws"


async def _connect(world: World, headers: dict[str, str] | None = None) -> ClientConnection:
    return await websockets.connect(_url(world), additional_headers=headers or {},
                                    open_timeout=10)


async def _recv(ws: ClientConnection, within: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


async def _authenticate(world: World, *, bearer: str | None = None, api_key: str | None = None,
                        first_message: str | None = None) -> tuple[ClientConnection | None,
                                                                   Outcome]:
    """A socket, and how its authentication went: 200, or the close code."""
    headers = {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if api_key:
        headers["X-Api-Key"] = base64.b64encode(api_key.encode()).decode()
    ws = await _connect(world, headers)
    try:
        if first_message is not None:
            await ws.send(json.dumps({"type": "auth", "token": first_message}))
        answer = await _recv(ws)
    except websockets.ConnectionClosed as closed:
        frame = closed.rcvd
        return None, Outcome(frame.code if frame else -1, "closed",
                             frame.reason if frame else "no close frame")
    if answer.get("type") != "authenticated":
        await ws.close()
        return None, Outcome(-1, "unexpected", str(answer)[:120])
    return ws, Outcome(200)


async def _subscribe(ws: ClientConnection, bucket: str) -> Outcome:
    await ws.send(json.dumps({"type": "subscribe", "bucket": bucket}))
    answer = await _recv(ws)
    if answer.get("type") == "subscribed":
        return Outcome(200)
    return Outcome(403 if answer.get("code") == "FORBIDDEN" else 404
                   if answer.get("code") == "NOT_FOUND" else -1,
                   str(answer.get("code", "")), str(answer)[:120])


async def _events(ws: ClientConnection, seconds: float) -> tuple[list[dict[str, Any]], str]:
    """What arrives within ``seconds``: the events, and how the stream ended ("" when the
    socket stayed open, else an error message's code or the close code)."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await _recv(ws, left)
        except TimeoutError:
            break
        except websockets.ConnectionClosed as closed:
            return events, f"closed {closed.rcvd.code if closed.rcvd else '?'}"
        if message.get("type") == "event":
            events.append(message)
        elif message.get("type") == "error":
            return events, f"error {message.get('code')}"
    return events, ""


async def _wait_for_key(ws: ClientConnection, key: str, within: float = 10) -> bool:
    events, _ = await _events_until(ws, key, within)
    return any(e.get("key") == key for e in events)


async def _events_until(ws: ClientConnection, key: str, within: float
                        ) -> tuple[list[dict[str, Any]], str]:
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (left := deadline - loop.time()) > 0:
        events, ended = await _events(ws, min(left, 0.5))
        seen += events
        if any(e.get("key") == key for e in seen) or ended:
            return seen, ended
    return seen, ""


async def _put(s3: Any, bucket: str, key: str) -> None:
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key, Body=b"event")


def _deny(matrix: Matrix, cell: str, outcome: Outcome, kind: str) -> None:
    matrix.deny("websocket", cell, outcome, kind)


# -- static cells ----------------------------------------------------------------------------


async def other_tenants(world: World, matrix: Matrix) -> None:
    """A's sockets refused B's bucket (and hearing nothing of B's writes), and the other
    way round; each owner's socket hears its own bucket's writes."""
    a, b = world.a, world.b
    opened: list[tuple[ClientConnection, Tenant, Tenant, str]] = []
    try:
        for kind in ("session", "token"):
            for actor, target in ((a, b), (b, a), (a, a), (b, b)):
                credential = actor.session if kind == "session" else actor.token
                ws, auth = await _authenticate(world, bearer=credential)
                if ws is None:
                    matrix.allow("websocket", f"{kind}: authenticate {actor.name}", auth)
                    continue
                subscribed = await _subscribe(ws, target.bucket)
                label = f"{kind}: {actor.name} subscribes to {target.name}'s bucket"
                if actor is target:
                    matrix.allow("websocket", label, subscribed)
                else:
                    _deny(matrix, label, subscribed, WS_FORBIDDEN)
                opened.append((ws, actor, target, kind))
        keys = {t.bucket: world.fresh("ws") for t in (a, b)}
        for t in (a, b):
            await _put(t.s3, t.bucket, keys[t.bucket])
        results = await asyncio.gather(*(_events(ws, QUIET) for ws, *_ in opened))
        for (_, actor, target, kind), (events, _) in zip(opened, results, strict=True):
            got = any(e.get("key") == keys[target.bucket] for e in events)
            label = f"{kind}: {target.name}'s write reaches {actor.name}'s socket"
            if actor is target:
                matrix.allow("websocket", label, Outcome(200 if got else 404))
            else:
                _deny(matrix, label, Outcome(200 if got or events else 403, "FORBIDDEN",
                                             str(events)[:120]), WS_FORBIDDEN)
    finally:
        await asyncio.gather(*(ws.close() for ws, *_ in opened))


async def dead_credentials(world: World, matrix: Matrix) -> None:
    a = world.a
    live, auth = await _authenticate(world, bearer=a.session)
    matrix.allow("websocket", "A's live session on the upgrade", auth)
    if live is not None:
        await live.close()
    live, auth = await _authenticate(world, first_message=a.token)
    matrix.allow("websocket", "A's live token in the first message", auth)
    if live is not None:
        await live.close()
    for label, credential in world.dead_bearers.items():
        ways: dict[str, dict[str, str]] = {"upgrade": {"bearer": credential},
                                           "first message": {"first_message": credential}}
        if "token" in label:
            ways["X-Api-Key"] = {"api_key": credential}
        for how, kwargs in ways.items():
            ws, outcome = await _authenticate(world, **kwargs)
            if ws is not None:
                await ws.close()
            _deny(matrix, f"{label} ({how})", outcome, WS_UNAUTHORIZED)


# -- access lost while subscribed ---------------------------------------------------------------


async def _live_cell(world: World, matrix: Matrix, label: str, *, credential: str,
                     bucket: str, writer: Any, revoke: Callable[[], Awaitable[None]],
                     writer_after: Any = None) -> str:
    """Subscribe with ``credential``; an event must arrive (positive control); ``revoke``;
    then no event may arrive. Returns how the gateway ended the subscription."""
    ws, auth = await _authenticate(world, bearer=credential)
    if ws is None:
        matrix.allow("websocket", f"{label}: authenticate", auth)
        return ""
    try:
        matrix.allow("websocket", f"{label}: subscribe", await _subscribe(ws, bucket))
        before = world.fresh("live")
        await _put(writer, bucket, before)
        got = await _wait_for_key(ws, before)
        matrix.allow("websocket", f"{label}: events flow while allowed",
                     Outcome(200 if got else 404, "" if got else "NO_EVENT"))
        await revoke()
        after = world.fresh("live")
        await _put(writer_after or writer, bucket, after)
        events, ended = await _events(ws, QUIET)
        # Events of what was written before (the owner deleting its object) may come.
        leaked = [e.get("key") for e in events if e.get("key") != before]
        _deny(matrix, f"{label}: events after access was lost", Outcome(
            200 if leaked else 403, "FORBIDDEN", f"delivered {leaked}" if leaked else ended),
            WS_FORBIDDEN)
        return ended
    finally:
        await ws.close()


async def access_lost(world: World, matrix: Matrix) -> dict[str, str]:
    """Each way of losing access, at the same time (each on its own bucket or credential)."""
    a, b, erin = world.a, world.b, world.erin

    def api(method: str, path: str, bearer: str, **kwargs: Any) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            with world.api(bearer=bearer) as c:
                answer = await asyncio.to_thread(c.request, method, path, **kwargs)
            world.report.check(answer.status_code == 200,
                               f"{method} {path}: {answer.status_code} {answer.text[:120]}")
        return call

    grant = {"grantee_type": "user", "grantee": "bob"}
    answer = a.client("session").put(f"/admin/buckets/{a.bucket}/grants",
                                      json={**grant, "permission": "read"})
    world.report.check(answer.status_code == 200, f"granting: {answer.text[:120]}")
    token, token_id = world.new_token(b.session, label="bob ws")
    session = world.session_of("bob", b.password)
    recreated = f"{a.bucket}-r"
    a.s3.create_bucket(Bucket=recreated)
    # Each cell on a bucket of its own: one cell's writes are not another's leaks.
    own = {cell: f"{b.bucket}-{cell}" for cell in ("t", "s")}
    for bucket in own.values():
        b.s3.create_bucket(Bucket=bucket)

    async def move_bucket() -> None:
        """A empties and deletes the bucket; B creates one of the same name."""
        for obj in (await asyncio.to_thread(a.s3.list_objects_v2, Bucket=recreated)).get(
                "Contents", []):
            await asyncio.to_thread(a.s3.delete_object, Bucket=recreated, Key=obj["Key"])
        await asyncio.to_thread(a.s3.delete_bucket, Bucket=recreated)
        await asyncio.to_thread(b.s3.create_bucket, Bucket=recreated)

    cells: dict[str, Awaitable[str]] = {
        "grant revoked": _live_cell(
            world, matrix, "B subscribed to A's bucket by a grant", credential=b.token,
            bucket=a.bucket, writer=a.s3,
            revoke=api("DELETE", f"/admin/buckets/{a.bucket}/grants", a.session,
                       params=grant)),
        "token revoked": _live_cell(
            world, matrix, "B's token, revoked", credential=token, bucket=own["t"],
            writer=b.s3, revoke=api("DELETE", f"/tokens/{token_id}", b.session)),
        "session ended": _live_cell(
            world, matrix, "B's session, logged out", credential=session, bucket=own["s"],
            writer=b.s3, revoke=api("POST", "/auth/logout", session)),
        "user disabled": _live_cell(
            world, matrix, "a user disabled by an admin", credential=erin.token,
            bucket=erin.bucket, writer=world.root_s3,
            revoke=api("PATCH", "/admin/users/erin", world.admin_session,
                       json={"disabled": True})),
        "bucket re-created by another tenant": _live_cell(
            world, matrix, "A's bucket deleted, its name taken by B", credential=a.token,
            bucket=recreated, writer=a.s3, revoke=move_bucket, writer_after=b.s3),
    }
    endings = await asyncio.gather(*cells.values())
    for bucket in (recreated, *own.values()):
        for obj in b.s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            b.s3.delete_object(Bucket=bucket, Key=obj["Key"])
        b.s3.delete_bucket(Bucket=bucket)
    return dict(zip(cells, endings, strict=True))


async def _channel(world: World, matrix: Matrix) -> dict[str, str]:
    await other_tenants(world, matrix)
    await dead_credentials(world, matrix)
    return await access_lost(world, matrix)


def ws_channel(world: World, matrix: Matrix) -> dict[str, str]:
    """The WebSocket cells; how each lost-access subscription was ended."""
    return asyncio.run(_channel(world, matrix))

