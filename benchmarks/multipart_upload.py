"""Upload (and download) 1 GiB and 5 GiB objects with aws-cli's default settings.

Prints throughput, the server's peak RSS during each transfer (goal: < 200 MB), and the
time CompleteMultipartUpload took on the server (from the access log), which must not
grow with the object's size: completion links the parts, it copies nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._harness import PeakRSS, running_gateway

MiB = 1024 * 1024
_COMPLETE = re.compile(r"POST /bench/(\S+)\?uploadId=\S+ 200 \S+ ([0-9.]+)ms")


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def aws(server_url: str, env: dict[str, str], *args: str) -> float:
    aws_bin = str(Path(sys.executable).with_name("aws"))
    t0 = time.perf_counter()
    quiet = ["--only-show-errors"] if args[:2] == ("s3", "cp") else []
    subprocess.run([aws_bin, "--endpoint-url", server_url, *args, *quiet], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(sizes_mib: list[int]) -> list[dict[str, float]]:
    results = []
    with running_gateway(GATEWAY_LOG_LEVEL="info") as server, \
            tempfile.TemporaryDirectory(prefix="gw-mpu-") as tmp:
        empty = Path(tmp) / "empty"
        empty.write_text("")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key,
                   AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty))
        aws(server.url, env, "s3", "mb", "s3://bench")
        assert server.proc is not None
        for size_mib in sizes_mib:
            src = Path(tmp) / f"src-{size_mib}"
            make_file(src, size_mib * MiB)
            name = f"obj{size_mib}"
            with PeakRSS(server.proc.pid) as up_rss:
                up_s = aws(server.url, env, "s3", "cp", str(src), f"s3://bench/{name}")
            dst = Path(tmp) / f"dst-{size_mib}"
            with PeakRSS(server.proc.pid) as down_rss:
                down_s = aws(server.url, env, "s3", "cp", f"s3://bench/{name}", str(dst))
            same = subprocess.run(["cmp", "-s", str(src), str(dst)]).returncode == 0
            src.unlink()
            dst.unlink()
            complete_ms = [float(m.group(2)) for m in _COMPLETE.finditer(server.log())
                           if m.group(1) == name]
            results.append({
                "size_mib": size_mib, "up_mb_s": size_mib * MiB / up_s / 1e6,
                "down_mb_s": size_mib * MiB / down_s / 1e6,
                "up_peak_rss_mb": up_rss.peak / 1e6, "down_peak_rss_mb": down_rss.peak / 1e6,
                "complete_ms": complete_ms[-1] if complete_ms else float("nan"),
                "identical": float(same),
            })
            aws(server.url, env, "s3", "rm", f"s3://bench/{name}")
    return results


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1024, 5120])
    args = parser.parse_args(argv)
    results = run(args.sizes_mib)
    print("multipart with aws-cli defaults (8 MiB parts, 10 threads; fs backend, SQLite)")
    print(f"  {'size':>8} {'upload':>12} {'download':>12} {'peak RSS up':>12} "
          f"{'peak RSS down':>14} {'Complete':>10}  bytes")
    for r in results:
        print(f"  {r['size_mib']:>5.0f} MiB {r['up_mb_s']:>7.1f} MB/s {r['down_mb_s']:>7.1f} MB/s "
              f"{r['up_peak_rss_mb']:>9.1f} MB {r['down_peak_rss_mb']:>11.1f} MB "
              f"{r['complete_ms']:>7.1f} ms  {'identical' if r['identical'] else 'DIFFER'}")
    return results


if __name__ == "__main__":
    main()
