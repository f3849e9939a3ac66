"""Which backend a ``GATEWAY_BACKEND`` value names."""

from __future__ import annotations

from pathlib import Path

from storage_backends.errors import NotSupported
from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend
from storage_backends.protocol import Backend

_LOCAL = frozenset({"", "fs", "file"})


def open_backend(url: str, *, data_dir: Path) -> Backend:
    """Open the backend ``url`` names; local blobs live under ``data_dir / "objects"``.

    ``fs``, ``file`` or nothing: the local filesystem (the default). ``memory``: a dict,
    for tests. ``s3://…``: an upstream S3 bucket (not available yet).
    """
    value = url.strip()
    scheme = value.lower()
    if scheme in _LOCAL:
        return LocalFSBackend(Path(data_dir) / "objects")
    if scheme == "memory":
        return MemoryBackend()
    if scheme.startswith("s3://"):
        raise NotSupported("open", "s3")
    raise ValueError(
        f"unknown storage backend {url!r}: use 'fs' (the default), 'memory' or 's3://bucket'"
    )
