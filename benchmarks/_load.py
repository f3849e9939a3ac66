"""Drive load with wrk (Debian's package) over URLs signed before the clock starts; HEAD
with hey (Debian's package), since wrk 4.1 waits for a HEAD answer's body.

wrk cycles through a list of presigned URLs, so the load generator spends its time on HTTP,
not on signing (an async Python client tops out near 260 req/s here, far below the server;
boto3 per request lower still). One wrk thread: on two cores, a second one only takes CPU
from the server it measures.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

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


@dataclass
class Load:
    """One wrk run: requests per second, latency percentiles, errors (socket errors,
    timeouts and answers of 4xx/5xx, as wrk counts them; a run with any is invalid)."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    #: Server CPU (user + system, all its processes) per request, when measured.
    cpu_us: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    return path


def run_wrk(urls: list[str], method: str, concurrency: int, seconds: float,
            body_size: int = 0) -> Load:
    base = urlsplit(urls[0])
    paths = ",".join(json.dumps(f"{urlsplit(u).path}?{urlsplit(u).query}") for u in urls)
    body = f'string.rep("x", {body_size})' if body_size else "nil"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA % {"paths": paths, "body": body, "method": method})
        script = f.name
    try:
        out = subprocess.run(
            [require_wrk(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", script, f"{base.scheme}://{base.netloc}/"],
            check=True, capture_output=True, text=True).stdout
    finally:
        Path(script).unlink()
    stats = json.loads(out.split("JSON", 1)[1])
    return Load(rps=stats["requests"] / (stats["duration_us"] / 1e6),
                p50_ms=stats["p50_us"] / 1000, p99_ms=stats["p99_us"] / 1000,
                errors=int(stats["errors"]), requests=int(stats["requests"]))


def run_hey(url: str, method: str, concurrency: int, seconds: float) -> Load:
    """One URL, many times (hey takes one): for HEAD, which wrk cannot measure."""
    path = shutil.which("hey")
    if path is None:
        raise SystemExit("hey is needed: apt-get install hey")
    out = subprocess.run([path, "-m", method, "-c", str(concurrency),
                          "-z", f"{max(1, round(seconds))}s", url],
                         check=True, capture_output=True, text=True).stdout

    def figure(pattern: str) -> float:
        match = re.search(pattern, out)
        if match is None:
            raise AssertionError(f"hey printed no {pattern!r}:\n{out}")
        return float(match.group(1))

    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    # "Error distribution:" lists socket errors and timeouts as "[count] message".
    _, _, failures = out.partition("Error distribution:")
    socket_errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", failures))
    ok = sum(n for code, n in statuses.items() if code < 400)
    total = sum(statuses.values())
    return Load(rps=figure(r"Requests/sec:\s+([0-9.]+)"),
                p50_ms=figure(r"50% in ([0-9.]+) secs") * 1000,
                p99_ms=figure(r"99% in ([0-9.]+) secs") * 1000,
                errors=total - ok + socket_errors, requests=total)
