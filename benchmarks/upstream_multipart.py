"""A 1 GiB object through a gateway whose bytes live on an upstream S3 server.

aws-cli (default settings: 8 MiB parts, 10 at a time) uploads and downloads the object
through gateway A (``GATEWAY_BACKEND=s3://…``); the upstream is gateway B on the local
filesystem. Prints throughput and A's peak RSS (goal: under 200 MB whatever the size: parts
stream through, nothing is buffered whole) and checks the bytes came back identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from benchmarks._harness import PeakRSS
from benchmarks.large_objects import make_file
from tests._server import GatewayProcess

MiB = 1024 * 1024
UPSTREAM_BUCKET = "gateway-blobs"


def aws(server_url: str, env: dict[str, str], *args: str) -> float:
    """Seconds an aws-cli command took (the venv's aws-cli, default settings)."""
    aws_bin = str(Path(sys.executable).with_name("aws"))
    t0 = time.perf_counter()
    quiet = ["--only-show-errors"] if args[:2] == ("s3", "cp") else []
    subprocess.run([aws_bin, "--endpoint-url", server_url, *args, *quiet], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(sizes_mib: list[int]) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="gw-upstream-") as tmp_name:
        tmp = Path(tmp_name)
        upstream = GatewayProcess(tmp / "upstream").start()
        try:
            boto3.client("s3", endpoint_url=upstream.url, aws_access_key_id=upstream.access_key,
                         aws_secret_access_key=upstream.secret_key,
                         region_name="us-east-1").create_bucket(Bucket=UPSTREAM_BUCKET)
            server = GatewayProcess(tmp / "front", env_extra={
                "GATEWAY_BACKEND": f"s3://{UPSTREAM_BUCKET}/front",
                "GATEWAY_S3_ENDPOINT": upstream.url,
                "GATEWAY_S3_ACCESS_KEY": upstream.access_key,
                "GATEWAY_S3_SECRET_KEY": upstream.secret_key,
            }).start()
            try:
                results = _transfers(server, tmp, sizes_mib)
            finally:
                server.stop()
        finally:
            upstream.stop()
    return results


def _transfers(server: GatewayProcess, tmp: Path, sizes_mib: list[int]
               ) -> list[dict[str, float]]:
    empty = tmp / "empty"
    empty.write_text("")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key,
               AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty))
    aws(server.url, env, "s3", "mb", "s3://bench")
    assert server.proc is not None
    results = []
    for size_mib in sizes_mib:
        src = tmp / f"src-{size_mib}"
        make_file(src, size_mib * MiB)
        name = f"obj{size_mib}"
        with PeakRSS(server.proc.pid) as up_rss:
            up_s = aws(server.url, env, "s3", "cp", str(src), f"s3://bench/{name}")
        dst = tmp / f"dst-{size_mib}"
        with PeakRSS(server.proc.pid) as down_rss:
            down_s = aws(server.url, env, "s3", "cp", f"s3://bench/{name}", str(dst))
        same = subprocess.run(["cmp", "-s", str(src), str(dst)], check=False).returncode == 0
        src.unlink()
        dst.unlink()
        results.append({
            "size_mib": size_mib, "up_mb_s": size_mib * MiB / up_s / 1e6,
            "down_mb_s": size_mib * MiB / down_s / 1e6,
            "up_peak_rss_mb": up_rss.peak / 1e6, "down_peak_rss_mb": down_rss.peak / 1e6,
            "identical": float(same),
        })
        aws(server.url, env, "s3", "rm", f"s3://bench/{name}")
    return results


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1024])
    args = parser.parse_args(argv)
    results = run(args.sizes_mib)
    print("object through a gateway on an s3:// upstream (aws-cli cp, default settings)")
    print(f"{'size':>8} {'up MB/s':>8} {'down MB/s':>9} {'up RSS MB':>10} {'down RSS MB':>11} "
          f"{'same':>5}")
    for r in results:
        print(f"{int(r['size_mib']):>6}Mi {r['up_mb_s']:>8.1f} {r['down_mb_s']:>9.1f} "
              f"{r['up_peak_rss_mb']:>10.1f} {r['down_peak_rss_mb']:>11.1f} "
              f"{'yes' if r['identical'] else 'NO':>5}")
    return results


if __name__ == "__main__":
    main()
