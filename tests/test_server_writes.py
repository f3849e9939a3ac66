"""A response's head leaves in the same write as its first body bytes (gateway/server.py),
so a process killed between an answer's head and its body — which botocore would take for
an empty success (tests/test_campaign_crash.py) — cannot happen for a small answer.

The protocol runs in a real uvicorn server on a real socket (asyncio's own loop, whose
transports let the test see what is handed to the kernel: a wrapped ``transport.write``
counts the send calls an answer took, the one thing a client cannot see). The app pauses
between head and body, as the gateway may (a backend read): the moment a kill would fall
between two writes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.server import GuardedHttpProtocol
from tests._server import free_port

BODY = b"<CopyObjectResult><ETag>&quot;abc&quot;</ETag></CopyObjectResult>"
CHUNKS = [b"first chunk;", b"second chunk;", b"last chunk"]


class RecordingProtocol(GuardedHttpProtocol):
    writes: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real_write = transport.write

        def write(data: Any) -> None:
            RecordingProtocol.writes.append(bytes(data))
            real_write(data)

        transport.write = write  # type: ignore[method-assign]
        super().connection_made(transport)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/upload":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for number, chunk in enumerate(CHUNKS):
            await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": number < len(CHUNKS) - 1})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/xml"),
                            (b"content-length", str(len(BODY)).encode())]})
    await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": BODY})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           http=RecordingProtocol, lifespan="off", loop="asyncio",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(autouse=True)
def fresh() -> None:
    RecordingProtocol.writes.clear()


def answers() -> list[bytes]:
    """The writes that start an answer (other than 100 Continue)."""
    return [w for w in RecordingProtocol.writes
            if w.startswith(b"HTTP/1.1 ") and not w.startswith(b"HTTP/1.1 100")]


def test_head_and_small_body_leave_in_one_write(url: str) -> None:
    with httpx.Client() as client:
        for _ in range(3):  # on one kept-alive connection too
            got = client.get(url + "/copy")
            assert got.status_code == 200 and got.content == BODY
    assert len(answers()) == 3
    assert all(w.endswith(b"\r\n\r\n" + BODY) for w in answers()), RecordingProtocol.writes
    assert len(RecordingProtocol.writes) == 3


def test_a_head_answer_is_one_write(url: str) -> None:
    got = httpx.head(url + "/copy")
    assert got.status_code == 200 and got.headers["content-length"] == str(len(BODY))
    assert len(RecordingProtocol.writes) == 1 and RecordingProtocol.writes[0].endswith(
        b"\r\n\r\n")


def test_a_streamed_answer_carries_its_head_with_the_first_chunk(url: str) -> None:
    got = httpx.get(url + "/stream")
    assert got.content == b"".join(CHUNKS)
    first = answers()[0]
    assert b"transfer-encoding: chunked" in first and first.endswith(b"first chunk;\r\n")
    assert len(RecordingProtocol.writes) == len(CHUNKS)


def test_100_continue_then_the_answer_whole(url: str) -> None:
    body = b"x" * 1000
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while not answer.endswith(BODY):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert RecordingProtocol.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(answers()) == 1 and answers()[0].endswith(b"\r\n\r\n" + BODY)
