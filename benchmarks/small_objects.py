"""4 KiB PUT and GET throughput at a given concurrency, driven by wrk.

wrk (Debian's package) cycles through presigned URLs for distinct keys, signed before the
clock starts, so the load generator spends its time on HTTP, not on signing. (An async
Python client was measured here to top out near 260 req/s even against a trivial endpoint,
far below the server.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks._harness import client, running_gateway

_LUA = """
local paths = {%(paths)s}
local body = %(body)s
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("%(method)s", paths[i], nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON{\\"requests\\":%%d,\\"duration_us\\":%%d,\\"p50_us\\":%%d,\\"p99_us\\":%%d," ..
    "\\"errors\\":%%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    return path


def run_wrk(urls: list[str], method: str, body_size: int, concurrency: int,
            seconds: float) -> dict[str, float]:
    base = urlsplit(urls[0])
    paths = ",".join(json.dumps(f"{urlsplit(u).path}?{urlsplit(u).query}") for u in urls)
    body = f'string.rep("x", {body_size})' if body_size else "nil"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA % {"paths": paths, "body": body, "method": method})
        script = f.name
    try:
        out = subprocess.run(
            [require_wrk(), "-t2", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", script,
             f"{base.scheme}://{base.netloc}/"],
            check=True, capture_output=True, text=True).stdout
    finally:
        Path(script).unlink()
    stats = json.loads(out.split("JSON", 1)[1])
    return {
        "rps": stats["requests"] / (stats["duration_us"] / 1e6),
        "p50_ms": stats["p50_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "errors": stats["errors"],
        "requests": stats["requests"],
    }


def run(concurrency: int, seconds: float, keys: int = 2000, size: int = 4096,
        env: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    # The shipped quota defaults (empty: the settings' own), so PUTs pay for reservations.
    defaults = {"GATEWAY_QUOTA_BUCKET_BYTES": "", "GATEWAY_QUOTA_BUCKET_OBJECTS": "",
                "GATEWAY_QUOTA_MAX_OBJECT_SIZE": "", **(env or {})}
    with running_gateway(**defaults) as server:
        s3 = client(server)
        s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
        names = [f"k/{i:06d}" for i in range(keys)]

        def presign(op: str, key: str) -> str:
            return str(s3.generate_presigned_url(  # type: ignore[attr-defined]
                op, Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))

        put = run_wrk([presign("put_object", k) for k in names], "PUT", size, concurrency,
                      seconds)
        # wrk's threads each cycle the list from the start: GET what the PUTs created.
        stored = [o["Key"] for page in s3.get_paginator(  # type: ignore[attr-defined]
            "list_objects_v2").paginate(Bucket="bench") for o in page.get("Contents", [])]
        get = run_wrk([presign("get_object", k) for k in stored], "GET", 0, concurrency,
                      seconds)
    return {"put": put, "get": get}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args(argv)
    r = run(args.concurrency, args.seconds)
    print(f"4 KiB objects, concurrency {args.concurrency}, {args.seconds:.0f} s each "
          "(fs backend, SQLite)")
    for op in ("put", "get"):
        m = r[op]
        print(f"  {op.upper():4} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:6.2f} ms  "
              f"p99 {m['p99_ms']:6.2f} ms  errors {m['errors']:.0f}")
    return r


if __name__ == "__main__":
    main()
