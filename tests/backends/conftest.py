"""One fixture, ``backend``, parametrised over every backend the contract suite runs against.

To add a backend, add a factory to ``FACTORIES``: an async context manager that yields a
:class:`Harness`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage_backends import Backend
from storage_backends._localfs_files import MANIFEST, SEGMENTS, Manifest
from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend


@dataclass
class Harness:
    backend: Backend
    #: Files a failed or finished write left behind in the backend's scratch space.
    leftovers: Callable[[], list[str]]
    #: What no blob accounts for once no upload is in progress: leftovers, anything of an
    #: upload, part attempts in no blob's segments.
    residue: Callable[[], list[str]]


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Harness]:
    backend = MemoryBackend()

    def residue() -> list[str]:
        return [f"uploads/{upload_id}" for upload_id in backend._uploads]

    try:
        yield Harness(backend, list, residue)
    finally:
        await backend.aclose()


def staging_files(root: Path) -> list[str]:
    """Every file under ``tmp/`` except instances' lock files."""
    found = []
    for dirpath, _dirs, files in os.walk(root / "tmp"):
        for name in files:
            if not name.endswith(".lock"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def residue(root: Path) -> list[str]:
    """Every file under ``root`` but instances' lock files and what live blobs consist of:
    whole blobs, manifests, and the segments (with their key file) a manifest names."""
    named: set[str] = set()
    for manifest_path in (root / "blobs").rglob(f"*{MANIFEST}"):
        manifest = Manifest.decode(manifest_path.read_bytes(), str(manifest_path))
        segments = manifest_path.parent / manifest.segments
        named |= {str(segments / name) for name, _ in manifest.pieces}
        named.add(str(segments / "key"))
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel.startswith("tmp/") and name.endswith(".lock"):
                continue
            if rel.startswith("blobs/") and (SEGMENTS not in rel or path in named):
                continue
            found.append(rel)
    return sorted(found)


@asynccontextmanager
async def _localfs(tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "objects"
    backend = LocalFSBackend(root)
    try:
        yield Harness(backend, lambda: staging_files(root), lambda: residue(root))
    finally:
        await backend.aclose()


FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[Harness]]] = {
    "memory": _memory,
    "localfs": _localfs,
}


@pytest.fixture(params=sorted(FACTORIES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with FACTORIES[request.param](tmp_path) as harness:
        yield harness


@pytest.fixture
def backend(harness: Harness) -> Backend:
    return harness.backend
