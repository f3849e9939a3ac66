"""API tokens: created from the CLI, shown once, stored as a hash; permissions, expiry,
revocation and disabled users are enforced when a token is presented."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.metadata.db import Database
from gateway.service.context import Context
from gateway.service.tokens import TokenService
from gateway.settings import Settings
from storage_backends.memory import MemoryBackend
from tests._server import database_for, run_cli
from tests._server import run_cli_here as run_main


async def gw(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``run_main`` from an async test (the CLI runs its own event loop)."""
    return await asyncio.to_thread(run_main, data, *args)


def with_users(data: Path) -> Path:
    assert run_main(data, "user", "add", "alice").returncode == 0
    assert run_main(data, "user", "add", "root", "--role", "admin").returncode == 0
    return data


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the users, made once (creating the schema is the slow part)."""
    return with_users(tmp_path_factory.mktemp("tokens") / "data")


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Path:
    """A private copy of ``template`` (on PostgreSQL, whose database is not in the data dir:
    made afresh)."""
    if database_for(template):
        return with_users(tmp_path / "data")
    return Path(shutil.copytree(template, tmp_path / "data"))


@pytest.fixture
async def tokens(data: Path) -> AsyncIterator[TokenService]:
    settings = Settings(data_dir=data)
    db = Database(settings.effective_database_url)
    await db.start()
    yield TokenService(Context(settings, db, MemoryBackend()))
    await db.aclose()


def stored_anywhere(data: Path, token: str) -> bool:
    return any(token.encode() in path.read_bytes() for path in data.glob("gateway.db*"))


async def create(data: Path, *args: str) -> dict[str, str]:
    result = await gw(data, "token", "create", "--json", *args)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def test_token_lifecycle(data: Path, tokens: TokenService) -> None:
    # The one spawned ``gateway token`` command, as an operator runs it.
    spawned = run_cli(data, "token", "create", "--json", "--user", "alice", "--name",
                      "kb-sync", "--permission", "storage:read", "--permission",
                      "storage:write")
    assert spawned.returncode == 0, spawned.stderr
    made = json.loads(spawned.stdout)
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

    listed = json.loads((await gw(data, "token", "list", "--json")).stdout)
    assert [t["name"] for t in listed] == ["kb-sync"]
    assert listed[0]["prefix"] == token[:12] and "token" not in listed[0]
    # Only a hash is stored: the token appears nowhere in the database files.
    assert not stored_anywhere(data, token)

    assert (await gw(data, "token", "revoke", made["id"])).returncode == 0
    assert await tokens.authenticate(header) is None
    assert (await gw(data, "token", "revoke", made["id"])).returncode == 1


async def test_expiry_permissions_and_disabled_users(data: Path,
                                                     tokens: TokenService) -> None:
    short = await create(data, "--user", "alice", "--name", "short", "--permission",
                         "storage:read", "--expires-in", "1s")
    made_by = time.monotonic()  # it expires at most 1 s after this
    assert await tokens.authenticate(short["token"]) is not None

    refused = await gw(data, "token", "create", "--user", "alice", "--name", "x",
                       "--permission", "admin")
    assert refused.returncode == 1 and "admin" in refused.stderr
    usage = await gw(data, "token", "create", "--user", "alice", "--name", "x")
    assert usage.returncode == 2
    past = await gw(data, "token", "create", "--user", "alice", "--name", "x", "--permission",
                    "bots:read", "--expires-at", "2020-01-01T00:00:00")
    assert past.returncode == 1 and "future" in past.stderr
    admin = await create(data, "--user", "root", "--name", "ops", "--permission", "admin")
    found = await tokens.authenticate(admin["token"])
    assert found is not None and found[1] == {"admin"}

    kept = await create(data, "--user", "alice", "--name", "kept", "--permission",
                        "bots:write")
    assert (await gw(data, "user", "disable", "alice")).returncode == 0
    assert await tokens.authenticate(kept["token"]) is None
    assert (await gw(data, "user", "enable", "alice")).returncode == 0
    assert await tokens.authenticate(kept["token"]) is not None

    # 1.5 s after the short-lived token was made (the checks above took part of that).
    await asyncio.sleep(max(0.0, made_by + 1.5 - time.monotonic()))
    assert await tokens.authenticate(short["token"]) is None


async def test_expiries_utc_cannot_hold_are_refused(data: Path, tokens: TokenService) -> None:
    """Expiries are stored in UTC: one beyond 9999-12-31T23:59:59Z once converted (a late
    time with a negative offset) is refused, from the CLI and the service alike, and an
    offset time is stored as the same instant in UTC."""
    args = ("token", "create", "--user", "alice", "--name", "far", "--permission",
            "storage:read")
    beyond = await gw(data, *args, "--expires-at", "9999-12-31T23:59:59-23:59")
    assert beyond.returncode == 1 and "UTC can hold" in beyond.stderr
    forever = await gw(data, *args, "--expires-in", "99999999999999d")
    assert forever.returncode == 1 and "UTC can hold" in forever.stderr
    assert "Traceback" not in beyond.stderr + forever.stderr
    last = await create(data, *args[2:], "--expires-at", "9999-12-31T23:59:59+00:00")
    assert last["expires_at"] == "9999-12-31T23:59:59+00:00"
    shifted = await create(data, *args[2:], "--expires-at", "2100-01-01T00:00:00-05:00")
    assert shifted["expires_at"] == "2100-01-01T05:00:00+00:00"
    assert await tokens.authenticate(last["token"]) is not None

    west = timezone(-timedelta(hours=23, minutes=59))
    with pytest.raises(ValueError, match="UTC can hold"):
        await tokens.create("alice", "svc", ["storage:read"],
                            datetime(9999, 12, 31, 23, 59, 59, tzinfo=west))
    listed = {t.name for t in await tokens.list("alice")}
    assert "svc" not in listed and listed >= {"far"}
