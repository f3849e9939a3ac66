"""API tokens: created from the CLI, shown once, stored as a hash; permissions, expiry,
revocation and disabled users are enforced when a token is presented."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.metadata.db import Database
from gateway.service.context import Context
from gateway.service.tokens import TokenService
from gateway.settings import Settings
from storage_backends.memory import MemoryBackend


def gw(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert gw(data, "user", "add", "alice").returncode == 0
    assert gw(data, "user", "add", "root", "--role", "admin").returncode == 0
    return data


@pytest.fixture
async def tokens(data: Path) -> AsyncIterator[TokenService]:
    settings = Settings(data_dir=data)
    db = Database(settings.effective_database_url)
    await db.start()
    yield TokenService(Context(settings, db, MemoryBackend()))
    await db.aclose()


def stored_anywhere(data: Path, token: str) -> bool:
    return any(token.encode() in path.read_bytes() for path in data.glob("gateway.db*"))


def create(data: Path, *args: str) -> dict[str, str]:
    result = gw(data, "token", "create", "--json", *args)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def test_token_lifecycle(data: Path, tokens: TokenService) -> None:
    made = create(data, "--user", "alice", "--name", "kb-sync", "--permission",
                  "storage:read", "--permission", "storage:write")
    token = made["token"]
    header = base64.b64encode(token.encode()).decode()  # as the API reference says
    found = await tokens.authenticate(header)
    assert found is not None
    principal, permissions = found
    assert principal.name == "alice" and principal.role == "member"
    assert permissions == {"storage:read", "storage:write"}
    assert await tokens.authenticate(token) is not None  # a raw token is accepted too
    assert await tokens.authenticate(header[:-4] + "AAA=") is None
    assert await tokens.authenticate("garbage") is None

    listed = json.loads(gw(data, "token", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["kb-sync"]
    assert listed[0]["prefix"] == token[:12] and "token" not in listed[0]
    # Only a hash is stored: the token appears nowhere in the database files.
    assert not stored_anywhere(data, token)

    assert gw(data, "token", "revoke", made["id"]).returncode == 0
    assert await tokens.authenticate(header) is None
    assert gw(data, "token", "revoke", made["id"]).returncode == 1


async def test_expiry_permissions_and_disabled_users(data: Path,
                                                     tokens: TokenService) -> None:
    short = create(data, "--user", "alice", "--name", "short", "--permission",
                   "storage:read", "--expires-in", "1s")
    assert await tokens.authenticate(short["token"]) is not None
    await asyncio.sleep(1.5)
    assert await tokens.authenticate(short["token"]) is None

    refused = gw(data, "token", "create", "--user", "alice", "--name", "x",
                 "--permission", "admin")
    assert refused.returncode == 1 and "admin" in refused.stderr
    assert gw(data, "token", "create", "--user", "alice", "--name", "x").returncode == 2
    past = gw(data, "token", "create", "--user", "alice", "--name", "x", "--permission",
              "bots:read", "--expires-at", "2020-01-01T00:00:00")
    assert past.returncode == 1 and "future" in past.stderr
    admin = create(data, "--user", "root", "--name", "ops", "--permission", "admin")
    found = await tokens.authenticate(admin["token"])
    assert found is not None and found[1] == {"admin"}

    kept = create(data, "--user", "alice", "--name", "kept", "--permission", "bots:write")
    assert gw(data, "user", "disable", "alice").returncode == 0
    assert await tokens.authenticate(kept["token"]) is None
    assert gw(data, "user", "enable", "alice").returncode == 0
    assert await tokens.authenticate(kept["token"]) is not None
