"""4 KiB PUT and GET throughput at a given concurrency, over presigned URLs.

URLs are signed before the clock starts, so the load generator (an async httpx client)
spends its time on HTTP, not on signing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import httpx

from benchmarks._harness import client, running_gateway


async def _drive(method: str, urls: list[str], body: bytes | None,
                 concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    url = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                r = await http.request(method, url, content=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 300:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return len(urls) / elapsed, latencies, errors


def run(requests: int, concurrency: int, size: int = 4096) -> dict[str, float]:
    with running_gateway() as server:
        s3 = client(server)
        s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
        keys = [f"k/{i:06d}" for i in range(requests)]
        put_urls = [s3.generate_presigned_url(  # type: ignore[attr-defined]
            "put_object", Params={"Bucket": "bench", "Key": k}, ExpiresIn=3600) for k in keys]
        get_urls = [s3.generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": "bench", "Key": k}, ExpiresIn=3600) for k in keys]
        body = os.urandom(size)
        put_rate, put_lat, put_err = asyncio.run(_drive("PUT", put_urls, body, concurrency))
        get_rate, get_lat, get_err = asyncio.run(_drive("GET", get_urls, None, concurrency))

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    return {
        "put_rps": put_rate, "put_p50_ms": pct(put_lat, 50), "put_p99_ms": pct(put_lat, 99),
        "put_errors": put_err,
        "get_rps": get_rate, "get_p50_ms": pct(get_lat, 50), "get_p99_ms": pct(get_lat, 99),
        "get_errors": get_err,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    r = run(args.requests, args.concurrency)
    print(f"4 KiB objects, concurrency {args.concurrency}, {args.requests} requests each")
    print(f"  PUT {r['put_rps']:8.0f} req/s  p50 {r['put_p50_ms']:6.2f} ms  "
          f"p99 {r['put_p99_ms']:6.2f} ms  errors {r['put_errors']:.0f}")
    print(f"  GET {r['get_rps']:8.0f} req/s  p50 {r['get_p50_ms']:6.2f} ms  "
          f"p99 {r['get_p99_ms']:6.2f} ms  errors {r['get_errors']:.0f}")
    return r


if __name__ == "__main__":
    main()
