"""Identities: the root admin and access-key lookup."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.metadata import repo
from gateway.service.context import Context
from gateway.types import Principal

ROOT_USER = "admin"
_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class RootCredentials:
    access_key: str
    secret_key: str
    generated: bool


def generate_access_key() -> str:
    return "GW" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


def generate_secret_key() -> str:
    return secrets.token_urlsafe(30)[:40]


class AccountService:
    #: Seconds a resolved access key is trusted without asking the database again.
    CACHE_TTL = 5.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cache: dict[str, tuple[float, Principal | None, str | None]] = {}

    async def ensure_root(self) -> RootCredentials | None:
        """The first admin and its key exist. Returns credentials only when they were
        generated now (to be shown once) or given by the settings."""
        access = self.ctx.settings.root_access_key
        secret = self.ctx.settings.root_secret_key
        now = datetime.now(UTC)

        def unit(conn: Connection) -> RootCredentials | None:
            user = repo.user_by_name(conn, ROOT_USER)
            user_id = repo.insert_user(conn, ROOT_USER, "admin", now) if user is None \
                else int(user.id)
            if access and secret:
                if repo.access_key_row(conn, access) is None:
                    repo.insert_access_key(conn, access, user_id, secret, now)
                else:
                    repo.update_access_key(conn, access, secret=secret, user_id=user_id)
                return RootCredentials(access, secret, generated=False)
            if user is not None:
                return None  # first start is long past; its key was shown then
            new_access, new_secret = generate_access_key(), generate_secret_key()
            repo.insert_access_key(conn, new_access, user_id, new_secret, now)
            return RootCredentials(new_access, new_secret, generated=True)

        try:
            return await self.ctx.db.write(unit)
        except IntegrityError:
            # Another worker process created the root user at the same moment.
            return await self.ctx.db.write(unit)

    async def user_name(self, user_id: int) -> str:
        name = await self.ctx.db.read(lambda conn: repo.user_name(conn, user_id))
        return name or str(user_id)

    async def lookup(self, access_key: str) -> tuple[Principal | None, str | None]:
        """The principal and secret for an access key, cached briefly (hot path)."""
        hit = self._cache.get(access_key)
        clock = time.monotonic()
        if hit is not None and hit[0] > clock:
            return hit[1], hit[2]
        found = await self.ctx.db.read(
            lambda conn: repo.principal_for_access_key(conn, access_key))
        principal, secret = found if found else (None, None)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access_key] = (clock + self.CACHE_TTL, principal, secret)
        return principal, secret
