"""Login sessions of the JSON API: a bearer token per login, kept only as a SHA-256.

A token is 256 random bits, so a plain SHA-256 is a sound verifier. A failed login costs
the same scrypt work whether or not the user exists, so timing does not reveal user names.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from gateway.auth.passwords import verify_password
from gateway.metadata import repo
from gateway.service.accounts import AccountService
from gateway.service.context import Context
from gateway.types import Principal

log = logging.getLogger("gateway.sessions")

SESSION_PREFIX = "gws_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionService:
    def __init__(self, ctx: Context, accounts: AccountService) -> None:
        self.ctx = ctx
        self.accounts = accounts

    async def login_password(self, username: str, password: str
                             ) -> tuple[str, datetime] | None:
        """A new session token and its expiry; None for bad credentials or a disabled user."""
        row = await self.ctx.db.read(lambda conn: repo.user_by_name(conn, username))
        stored = row.password_hash if row is not None else None
        # Always verify (against a dummy when there is nothing to verify against).
        ok = await verify_password(password, stored)
        if not ok or row is None or row.disabled:
            log.info("failed password login for a user name")
            return None
        return await self._open(int(row.id))

    async def login_keys(self, access_key: str, secret_key: str
                         ) -> tuple[str, datetime] | None:
        principal, secret = await self.accounts.lookup(access_key)
        expected = (secret or secrets.token_urlsafe(30)).encode()
        ok = hmac.compare_digest(expected, secret_key.encode())
        # A bucket-scoped key (a bot's package key) must not open a session for its user.
        if not ok or principal is None or secret is None or principal.bucket_scope:
            log.info("failed key login")
            return None
        return await self._open(principal.user_id)

    async def _open(self, user_id: int) -> tuple[str, datetime]:
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=self.ctx.settings.session_ttl_seconds)
        values = {"id": uuid.uuid4().hex, "user_id": user_id, "token_hash": _hash(token),
                  "created_at": now, "expires_at": expires_at}
        await self.ctx.db.write(lambda conn: repo.insert_session(conn, values))
        return token, expires_at

    async def authenticate(self, token: str) -> Principal | None:
        """The user behind a session token; None when it is unknown or expired, or its user
        is disabled."""
        if not token.startswith(SESSION_PREFIX):
            return None
        digest = _hash(token)

        def unit(conn: Connection) -> Principal | None:
            row = repo.session_by_hash(conn, digest)
            if row is None or row.disabled or row.expires_at <= datetime.now(UTC):
                return None
            return Principal(row.id, row.name, row.role,
                             group_ids=repo.group_ids_for_user(conn, row.id))

        return await self.ctx.db.read(unit)

    async def logout(self, token: str) -> bool:
        digest = _hash(token)
        return await self.ctx.db.write(lambda conn: repo.delete_session(conn, digest))

    async def end_user_sessions(self, user_id: int) -> int:
        return await self.ctx.db.write(lambda conn: repo.delete_user_sessions(conn, user_id))

    async def purge_expired(self) -> int:
        """Housekeeping: expired sessions are refused anyway; this only frees their rows."""
        now = datetime.now(UTC)
        count = await self.ctx.db.write(lambda conn: repo.delete_expired_sessions(conn, now))
        if count:
            log.info("removed %d expired session(s)", count)
        return count
