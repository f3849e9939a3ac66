"""Settings: environment variables, each also a ``gateway serve`` flag (DESIGN §1)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.types import MAX_SQL_INT

if TYPE_CHECKING:
    from storage_backends.s3 import S3Options


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in the data dir
    #: Seconds a SQLite write waits for a lock another process holds (a CLI command, a
    #: backup) before the request answers 503 with Retry-After.
    database_busy_timeout: int = 30
    backend: str = "fs"
    #: The upstream of an ``s3://bucket/prefix`` backend (MinIO, Ceph RGW, AWS S3, ...);
    #: empty: AWS S3 in ``s3_region``.
    s3_endpoint: str = ""
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    s3_region: str = "us-east-1"
    #: ``opaque`` (blobs named by the gateway) or ``keys`` (each object at
    #: ``<prefix><bucket>/<key>``, readable by other tools; needs upstream versioning).
    s3_placement: str = "opaque"
    region: str = "us-east-1"
    domain: str = ""  # enables virtual-host-style addressing: <bucket>.<domain>
    workers: int = 1
    #: Serve HTTPS: a PEM certificate (chain) and its private key (``--ssl-certfile`` /
    #: ``--ssl-keyfile``); both empty: plain HTTP.
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    #: Seconds a connection has to send a whole request head (slow-header clients).
    request_header_timeout: int = 10
    #: Seconds a request body may stop arriving, or a response stop being read, before the
    #: connection is closed.
    idle_timeout: int = 60
    #: Seconds an idle keep-alive connection stays open between requests: longer than
    #: clients and load balancers keep idle connections in their pools (httpx 5 s, AWS SDKs
    #: and load balancers 60 s), so that none sends a request on a connection as it closes.
    keep_alive_timeout: int = 75
    #: On SIGTERM, seconds that requests in flight get to finish before they are cut.
    shutdown_grace_seconds: int = 30
    #: Uploads (object PUTs, parts, form posts) one process streams at once; more are
    #: refused with SlowDown, which S3 clients retry. 0: no limit.
    max_concurrent_uploads: int = 256
    root_access_key: str = field(default="", repr=False)
    root_secret_key: str = field(default="", repr=False)
    #: Encrypts S3 secret keys at rest; default: a key file in the data dir (mode 0600).
    secret_key: str = field(default="", repr=False)
    #: Master key(s) for encryption at rest (SSE-S3): base64 of 32 bytes, several separated
    #: by commas (the first encrypts, all decrypt); default: <data dir>/master.keys (0600).
    master_key: str = field(default="", repr=False)
    log_level: str = "info"
    #: ``text`` (one human-readable line per record) or ``json`` (one JSON object per line,
    #: for log collectors); access lines carry the request's fields either way.
    log_format: str = "text"
    #: ``on``: ``GET /metrics`` answers in the Prometheus text format, without credentials
    #: (as scrapers expect); ``off``: no metrics endpoint.
    metrics: str = "on"
    #: Seconds after which an unreferenced blob may be garbage-collected.
    gc_grace_seconds: int = 3600
    #: How often housekeeping (upload expiry, garbage collection) runs, on one instance.
    housekeeping_seconds: int = 3600
    #: Origins every bucket accepts cross-origin requests from (comma-separated), besides
    #: the bucket's own CORS rules: for deployments serving a web app.
    cors_origins: str = ""
    #: Age after which an unfinished multipart upload is aborted ("7d", "12h", "90m", "3600").
    multipart_expiry: str = "7d"
    # Per-bucket quota defaults (the Storage API reference's), each overridable per bucket:
    # a size ("10GiB", "100MB", "5000") or "unlimited".
    quota_bucket_bytes: str = "10GiB"
    quota_bucket_objects: str = "10000"
    quota_max_object_size: str = "100MiB"
    #: How often (seconds) an instance proves it is alive; one silent for three beats is
    #: presumed dead and the quota it held for writes in flight is released.
    heartbeat_seconds: int = 10
    #: How long a JSON API session (``POST /api/v1/auth/login``) lasts.
    session_ttl: str = "12h"
    #: Requests per hour for the JSON API, as "anonymous,authenticated,admin", or "off".
    rate_limits: str = "60,1000,5000"
    #: Whether the S3 endpoint counts against the same limits (S3 clients then get SlowDown).
    rate_limit_s3: str = "off"
    #: Shares rate-limit counters between gateway processes (``redis://host:6379/0``).
    redis_url: str = field(default="", repr=False)
    #: A clamd to scan every upload with before it commits: ``unix:///run/clamav/clamd.ctl``,
    #: a socket path, or ``tcp://host:3310``; empty: no scanning.
    clamav: str = ""
    #: A JSON file overriding the bot-package folder rules (``gateway.service.packages``).
    package_rules: str = ""
    #: Age after which objects under a package's ``.gbdrive/temp/`` expire.
    temp_expiry: str = "1d"
    #: How long the change log keeps changes (``/api/v1/storage/changes``).
    change_retention: str = "30d"
    #: Seconds a webhook receiver has to answer one event.
    webhook_timeout: int = 10
    #: The longest wait between two delivery attempts to a failing webhook.
    webhook_max_backoff: str = "1h"
    #: Networks webhook receivers may be in besides public addresses (comma-separated,
    #: e.g. "10.0.0.0/8"): loopback, private and link-local addresses are refused otherwise.
    webhook_allowed_networks: str = ""

    def s3_options(self) -> S3Options:
        """How an ``s3://`` backend reaches its upstream."""
        from storage_backends.s3 import S3Options

        return S3Options(endpoint=self.s3_endpoint, access_key=self.s3_access_key,
                         secret_key=self.s3_secret_key, region=self.s3_region,
                         placement=self.s3_placement)

    @property
    def json_logs(self) -> bool:
        return _choice("log_format", self.log_format, ("text", "json")) == "json"

    @property
    def metrics_enabled(self) -> bool:
        return _choice("metrics", self.metrics, ("on", "off")) == "on"

    @property
    def multipart_expiry_seconds(self) -> int:
        return parse_duration(self.multipart_expiry)

    @property
    def temp_expiry_seconds(self) -> int:
        return parse_duration(self.temp_expiry)

    @property
    def change_retention_seconds(self) -> int:
        return parse_duration(self.change_retention)

    @property
    def webhook_max_backoff_seconds(self) -> int:
        return parse_duration(self.webhook_max_backoff)

    @property
    def session_ttl_seconds(self) -> int:
        return parse_duration(self.session_ttl)

    @property
    def default_quota_bytes(self) -> int | None:
        return parse_limit(self.quota_bucket_bytes)

    @property
    def default_quota_objects(self) -> int | None:
        return parse_limit(self.quota_bucket_objects)

    @property
    def default_max_object_size(self) -> int | None:
        return parse_limit(self.quota_max_object_size)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'gateway.db'}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"GATEWAY_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.type, raw)
        kinds = {f.name: f.type for f in fields(cls)}
        values.update({k: _convert(kinds[k], v) if isinstance(v, str) else v
                       for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    word = value.strip().lower()
    if word not in allowed:
        raise ValueError(f"GATEWAY_{name.upper()} must be one of {', '.join(allowed)}, "
                         f"not {value!r}")
    return word


def _convert(kind: Any, raw: str) -> Any:
    kind = str(kind)
    if kind == "int":
        return int(raw)
    if kind == "Path":
        return Path(raw)
    return raw


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in ``"3600"``, ``"90m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    value = text.strip().lower()
    unit = 1
    if value and value[-1] in _UNITS:
        value, unit = value[:-1], _UNITS[value[-1]]
    try:
        seconds = int(value) * unit
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 7d)") from None
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
UNLIMITED_WORDS = frozenset({"unlimited", "none", "off"})


def parse_size(text: str) -> int:
    """Bytes in ``"5000"``, ``"100MB"`` (decimal) or ``"100MiB"`` (binary)."""
    value = text.strip().lower().replace(" ", "")
    digits = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(digits):]
    if unit not in _SIZE_UNITS or not digits:
        raise ValueError(f"not a size: {text!r} (e.g. 5000, 100MB, 10GiB)")
    try:
        number = float(digits) if "." in digits else int(digits)
        size = int(number * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        raise ValueError(f"not a size: {text!r} (e.g. 5000, 100MB, 10GiB)") from None
    if size < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    if size > MAX_SQL_INT:
        raise ValueError(f"a size is at most {MAX_SQL_INT} bytes: {text!r}")
    return size


def parse_limit(text: str) -> int | None:
    """A size, or None for ``"unlimited"``."""
    if text.strip().lower() in UNLIMITED_WORDS:
        return None
    return parse_size(text)


ENV_NAMES: tuple[str, ...] = tuple(f"GATEWAY_{f.name.upper()}" for f in fields(Settings))
