"""Large transfers: 1 GiB single PUT and GET, 1 GiB multipart with 4 parts in flight, and
CompleteMultipartUpload for 1 GiB and 5 GiB, with the server's peak RSS during each.

curl moves the bytes (over presigned URLs, from files in the page cache, into
/dev/null), so the client is C end to end; the bare Starlette app takes the same PUT and
serves the same GET in the same run, as the ceiling. The multipart rows upload 64 MiB parts
(the same part file each time) through presigned UploadPart URLs, four curls at a time,
then complete with boto3: the completion's own time is measured separately, and must not
grow with the object's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._harness import PeakRSS, client, running_bare, running_gateway
from benchmarks.small_objects import SHIPPED_QUOTAS

MiB = 1024 * 1024
GiB = 1024 * MiB
PART = 64 * MiB


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def curl(method: str, url: str, upload: Path | None = None) -> str:
    """The response's headers (a PUT's ETag is in them); raises on a non-2xx answer."""
    args = ["curl", "-sS", "--fail-with-body", "-X", method, "-o", "/dev/null", "-D", "-",
            "-H", "Expect:"]
    if upload is not None:
        args += ["-T", str(upload)]
    return subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout


def etag_of(headers: str) -> str:
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "etag":
            return value.strip()
    raise AssertionError(f"no ETag in {headers!r}")


def timed(pid: int, fn: Callable[[], Any]) -> tuple[float, int]:
    """Seconds ``fn`` took and the server's peak RSS (bytes) meanwhile."""
    with PeakRSS(pid) as rss:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return seconds, rss.peak


def multipart(s3: Any, pid: int, key: str, part_file: Path, parts: int,
              parallel: int = 4) -> dict[str, float]:
    upload = s3.create_multipart_upload(Bucket="bench", Key=key)["UploadId"]
    urls = [s3.generate_presigned_url("upload_part", Params={
        "Bucket": "bench", "Key": key, "UploadId": upload, "PartNumber": n}, ExpiresIn=7200)
        for n in range(1, parts + 1)]
    etags: list[str] = []

    def send() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            etags.extend(pool.map(lambda url: etag_of(curl("PUT", url, part_file)), urls))

    upload_s, upload_rss = timed(pid, send)
    layout = {"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}
    complete_s, complete_rss = timed(pid, lambda: s3.complete_multipart_upload(
        Bucket="bench", Key=key, UploadId=upload, MultipartUpload=layout))
    size = parts * part_file.stat().st_size
    head = s3.head_object(Bucket="bench", Key=key)
    assert head["ContentLength"] == size, head
    return {"size": size, "mb_s": size / (upload_s + complete_s) / 1e6,
            "complete_s": complete_s, "peak_rss_mb": max(upload_rss, complete_rss) / 1e6}


def run(size: int = GiB, big_multipart: int = 5 * GiB,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {"size": size}
    with tempfile.TemporaryDirectory(prefix="gw-bench-large-") as tmp:
        whole, part = Path(tmp) / "whole", Path(tmp) / "part"
        make_file(whole, size)
        make_file(part, PART)
        with running_bare() as bare:
            assert bare.proc is not None
            put_s, put_rss = timed(bare.proc.pid, lambda: curl("PUT", f"{bare.url}/big", whole))
            get_s, get_rss = timed(bare.proc.pid,
                                   lambda: curl("GET", f"{bare.url}/big/{size}"))
            out["bare"] = {"put_mb_s": size / put_s / 1e6, "get_mb_s": size / get_s / 1e6,
                           "put_peak_rss_mb": put_rss / 1e6, "get_peak_rss_mb": get_rss / 1e6}
        log(f"  bare app: PUT {out['bare']['put_mb_s']:.0f} MB/s, "
            f"GET {out['bare']['get_mb_s']:.0f} MB/s")
        with running_gateway(**{**SHIPPED_QUOTAS,
                                "GATEWAY_QUOTA_MAX_OBJECT_SIZE": "unlimited",
                                "GATEWAY_QUOTA_BUCKET_BYTES": "unlimited"}) as server:
            assert server.proc is not None
            pid = server.proc.pid
            s3: Any = client(server)
            s3.create_bucket(Bucket="bench")
            put_url = s3.generate_presigned_url(
                "put_object", Params={"Bucket": "bench", "Key": "big"}, ExpiresIn=7200)
            get_url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": "bench", "Key": "big"}, ExpiresIn=7200)
            idle = PeakRSS(pid)._sample()
            put_s, put_rss = timed(pid, lambda: curl("PUT", put_url, whole))
            get_s, get_rss = timed(pid, lambda: curl("GET", get_url))
            out["gateway"] = {"idle_rss_mb": idle / 1e6,
                              "put_mb_s": size / put_s / 1e6, "get_mb_s": size / get_s / 1e6,
                              "put_peak_rss_mb": put_rss / 1e6,
                              "get_peak_rss_mb": get_rss / 1e6}
            log(f"  gateway: PUT {out['gateway']['put_mb_s']:.0f} MB/s, "
                f"GET {out['gateway']['get_mb_s']:.0f} MB/s")
            out["multipart"] = multipart(s3, pid, "mp-1g", part, size // PART)
            log(f"  multipart {size // MiB} MiB: {out['multipart']['mb_s']:.0f} MB/s, "
                f"complete {out['multipart']['complete_s'] * 1000:.0f} ms")
            if big_multipart:
                out["multipart_big"] = multipart(s3, pid, "mp-big", part, big_multipart // PART)
                log(f"  multipart {big_multipart // MiB} MiB: "
                    f"{out['multipart_big']['mb_s']:.0f} MB/s, "
                    f"complete {out['multipart_big']['complete_s'] * 1000:.0f} ms")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--big-multipart-mib", type=int, default=5120)
    args = parser.parse_args(argv)
    return run(args.size_mib * MiB, args.big_multipart_mib * MiB)


if __name__ == "__main__":
    main()
