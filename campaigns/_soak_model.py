"""The soak campaign's model: self-describing bodies, what each key was acknowledged to
hold, and the figures clients count."""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

from campaigns._gateway import s3_client
from campaigns._report import Report
from tests._server import GatewayProcess

BUCKET = "soak"
SHARED_KEYS = [f"shared/k{i:02d}" for i in range(16)]
OWN_KEYS = 8
MiB = 1024 * 1024
API = "/api/v1/storage"
#: A request still unanswered after this many seconds is stuck.
TIMEOUT = 60.0

Version = tuple[int, int, int]  # writer, sequence, size of the payload after the header
HEADER = len(f"{0:04d}:{0:010d}:{0:010d}\n")


def body_for(writer: int, seq: int, size: int) -> bytes:
    head = f"{writer:04d}:{seq:010d}:{size:010d}\n".encode()
    pattern = hashlib.sha256(head).digest()
    return head + (pattern * (size // len(pattern) + 1))[:size]


def parse_head(data: bytes) -> Version | None:
    head = data[:HEADER]
    if len(head) < HEADER or not head.endswith(b"\n"):
        return None
    try:
        writer, seq, size = (int(part) for part in head[:-1].split(b":"))
    except ValueError:
        return None
    return writer, seq, size


def identify(data: bytes) -> Version | None:
    """The version a whole body was written as; None for a torn, mixed or foreign one."""
    version = parse_head(data)
    return version if version is not None and data == body_for(*version) else None


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def own_keys(client: int) -> list[str]:
    """A client's own keys, under nested prefixes and one needing URL encoding."""
    return [f"c{client:02d}/sp ace+é/{j}" if j == 0 else
            f"c{client:02d}/{'a' if j % 2 else 'b/deep'}/k{j}" for j in range(OWN_KEYS)]


@dataclass
class Held:
    """What one of a client's own keys holds: nothing (``etag`` None) or one version."""
    etag: str | None = None
    version: Version | None = None


@dataclass
class Stats:
    latency: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0
    mismatches: int = 0
    up: int = 0
    down: int = 0
    created: Counter[tuple[str, str]] = field(default_factory=Counter)  # acknowledged
    tried: Counter[tuple[str, str]] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)  # acknowledged, key existed

    def merge(self, other: Stats) -> None:
        for op, values in other.latency.items():
            self.latency.setdefault(op, []).extend(values)
        for name in ("statuses", "exceptions", "created", "tried", "removed"):
            getattr(self, name).update(getattr(other, name))
        self.unexpected += other.unexpected
        self.mismatches += other.mismatches
        self.up += other.up
        self.down += other.down


class SharedKeys:
    """Every write to the shared keys: when it started and when it was acknowledged."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: dict[str, dict[Version, list[float | None]]] = {k: {} for k in SHARED_KEYS}
        self.floor: dict[str, float] = dict.fromkeys(SHARED_KEYS, 0.0)
        self.by_etag: dict[str, Version] = {}

    def begin(self, key: str, version: Version, etag: str) -> None:
        with self.lock:
            self.writes[key][version] = [time.monotonic(), None]
            self.by_etag[etag] = version

    def ack(self, key: str, version: Version) -> None:
        with self.lock:
            times = self.writes[key][version]
            times[1] = time.monotonic()
            self.floor[key] = max(self.floor[key], times[0] or 0.0)

    def floor_of(self, key: str) -> float:
        """The latest start of a write acknowledged so far: what a read starting now may
        not return anything acknowledged before."""
        with self.lock:
            return self.floor[key]

    def stale(self, key: str, version: Version, floor: float) -> str | None:
        with self.lock:
            times = self.writes[key].get(version)
        if times is None:
            return f"{key}: version {version} was never written to it"
        acked = times[1]
        if acked is not None and acked < floor:
            return (f"{key}: stale read of {version}, acknowledged {floor - acked:.3f} s "
                    "before a newer write to it started and was acknowledged")
        return None


class Soak:
    def __init__(self, server: GatewayProcess, report: Report, token: str, seed: int) -> None:
        self.server = server
        self.seed = seed  # of the clients' choices
        self.report = report
        self.token = token
        self.s3 = s3_client(server, timeout=TIMEOUT)
        #: One TLS context for every httpx client (each would load the CA store), though the
        #: gateway is plain HTTP here.
        self.tls = ssl.create_default_context()
        self.shared = SharedKeys()
        self.lock = threading.Lock()
        self.tainted: set[str] = set()  # own keys whose state a failed request left unknown

    def fail(self, message: str) -> None:
        with self.lock:
            self.report.fail(message)

    def taint(self, key: str) -> None:
        with self.lock:
            self.tainted.add(key)



def api_path(key: str) -> str:
    return f"/buckets/{BUCKET}/objects/{quote(key, safe='/')}"

