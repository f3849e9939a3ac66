"""Groups of users, and grants on buckets to users and groups.

Management errors are ``ValueError`` subclasses (the CLI prints them; the JSON API maps
:class:`NotFound` to 404, :class:`AlreadyExists` to 409 and the rest to a validation error).
Bucket errors stay gateway errors (``NoSuchBucket``, ``AccessDenied``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway import errors
from gateway.auth.policy import NO_GRANTS, needs_grants, require_full, validate_permission
from gateway.metadata import repo
from gateway.service.accounts import AlreadyExists, NotFound
from gateway.service.context import Context
from gateway.types import BucketRecord, Principal

GRANTEE_TYPES = ("user", "group")
__all__ = ["AlreadyExists", "GroupService", "NotFound", "caller_grants"]


async def caller_grants(ctx: Context, principal: Principal,
                        bucket: BucketRecord) -> frozenset[str]:
    """The permissions the caller holds on the bucket through grants. Owners, admins and
    anonymous callers cost no query (grants cannot change what they may do)."""
    if not needs_grants(principal, bucket):
        return NO_GRANTS
    return await ctx.db.read(
        lambda conn: repo.grant_permissions(conn, bucket.id, principal.user_id))


def _validate_group_name(name: str) -> None:
    if not name or len(name) > 128 or not name.isprintable() or "/" in name:
        raise ValueError("a group name has 1 to 128 printable characters, no '/'")


class GroupService:
    def __init__(self, ctx: Context,
                 on_membership_change: Callable[[], None] | None = None) -> None:
        self.ctx = ctx
        #: Drops cached principals (their ``group_ids``) when memberships change.
        self._changed = on_membership_change or (lambda: None)

    # -- groups ------------------------------------------------------------------------------

    async def create_group(self, name: str) -> int:
        _validate_group_name(name)
        now = datetime.now(UTC)
        try:
            return await self.ctx.db.write(lambda conn: repo.insert_group(conn, name, now))
        except IntegrityError:
            raise AlreadyExists(f"group {name!r} exists already") from None

    async def list_groups(self) -> list[dict[str, Any]]:
        rows = await self.ctx.db.read(repo.list_groups)
        return [{"name": r.name, "members": members, "created_at": r.created_at.isoformat()}
                for r, members in rows]

    async def get_group(self, name: str) -> dict[str, Any]:
        for group in await self.list_groups():
            if group["name"] == name:
                return group
        raise NotFound(f"no group {name!r}")

    async def delete_group(self, name: str) -> None:
        def unit(conn: Connection) -> None:
            repo.delete_group(conn, _group_id(conn, name))

        await self.ctx.db.write(unit)
        self._changed()

    async def add_member(self, group: str, user: str) -> bool:
        """False when the user was a member already."""
        added = await self.ctx.db.write(lambda conn: repo.add_group_member(
            conn, _group_id(conn, group), _user_id(conn, user)))
        self._changed()
        return added

    async def remove_member(self, group: str, user: str) -> None:
        def unit(conn: Connection) -> None:
            if not repo.remove_group_member(conn, _group_id(conn, group),
                                            _user_id(conn, user)):
                raise NotFound(f"{user!r} is not a member of {group!r}")

        await self.ctx.db.write(unit)
        self._changed()

    async def groups_of(self, user_id: int) -> list[str]:
        return await self.ctx.db.read(lambda conn: repo.group_names_for_user(conn, user_id))

    # -- grants --------------------------------------------------------------------------------
    # ``principal`` None: an administrator at the shell (the CLI) — no access check.
    # Otherwise the caller must be the bucket's owner, an admin, or hold ``full`` on it.

    async def _managed_bucket(self, bucket_name: str, principal: Principal | None
                              ) -> BucketRecord:
        bucket = await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, bucket_name))
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": bucket_name})
        if principal is not None:
            require_full(principal, bucket, await caller_grants(self.ctx, principal, bucket))
        return bucket

    async def grant(self, bucket_name: str, grantee_type: str, grantee: str,
                    permission: str, *, principal: Principal | None = None) -> dict[str, Any]:
        """Create or change the grantee's grant on the bucket."""
        _check_grantee_type(grantee_type)
        try:
            validate_permission(permission)
        except errors.InvalidArgument as exc:
            raise ValueError(exc.message) from None
        bucket = await self._managed_bucket(bucket_name, principal)
        now = datetime.now(UTC)

        def unit(conn: Connection) -> None:
            grantee_id = _grantee_id(conn, grantee_type, grantee)
            repo.set_grant(conn, bucket.id, grantee_type, grantee_id, permission, now)

        await self.ctx.db.write(unit)
        return {"bucket": bucket.name, "grantee_type": grantee_type, "grantee": grantee,
                "permission": permission}

    async def revoke(self, bucket_name: str, grantee_type: str, grantee: str, *,
                     principal: Principal | None = None) -> None:
        _check_grantee_type(grantee_type)
        bucket = await self._managed_bucket(bucket_name, principal)

        def unit(conn: Connection) -> None:
            grantee_id = _grantee_id(conn, grantee_type, grantee)
            if not repo.delete_grant(conn, bucket.id, grantee_type, grantee_id):
                raise NotFound(f"{grantee_type} {grantee!r} holds no grant on {bucket.name!r}")

        await self.ctx.db.write(unit)

    async def list_grants(self, bucket_name: str, *, principal: Principal | None = None
                          ) -> list[dict[str, Any]]:
        bucket = await self._managed_bucket(bucket_name, principal)
        rows = await self.ctx.db.read(lambda conn: repo.list_grants(conn, bucket.id))
        return [{"bucket": bucket.name, "grantee_type": r.grantee_type, "grantee": r.grantee,
                 "permission": r.permission, "created_at": r.created_at.isoformat()}
                for r in rows]


def _check_grantee_type(value: str) -> None:
    if value not in GRANTEE_TYPES:
        raise ValueError(f"a grantee is a user or a group, not {value!r}")


def _group_id(conn: Connection, name: str) -> int:
    row = repo.group_by_name(conn, name)
    if row is None:
        raise NotFound(f"no group {name!r}")
    return int(row.id)


def _user_id(conn: Connection, name: str) -> int:
    row = repo.user_by_name(conn, name)
    if row is None:
        raise NotFound(f"no user {name!r}")
    return int(row.id)


def _grantee_id(conn: Connection, grantee_type: str, name: str) -> int:
    return _user_id(conn, name) if grantee_type == "user" else _group_id(conn, name)
