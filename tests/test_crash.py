"""kill -9 the gateway while 20 clients overwrite the same keys; after a restart every key
reads back one complete version whose ETag matches its bytes, no acknowledged write is
lost, and no staging files remain."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests._server import GatewayProcess

WRITERS = 20
SHARED_KEYS = [f"shared/{i}" for i in range(4)]
CYCLES = 3


def body_for(writer: int, seq: int) -> bytes:
    """Self-describing bodies: a header naming the write, then bytes derived from it, so a
    torn or mixed body can be told from a whole one."""
    rng = random.Random(writer * 1_000_003 + seq)
    size = rng.choice([0, 17, 4096, 100_000, 1_500_000, 3_000_000])
    header = f"{writer:04d}:{seq:08d}:{size:010d}\n".encode()
    pattern = hashlib.sha256(header).digest()
    return header + (pattern * (size // len(pattern) + 1))[:size]


def check_whole(data: bytes) -> tuple[int, int]:
    header, _, _rest = data.partition(b"\n")
    writer_s, seq_s, _size_s = header.decode().split(":")
    writer, seq = int(writer_s), int(seq_s)
    assert data == body_for(writer, seq), "body is not one whole version"
    return writer, seq


def client(server: GatewayProcess) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10))


def staging_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "objects" / "tmp"
    if not tmp.exists():
        return []
    return [p for p in tmp.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


@pytest.mark.slow
def test_kill_9_under_concurrent_overwrites(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data").start()
    try:
        c = client(server)
        c.create_bucket(Bucket="crash")
        acked: dict[int, int] = {}  # writer -> highest acknowledged seq of its own key
        seq_counter = [0]
        lock = threading.Lock()
        rng = random.Random(7)
        for cycle in range(CYCLES):
            stop = threading.Event()
            errors_seen: list[BaseException] = []

            def writer(n: int, server: GatewayProcess = server,
                       stop: threading.Event = stop, errors_seen: list[BaseException] =
                       errors_seen) -> None:
                cl = client(server)
                while not stop.is_set():
                    with lock:
                        seq_counter[0] += 1
                        seq = seq_counter[0]
                    own = n % 2 == 0
                    key = f"own/{n}" if own else SHARED_KEYS[seq % len(SHARED_KEYS)]
                    try:
                        cl.put_object(Bucket="crash", Key=key, Body=body_for(n, seq))
                    except Exception as exc:  # the server is being killed: expected
                        errors_seen.append(exc)
                        return
                    if own:
                        with lock:
                            acked[n] = max(acked.get(n, 0), seq)

            threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.8, 2.0))
            server.kill()
            stop.set()
            for t in threads:
                t.join(30)
            assert errors_seen, f"cycle {cycle}: the kill interrupted nothing"

            server.start()
            c = client(server)
            listed = {o["Key"]: o for o in c.list_objects_v2(Bucket="crash").get("Contents", [])}
            for key, entry in listed.items():
                got = c.get_object(Bucket="crash", Key=key)
                data = got["Body"].read()
                assert got["ETag"] == entry["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
                assert len(data) == entry["Size"]
                writer_n, seq = check_whole(data)
                if key.startswith("own/"):
                    assert writer_n == int(key.split("/")[1])
            for writer_n, seq in acked.items():
                data = c.get_object(Bucket="crash", Key=f"own/{writer_n}")["Body"].read()
                _, got_seq = check_whole(data)
                assert got_seq >= seq, f"acknowledged write {seq} of writer {writer_n} lost"
            leftovers = staging_files(server.data_dir)
            assert leftovers == [], f"staging files left after restart: {leftovers}"
        assert acked, "no write was ever acknowledged"
    finally:
        server.stop()
