"""Which backend a ``GATEWAY_BACKEND`` value names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend
from storage_backends.null import NullBackend
from storage_backends.protocol import Backend

if TYPE_CHECKING:  # the s3 backend's imports (botocore, httpx) load only when it is used
    from storage_backends.s3 import S3Options

_LOCAL = frozenset({"", "fs", "file"})


def open_backend(url: str, *, data_dir: Path, s3: S3Options | None = None) -> Backend:
    """Open the backend ``url`` names.

    ``fs``, ``file`` or nothing: the local filesystem under ``data_dir / "objects"`` (the
    default). ``fs:///abs/path`` or ``file:///abs/path``: the local filesystem with its root
    elsewhere (a migration target). ``memory``: a dict, for tests. ``null``: keeps no bytes
    (reads yield zeros), to measure the gateway's own cost (``make bench``). ``s3://bucket[/prefix]``:
    an upstream S3 bucket, reached with ``s3``.
    """
    value = url.strip()
    scheme = value.lower()
    if scheme in _LOCAL:
        return LocalFSBackend(Path(data_dir) / "objects")
    if scheme.startswith(("fs://", "file://")):
        parts = urlsplit(value)
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"a local backend URL needs an absolute path: {url!r} "
                             "(e.g. fs:///srv/gateway/objects)")
        return LocalFSBackend(Path(unquote(parts.path)))
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "null":
        return NullBackend()
    if scheme.startswith("s3://"):
        from storage_backends.s3 import S3Backend, S3Options

        return S3Backend.from_url(value, s3 or S3Options())
    raise ValueError(
        f"unknown storage backend {url!r}: use 'fs' (the default), 'fs:///path', 'memory', "
        "'null' or 's3://bucket/prefix'"
    )
