"""ListObjectsV2 pages of 1,000 keys from buckets of 100,000 and 1,000,000 keys.

Filling a bucket through the S3 API at a few thousand PUTs a second would take minutes per
million, so the bucket is seeded in the database: one object is PUT through S3, the gateway
is stopped, and its metadata row is copied under n distinct keys by one INSERT … SELECT
(every copy shares the one blob, which a listing never reads). The gateway then starts on
that data directory and wrk reads pages starting after keys spread over the whole bucket,
presigned beforehand. Pages/s should not depend on the bucket's size.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._harness import client, cpu_seconds
from benchmarks._load import run_wrk
from tests._server import GatewayProcess

PAGE = 1000


def seed(data_dir: Path, keys: int) -> None:
    """A gateway data directory whose bucket ``bench`` holds ``keys`` objects ``k/0000000``…"""
    server = GatewayProcess(data_dir).start()
    try:
        s3: Any = client(server)
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="template", Body=b"x" * 4096)
    finally:
        server.stop()
    db = sqlite3.connect(data_dir / "gateway.db")
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(objects)")
                   if row[1] not in ("id", "key")]
        listed = ", ".join(columns)
        with db:
            db.execute(
                f"""WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq
                                              WHERE n < ?)
                    INSERT INTO objects (key, {listed})
                    SELECT printf('k/%07d', n), {listed} FROM seq, objects
                    WHERE objects.key = 'template'""", (keys - 1,))
            db.execute("DELETE FROM objects WHERE key = 'template'")
            db.execute("UPDATE buckets SET used_objects = ?, used_bytes = ? * 4096 "
                       "WHERE name = 'bench'", (keys, keys))
        db.execute("ANALYZE")
    finally:
        db.close()


def pages(keys: int, concurrency: int, seconds: float,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gw-bench-list-") as tmp:
        data = Path(tmp) / "data"
        seed(data, keys)
        server = GatewayProcess(data).start()
        try:
            s3: Any = client(server)
            rng = random.Random(keys)
            starts = [f"k/{rng.randrange(keys - PAGE):07d}" for _ in range(500)]
            first = s3.list_objects_v2(Bucket="bench", MaxKeys=PAGE, StartAfter=starts[0])
            assert first["KeyCount"] == PAGE, first["KeyCount"]
            urls = [s3.generate_presigned_url(
                "list_objects_v2", Params={"Bucket": "bench", "MaxKeys": PAGE,
                                           "StartAfter": start}, ExpiresIn=7200)
                for start in starts]
            assert server.proc is not None
            result = {}
            for c in (1, concurrency):
                before = cpu_seconds(server.proc.pid)
                load = run_wrk(urls, "GET", c, seconds)
                load.cpu_us = (cpu_seconds(server.proc.pid) - before) / max(1, load.requests) * 1e6
                result[f"c{c}"] = load.as_dict()
                log(f"  ListObjectsV2 {PAGE} of {keys:,} keys, c{c}: {load.rps:,.1f} pages/s")
            return result
        finally:
            server.stop()


def run(seconds: float, sizes: tuple[int, ...] = (100_000, 1_000_000), concurrency: int = 4,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    return {str(n): pages(n, concurrency, seconds, log) for n in sizes}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--keys", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    return run(args.seconds, tuple(args.keys))


if __name__ == "__main__":
    main()
