"""Identities: the root admin and access-key lookup."""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.auth.credentials import PREFIX, SecretBox
from gateway.auth.passwords import hash_password
from gateway.metadata import repo
from gateway.service.context import Context
from gateway.types import Owner, Principal

ROOT_USER = "admin"
_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class RootCredentials:
    access_key: str
    secret_key: str
    generated: bool


def default_canonical_id(user_id: int) -> str:
    """A stable 64-hex id in the shape S3 clients expect, for users given none."""
    return hashlib.sha256(f"gateway-user:{user_id}".encode()).hexdigest()


def generate_access_key() -> str:
    return "GW" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


def generate_secret_key() -> str:
    return secrets.token_urlsafe(30)[:40]


def _principal_with_groups(conn: Connection, access_key: str
                           ) -> tuple[Principal, str] | None:
    found = repo.principal_and_scope_for_access_key(conn, access_key)
    if found is None:
        return None
    principal, stored = found
    return replace(principal, group_ids=repo.group_ids_for_user(conn, principal.user_id)), stored


class NotFound(ValueError):
    """A named user, key, group or grant does not exist (404 in the JSON API)."""


class AlreadyExists(ValueError):
    """The name is taken (409 in the JSON API)."""


class AccountService:
    #: Seconds a resolved access key is trusted without asking the database again.
    CACHE_TTL = 5.0

    def __init__(self, ctx: Context, box: SecretBox) -> None:
        self.ctx = ctx
        self.box = box
        self._cache: dict[str, tuple[float, Principal | None, str | None]] = {}
        self._owners: dict[int, tuple[float, Owner]] = {}

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
            # Secrets stored before encryption at rest are sealed now.
            for key, stored in repo.unsealed_secrets(conn, PREFIX):
                repo.set_secret(conn, key, self.box.seal(stored))
            if access and secret:
                if repo.access_key_row(conn, access) is None:
                    repo.insert_access_key(conn, access, user_id, self.box.seal(secret), now)
                else:
                    repo.update_access_key(conn, access, secret=self.box.seal(secret),
                                           user_id=user_id)
                return RootCredentials(access, secret, generated=False)
            if user is not None:
                return None  # first start is long past; its key was shown then
            new_access, new_secret = generate_access_key(), generate_secret_key()
            repo.insert_access_key(conn, new_access, user_id, self.box.seal(new_secret), now)
            return RootCredentials(new_access, new_secret, generated=True)

        try:
            return await self.ctx.db.write(unit)
        except IntegrityError:
            # Another worker process created the root user at the same moment.
            return await self.ctx.db.write(unit)

    async def owner(self, user_id: int) -> Owner:
        """The canonical id and display name S3 answers show for a user (cached)."""
        hit = self._owners.get(user_id)
        clock = time.monotonic()
        if hit is not None and hit[0] > clock:
            return hit[1]
        row = await self.ctx.db.read(lambda conn: repo.user_owner(conn, user_id))
        if row is None:
            owner = Owner(default_canonical_id(user_id), str(user_id))
        else:
            owner = Owner(row.canonical_id or default_canonical_id(user_id),
                          row.display_name or row.name)
        if len(self._owners) > 10_000:
            self._owners.clear()
        self._owners[user_id] = (clock + self.CACHE_TTL, owner)
        return owner

    async def lookup(self, access_key: str) -> tuple[Principal | None, str | None]:
        """The principal and secret for an access key, cached briefly (hot path)."""
        hit = self._cache.get(access_key)
        clock = time.monotonic()
        if hit is not None and hit[0] > clock:
            return hit[1], hit[2]
        found = await self.ctx.db.read(lambda conn: _principal_with_groups(conn, access_key))
        principal, stored = found if found else (None, None)
        secret = self.box.open(stored) if stored is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access_key] = (clock + self.CACHE_TTL, principal, secret)
        return principal, secret

    # -- management (CLI and admin API) ---------------------------------------------------

    async def add_user(self, name: str, *, role: str = "member",
                       display_name: str | None = None, email: str | None = None,
                       canonical_id: str | None = None, password: str | None = None) -> int:
        if role not in ("admin", "member"):
            raise ValueError(f"role must be admin or member, not {role!r}")
        if not name or len(name) > 128:
            raise ValueError("a user name has 1 to 128 characters")
        hashed = await hash_password(password) if password is not None else None
        now = datetime.now(UTC)

        def unit(conn: Connection) -> int:
            user_id = repo.insert_user(conn, name, role, now, display_name=display_name,
                                       email=email, canonical_id=canonical_id)
            if hashed is not None:
                repo.set_password_hash(conn, name, hashed)
            return user_id

        try:
            return await self.ctx.db.write(unit)
        except IntegrityError:
            raise AlreadyExists(f"user {name!r} exists already") from None

    async def list_users(self) -> list[dict[str, Any]]:
        rows = await self.ctx.db.read(repo.list_users)
        return [{"name": r.name, "role": r.role, "display_name": r.display_name,
                 "email": r.email, "canonical_id": r.canonical_id, "disabled": r.disabled,
                 "created_at": r.created_at.isoformat()} for r in rows]

    async def set_user_disabled(self, name: str, disabled: bool) -> None:
        if not await self.ctx.db.write(lambda conn: repo.set_user_disabled(conn, name,
                                                                           disabled)):
            raise NotFound(f"no user {name!r}")
        self._cache.clear()

    async def create_key(self, user_name: str, access_key: str | None = None,
                         secret_key: str | None = None, *,
                         bucket_scope: str | None = None) -> tuple[str, str]:
        """A new S3 key for a user; known keys can be imported. The secret is returned
        once and stored encrypted. ``bucket_scope``: the key reaches that bucket alone."""
        access = access_key or generate_access_key()
        secret = secret_key or generate_secret_key()
        if not 3 <= len(access) <= 128 or "/" in access or not access.isprintable():
            raise ValueError("an access key has 3 to 128 printable characters, no '/'")
        if len(secret) < 8:
            raise ValueError("a secret key has at least 8 characters")
        now = datetime.now(UTC)

        def unit(conn: Connection) -> None:
            user = repo.user_by_name(conn, user_name)
            if user is None:
                raise NotFound(f"no user {user_name!r}")
            repo.insert_scoped_access_key(conn, access, int(user.id), self.box.seal(secret),
                                          now, bucket_scope)

        try:
            await self.ctx.db.write(unit)
        except IntegrityError:
            raise AlreadyExists(f"access key {access!r} exists already") from None
        return access, secret

    async def list_keys(self, user_name: str | None = None) -> list[dict[str, Any]]:
        def unit(conn: Connection) -> list[Any]:
            user_id = None
            if user_name is not None:
                user = repo.user_by_name(conn, user_name)
                if user is None:
                    raise NotFound(f"no user {user_name!r}")
                user_id = int(user.id)
            return repo.list_access_keys(conn, user_id)

        rows = await self.ctx.db.read(unit)
        return [{"access_key": r.access_key, "user": r.user, "enabled": r.enabled,
                 "created_at": r.created_at.isoformat()} for r in rows]

    def invalidate(self) -> None:
        """Forget cached principals (after a change to roles or group memberships)."""
        self._cache.clear()

    async def user(self, name: str) -> dict[str, Any]:
        for user in await self.list_users():
            if user["name"] == name:
                return user
        raise NotFound(f"no user {name!r}")

    async def set_password(self, name: str, password: str | None) -> int:
        """Set (None: remove) a user's login password; their open sessions end. Returns
        the user's id."""
        hashed = await hash_password(password) if password is not None else None

        def unit(conn: Connection) -> int:
            user_id = repo.set_password_hash(conn, name, hashed)
            if user_id is None:
                raise NotFound(f"no user {name!r}")
            repo.delete_user_sessions(conn, user_id)
            return user_id

        return await self.ctx.db.write(unit)

    async def set_role(self, name: str, role: str) -> None:
        if role not in ("admin", "member"):
            raise ValueError(f"role must be admin or member, not {role!r}")
        if not await self.ctx.db.write(lambda conn: repo.set_user_role(conn, name, role)):
            raise NotFound(f"no user {name!r}")
        self._cache.clear()

    async def set_key_enabled(self, access_key: str, enabled: bool) -> None:
        if not await self.ctx.db.write(
                lambda conn: repo.set_access_key_enabled(conn, access_key, enabled)):
            raise NotFound(f"no access key {access_key!r}")
        self._cache.pop(access_key, None)

    async def signing_credentials(self, user_id: int) -> tuple[str, str] | None:
        """One enabled S3 key of the user (the oldest that is not scoped to one bucket) and
        its secret, to presign URLs for them; None when they have none."""
        found = await self.ctx.db.read(lambda conn: repo.oldest_unscoped_key(conn, user_id))
        if found is None:
            return None
        return found[0], self.box.open(found[1])
