"""API tokens: named, with permissions and an expiry; shown once, kept only as a hash.

A token is 256 random bits, so a plain SHA-256 is a sound verifier (no password-style
stretching needed). Clients send it Base64-encoded in ``X-Api-Key``, as the API reference
says; the raw token is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from gateway.metadata import repo
from gateway.service.context import Context
from gateway.types import Principal

PERMISSIONS = ("storage:read", "storage:write", "bots:read", "bots:write", "admin")
TOKEN_PREFIX = "gwt_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    user: str
    name: str
    permissions: tuple[str, ...]
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "name": self.name,
                "permissions": list(self.permissions), "prefix": self.prefix,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def utc_expiry(at: datetime) -> datetime:
    """``at`` in UTC (naive means UTC); ValueError when UTC cannot hold it (beyond year
    9999, as ``9999-12-31T23:59:59-01:00`` is)."""
    try:
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("an expiry must be a time UTC can hold (years 1 to 9999), not "
                         f"{at.isoformat()}") from None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def decode_api_key(header: str) -> str:
    """``X-Api-Key`` carries the token Base64-encoded; a raw token is accepted as well."""
    value = header.strip()
    if value.startswith(TOKEN_PREFIX):
        return value
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii").strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return value
    return decoded


class TokenService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create(self, user_name: str, name: str, permissions: list[str],
                     expires_at: datetime | None) -> tuple[TokenInfo, str]:
        perms = tuple(dict.fromkeys(permissions))
        if not perms:
            raise ValueError("a token needs at least one permission")
        unknown = [p for p in perms if p not in PERMISSIONS]
        if unknown:
            raise ValueError(f"unknown permission(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(PERMISSIONS)}")
        if not name or len(name) > 128:
            raise ValueError("a token name has 1 to 128 characters")
        now = datetime.now(UTC)
        if expires_at is not None:
            expires_at = utc_expiry(expires_at)
        if expires_at is not None and expires_at <= now:
            raise ValueError("a token must expire in the future")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(uuid.uuid4().hex, user_name, name, perms, token[:12], now,
                         expires_at, None)

        def unit(conn: Connection) -> None:
            user = repo.user_by_name(conn, user_name)
            if user is None:
                raise ValueError(f"no user {user_name!r}")
            if "admin" in perms and user.role != "admin":
                raise ValueError("only admins can hold tokens with the admin permission")
            repo.insert_token(conn, {
                "id": info.id, "user_id": user.id, "name": name, "permissions": list(perms),
                "token_hash": _hash(token), "token_prefix": info.prefix, "created_at": now,
                "expires_at": expires_at, "revoked_at": None})

        await self.ctx.db.write(unit)
        return info, token

    async def list(self, user_name: str | None = None) -> list[TokenInfo]:
        rows = await self.ctx.db.read(lambda conn: repo.list_tokens(conn, user_name))
        return [TokenInfo(r.id, r.user_name, r.name, tuple(r.permissions), r.token_prefix,
                          r.created_at, r.expires_at, r.revoked_at) for r in rows]

    async def revoke(self, token_id: str) -> None:
        now = datetime.now(UTC)
        if not await self.ctx.db.write(lambda conn: repo.revoke_token(conn, token_id, now)):
            raise ValueError(f"no active token {token_id!r}")

    async def authenticate(self, api_key: str) -> tuple[Principal, frozenset[str]] | None:
        """The user and permissions behind an ``X-Api-Key`` value; None when the token is
        unknown, revoked or expired, or its user is disabled."""
        digest = _hash(decode_api_key(api_key))

        def unit(conn: Connection) -> tuple[Principal, frozenset[str]] | None:
            row = repo.token_by_hash(conn, digest)
            if row is None or row.revoked_at is not None or row.disabled:
                return None
            if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
                return None
            return (Principal(row.id, row.name, row.role,
                              group_ids=repo.group_ids_for_user(conn, row.id)),
                    frozenset(row.permissions))

        return await self.ctx.db.read(unit)
