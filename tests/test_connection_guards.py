"""Connection guards over raw sockets against a real gateway: slow request heads, oversized
heads, stalled bodies and unread responses are cut off (gateway/server.py), and uploads past
the concurrency limit get SlowDown — while other clients keep being served."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from campaigns._gateway import read_until_closed, s3_client
from tests._server import GatewayProcess

HEAD_TIMEOUT = 2
IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("guards") / "data"
    gw = GatewayProcess(data, env_extra={
        "GATEWAY_REQUEST_HEADER_TIMEOUT": str(HEAD_TIMEOUT),
        "GATEWAY_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        "GATEWAY_MAX_CONCURRENT_UPLOADS": "2"}).start()
    s3_client(gw).create_bucket(Bucket="guards")
    yield gw
    gw.stop()


def connect(server: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_all(sock: socket.socket, limit: float = 10) -> bytes:
    return read_until_closed(sock, limit)


def closed_within(sock: socket.socket, seconds: float) -> float:
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def signed_put_url(server: GatewayProcess, key: str) -> str:
    url: str = s3_client(server).generate_presigned_url(
        "put_object", Params={"Bucket": "guards", "Key": key}, ExpiresIn=600)
    return url


def request_line(url: str, method: str) -> bytes:
    path = url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    return f"{method} /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()


def test_a_silent_connection_is_closed_after_the_head_timeout(server: GatewayProcess) -> None:
    sock = connect(server)
    assert closed_within(sock, 10) < HEAD_TIMEOUT + 2


def test_a_trickled_head_is_cut_and_others_are_served(server: GatewayProcess) -> None:
    s3 = s3_client(server)
    slow = [connect(server) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /guards HTTP/1.1\r\n")
    started = time.monotonic()
    served = 0
    while time.monotonic() - started < HEAD_TIMEOUT + 0.5:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-A: b\r\n")
        s3.list_objects_v2(Bucket="guards")
        served += 1
        time.sleep(0.2)
    assert served >= 5
    for sock in slow:
        assert closed_within(sock, 5) < 5
        sock.close()


def test_an_oversized_head_gets_the_s3_error(server: GatewayProcess) -> None:
    sock = connect(server)
    sock.sendall(b"GET /guards/k HTTP/1.1\r\nHost: x\r\n")
    for i in range(40):
        sock.sendall(f"X-Pad-{i}: {'a' * 500}\r\n".encode())
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answer
    assert b"connection: close" in answer.lower()

    sock = connect(server)
    sock.sendall(b"GET /api/v1/storage/buckets HTTP/1.1\r\nHost: x\r\nX-Pad: "
                 + b"a" * 20_000 + b"\r\n\r\n")
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"RequestHeaderSectionTooLarge"' in answer.replace(b" ", b"")


def test_an_oversized_request_line_on_the_api_gets_a_json_error(server: GatewayProcess) -> None:
    """The path of a request line that alone passes the cap still picks the error's shape."""
    sock = connect(server)
    sock.sendall(b"GET /api/v1/storage/buckets?where=" + b"a" * 20_000
                 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"RequestHeaderSectionTooLarge"' in answer.replace(b" ", b"")
    assert b"<Error>" not in answer


def test_garbage_after_an_oversized_head_changes_nothing(server: GatewayProcess) -> None:
    """The parser fails on what follows the refused head, in the same read: the refusal
    stays the answer and nothing is logged as an error."""
    sock = connect(server)
    sock.sendall(b"GET /guards/k HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000
                 + b"\r\nBad\x01Header: x\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    sock = connect(server)
    sock.sendall(b"GET /guards/k HTTP/1.1\r\nHost: x\r\n"
                 + b"".join(f"X-Pad-{i}: {'a' * 500}\r\n".encode() for i in range(40))
                 + b"Bad\x01Header: x\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    assert "Traceback" not in server.log()


def test_a_head_just_under_the_cap_is_served(server: GatewayProcess) -> None:
    s3 = s3_client(server)
    s3.put_object(Bucket="guards", Key="under", Body=b"x",
                  Metadata={"pad": "a" * 1500})
    assert s3.head_object(Bucket="guards", Key="under")["Metadata"]["pad"] == "a" * 1500


def test_a_stalled_body_gets_request_timeout_and_leaves_nothing(
        server: GatewayProcess) -> None:
    url = signed_put_url(server, "stalled")
    sock = connect(server)
    sock.sendall(request_line(url, "PUT") + b"Content-Length: 10485760\r\n\r\n")
    sock.sendall(b"x" * 1024 * 1024)
    started = time.monotonic()
    answer = read_all(sock, limit=IDLE_TIMEOUT + 8)
    assert time.monotonic() - started < IDLE_TIMEOUT + 4
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"<Code>RequestTimeout</Code>" in answer
    with pytest.raises(ClientError) as info:
        s3_client(server).head_object(Bucket="guards", Key="stalled")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    staging = Path(server.data_dir) / "objects" / "tmp"
    deadline = time.monotonic() + 5
    while staging.exists() and any(p.is_file() and not p.name.endswith(".lock")
                                   for p in staging.rglob("*")):
        assert time.monotonic() < deadline, list(staging.rglob("*"))
        time.sleep(0.1)


def test_a_slow_but_steady_body_is_not_cut(server: GatewayProcess) -> None:
    url = signed_put_url(server, "steady")
    chunk = b"y" * 1000
    sock = connect(server)
    sock.sendall(request_line(url, "PUT") + f"Content-Length: {len(chunk) * 8}\r\n\r\n".encode())
    for _ in range(8):  # 8 chunks over ~4 s: longer than the idle timeout in total
        sock.sendall(chunk)
        time.sleep(IDLE_TIMEOUT / 4)
    answer = read_all(sock, limit=5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    head = s3_client(server).head_object(Bucket="guards", Key="steady")
    assert head["ETag"] == f'"{hashlib.md5(chunk * 8).hexdigest()}"'


def test_an_unread_response_is_aborted(server: GatewayProcess) -> None:
    s3 = s3_client(server)
    s3.put_object(Bucket="guards", Key="big", Body=b"z" * (32 * 1024 * 1024))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "guards", "Key": "big"})
    sock = connect(server)
    sock.sendall(request_line(url, "GET") + b"\r\n")
    time.sleep(IDLE_TIMEOUT + 3)  # never reads: the server's buffers fill, then it gives up
    received = len(read_all(sock, limit=5))
    assert received < 32 * 1024 * 1024
    s3.head_object(Bucket="guards", Key="big")  # and everyone else is still served


def test_uploads_past_the_limit_get_slowdown(server: GatewayProcess) -> None:
    holders = []
    for n in range(2):  # two uploads in flight, each holding its slot while it trickles
        sock = connect(server)
        sock.sendall(request_line(signed_put_url(server, f"hold{n}"), "PUT")
                     + b"Content-Length: 100\r\n\r\n" + b"h" * 10)
        holders.append(sock)
    time.sleep(0.5)
    s3 = s3_client(server)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="guards", Key="third", Body=b"t" * 10)
    error: Any = info.value.response
    assert error["Error"]["Code"] == "SlowDown"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["ResponseMetadata"]["HTTPHeaders"].get("retry-after") == "1"
    for sock in holders:
        sock.sendall(b"h" * 90)
        assert read_all(sock, limit=5).startswith(b"HTTP/1.1 200 ")
    s3.put_object(Bucket="guards", Key="third", Body=b"t" * 10)
