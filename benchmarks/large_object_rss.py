"""Peak server RSS while a 2 GiB object is PUT and then GET, both streamed.

The client streams a generated body through a presigned PUT (UNSIGNED-PAYLOAD), so the
client never holds the object either; the server must stay flat (goal: < 150 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Iterator

import httpx

from benchmarks._harness import PeakRSS, client, running_gateway

MiB = 1024 * 1024


def generate(size: int, chunk: int = 4 * MiB) -> Iterator[bytes]:
    block = hashlib.sha256(b"seed").digest() * (chunk // 32)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield block[:n]
        sent += n


def run(size: int) -> dict[str, float]:
    with running_gateway() as server:
        s3 = client(server)
        s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
        put_url = s3.generate_presigned_url(  # type: ignore[attr-defined]
            "put_object", Params={"Bucket": "bench", "Key": "big"}, ExpiresIn=3600)
        get_url = s3.generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": "bench", "Key": "big"}, ExpiresIn=3600)
        assert server.proc is not None
        baseline = PeakRSS(server.proc.pid)
        idle = baseline._sample()
        with httpx.Client(timeout=600) as http:
            with PeakRSS(server.proc.pid) as put_rss:
                t0 = time.perf_counter()
                r = http.put(put_url, content=generate(size),
                             headers={"Content-Length": str(size)})
                put_s = time.perf_counter() - t0
            r.raise_for_status()
            with PeakRSS(server.proc.pid) as get_rss:
                t0 = time.perf_counter()
                received = 0
                with http.stream("GET", get_url) as resp:
                    resp.raise_for_status()
                    for chunk in resp.iter_bytes(4 * MiB):
                        received += len(chunk)
                get_s = time.perf_counter() - t0
        assert received == size, (received, size)
    return {
        "size_mib": size / MiB,
        "idle_rss_mb": idle / 1e6,
        "put_peak_rss_mb": put_rss.peak / 1e6,
        "get_peak_rss_mb": get_rss.peak / 1e6,
        "put_mb_s": size / put_s / 1e6,
        "get_mb_s": size / get_s / 1e6,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=2048)
    args = parser.parse_args(argv)
    result = run(args.size_mib * MiB)
    print(f"large object ({result['size_mib']:.0f} MiB, fs backend, SQLite)")
    print(f"  server RSS idle      {result['idle_rss_mb']:8.1f} MB")
    print(f"  PUT  peak RSS        {result['put_peak_rss_mb']:8.1f} MB   "
          f"{result['put_mb_s']:8.1f} MB/s")
    print(f"  GET  peak RSS        {result['get_peak_rss_mb']:8.1f} MB   "
          f"{result['get_mb_s']:8.1f} MB/s")
    return result


if __name__ == "__main__":
    main()
