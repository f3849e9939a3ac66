"""What ``gateway serve`` sets up for its process, seen from outside a real one: idle
keep-alive connections outlive the pools of common clients, and the process keeps few
malloc arenas however many threads move bodies."""

from __future__ import annotations

import platform
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaigns._gateway import s3_client
from gateway.cli import MALLOC_ARENAS
from tests._server import GatewayProcess

# glibc's arenas other than the main one are 64 MiB heaps (HEAP_MAX_SIZE on 64-bit).
ARENA_HEAP = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("serve") / "data").start()
    yield gw
    gw.stop()


def get(sock: socket.socket) -> bytes:
    """``GET /healthz`` on a kept-alive connection: the whole answer ("" if closed)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_outlives_the_pools_of_clients(server: GatewayProcess) -> None:
    """httpx drops pooled connections idle for 5 s; a server closing them at the same age
    races the next request on them (reset, or closed without an answer) under load."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert get(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        assert get(sock).startswith(b"HTTP/1.1 200")


def test_the_keep_alive_timeout_is_a_setting(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_KEEP_ALIVE_TIMEOUT": "1"})
    gw.start()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            assert get(sock).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed by the gateway
            assert time.monotonic() - started < 5
    finally:
        gw.stop()


def arenas(pid: int) -> int:
    """Malloc arenas besides the main one: 64 MiB-aligned anonymous heaps of 64 MiB
    (the part in use read-write, the rest reserved)."""
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        low, high = (int(x, 16) for x in parts[0].split("-"))
        regions.append((low, high, parts[1], len(parts) > 5))
    found = 0
    for i, (low, high, perms, named) in enumerate(regions):
        if named or perms != "rw-p" or low % ARENA_HEAP:
            continue
        end = high
        if i + 1 < len(regions) and regions[i + 1][0] == high \
                and regions[i + 1][2] == "---p" and not regions[i + 1][3]:
            end = regions[i + 1][1]
        found += end - low == ARENA_HEAP
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="malloc arenas are glibc's")
def test_threads_moving_bodies_share_few_malloc_arenas(server: GatewayProcess) -> None:
    """Without a limit, glibc gives each of the threads writing and reading blobs an arena
    of its own (up to eight per core) and keeps what they free: RSS grows under sustained
    load with nothing in it."""
    assert server.proc is not None
    s3 = s3_client(server)
    s3.create_bucket(Bucket="arenas")
    body = b"a" * (1024 * 1024)

    def work(i: int) -> None:
        for _ in range(4):
            s3.put_object(Bucket="arenas", Key=f"k{i}", Body=body)
            assert s3.get_object(Bucket="arenas", Key=f"k{i}")["Body"].read() == body

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert arenas(server.proc.pid) <= MALLOC_ARENAS - 1
