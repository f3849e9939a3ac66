"""Settings: environment variables, each also a ``gateway serve`` flag (DESIGN §1)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in the data dir
    backend: str = "fs"
    region: str = "us-east-1"
    domain: str = ""  # enables virtual-host-style addressing: <bucket>.<domain>
    workers: int = 1
    root_access_key: str = field(default="", repr=False)
    root_secret_key: str = field(default="", repr=False)
    #: Encrypts S3 secret keys at rest; default: a key file in the data dir (mode 0600).
    secret_key: str = field(default="", repr=False)
    log_level: str = "info"
    #: Seconds after which an unreferenced blob may be garbage-collected.
    gc_grace_seconds: int = 3600
    #: Origins every bucket accepts cross-origin requests from (comma-separated), besides
    #: the bucket's own CORS rules: for deployments serving a web app.
    cors_origins: str = ""
    #: Age after which an unfinished multipart upload is aborted ("7d", "12h", "90m", "3600").
    multipart_expiry: str = "7d"

    @property
    def multipart_expiry_seconds(self) -> int:
        return parse_duration(self.multipart_expiry)

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


ENV_NAMES: tuple[str, ...] = tuple(f"GATEWAY_{f.name.upper()}" for f in fields(Settings))
