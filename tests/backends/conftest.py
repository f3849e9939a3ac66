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
from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend


@dataclass
class Harness:
    backend: Backend
    #: Files a failed or finished write left behind in the backend's scratch space.
    leftovers: Callable[[], list[str]]


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Harness]:
    backend = MemoryBackend()
    try:
        yield Harness(backend, list)
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


@asynccontextmanager
async def _localfs(tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "objects"
    backend = LocalFSBackend(root)
    try:
        yield Harness(backend, lambda: staging_files(root))
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
