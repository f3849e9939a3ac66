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
    log_level: str = "info"
    #: Seconds after which an unreferenced blob may be garbage-collected.
    gc_grace_seconds: int = 3600

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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _convert(kind: Any, raw: str) -> Any:
    kind = str(kind)
    if kind == "int":
        return int(raw)
    if kind == "Path":
        return Path(raw)
    return raw


ENV_NAMES: tuple[str, ...] = tuple(f"GATEWAY_{f.name.upper()}" for f in fields(Settings))
