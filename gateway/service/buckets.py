"""Bucket operations."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway import errors
from gateway.auth.policy import require_bucket_access, require_full, require_owner
from gateway.metadata import repo
from gateway.service import versions
from gateway.service.context import Context
from gateway.service.groups import caller_grants
from gateway.service.sse import BucketEncryption
from gateway.types import BucketRecord, Principal

RESERVED_BUCKET_NAMES = frozenset({"api", "console", "healthz", "readyz", "metrics", "ws"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> None:
    """AWS's general-purpose bucket naming rules, plus the gateway's reserved names."""
    ok = (
        bool(_NAME.match(name))
        and ".." not in name and ".-" not in name and "-." not in name
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
        and name not in RESERVED_BUCKET_NAMES
    )
    if ok:
        try:
            ipaddress.ip_address(name)
            ok = False
        except ValueError:
            pass
    if not ok:
        raise errors.InvalidBucketName(fields={"BucketName": name})


class UploadAborter(Protocol):
    async def abort_bucket_uploads(self, bucket_id: int) -> int: ...


class BucketService:
    def __init__(self, ctx: Context, uploads: UploadAborter) -> None:
        self.ctx = ctx
        self.uploads = uploads

    async def create(self, principal: Principal, name: str, location: str | None = None,
                     acl: str = "private", *, versioning: bool = False) -> BucketRecord:
        if principal.is_anonymous or principal.bucket_scope is not None:
            raise errors.AccessDenied()
        validate_bucket_name(name)
        region = location or self.ctx.settings.region
        now = datetime.now(UTC)

        def unit(conn: Connection) -> BucketRecord:
            bucket = repo.insert_bucket(conn, name, principal.user_id, region, now, acl)
            if versioning:
                repo.set_bucket_versioning(conn, bucket.id, versions.ENABLED)
                bucket = replace(bucket, versioning=versions.ENABLED)
            return bucket

        try:
            return await self.ctx.db.write(unit)
        except IntegrityError:
            existing = await self.find(name)
            if existing is not None and existing.owner_id == principal.user_id:
                raise errors.BucketAlreadyOwnedByYou(fields={"BucketName": name}) from None
            raise errors.BucketAlreadyExists(fields={"BucketName": name}) from None

    async def find(self, name: str) -> BucketRecord | None:
        return await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, name))

    async def get(self, principal: Principal, name: str, *, write: bool = False) -> BucketRecord:
        bucket = await self.find(name)
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": name})
        require_bucket_access(principal, bucket, write=write,
                              grants=await caller_grants(self.ctx, principal, bucket))
        return bucket

    async def delete(self, principal: Principal, name: str) -> None:
        bucket = await self.find(name)
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": name})
        require_owner(principal, bucket)  # no grant gives this
        if await self.ctx.db.read(lambda conn: repo.bucket_has_objects(conn, bucket.id)):
            raise errors.BucketNotEmpty(fields={"BucketName": name})
        # Unfinished uploads are invisible leftovers: they go with the bucket (as MinIO).
        await self.uploads.abort_bucket_uploads(bucket.id)

        def unit(conn: Connection) -> None:
            if repo.bucket_has_objects(conn, bucket.id):
                raise errors.BucketNotEmpty(fields={"BucketName": name})
            repo.delete_bucket(conn, bucket.id)

        try:
            await self.ctx.db.write(unit)
        except IntegrityError:
            # An object committed concurrently: the foreign key refuses the delete.
            raise errors.BucketNotEmpty(fields={"BucketName": name}) from None

    async def set_acl(self, principal: Principal, name: str, acl: str) -> None:
        bucket = await self.owned(principal, name)
        await self.ctx.db.write(lambda conn: repo.set_bucket_acl(conn, bucket.id, acl))

    async def owned(self, principal: Principal, name: str) -> BucketRecord:
        """The bucket, for its owner, admins and ``full`` grantees (ACL and CORS
        configuration)."""
        bucket = await self.find(name)
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": name})
        require_full(principal, bucket, await caller_grants(self.ctx, principal, bucket))
        return bucket

    async def set_cors(self, principal: Principal, name: str,
                       rules: list[dict[str, Any]] | None) -> None:
        bucket = await self.owned(principal, name)
        await self.ctx.db.write(lambda conn: repo.set_bucket_cors(conn, bucket.id, rules))

    async def get_encryption(self, principal: Principal, name: str) -> BucketEncryption:
        """The bucket's default encryption (GetBucketEncryption); configuration, like CORS:
        owner, admins and ``full`` grantees."""
        bucket = await self.owned(principal, name)
        config = BucketEncryption.of(bucket)
        if config is None:
            raise errors.ServerSideEncryptionConfigurationNotFoundError(
                fields={"BucketName": name})
        return config

    async def set_encryption(self, principal: Principal, name: str,
                             config: BucketEncryption | None) -> None:
        """Set (or, with None, remove) the default encryption of new objects; objects
        already stored keep theirs."""
        bucket = await self.owned(principal, name)
        value = config.as_json() if config is not None else None
        if not await self.ctx.db.write(
                lambda conn: repo.set_bucket_encryption(conn, bucket.id, value)):
            raise errors.NoSuchBucket(fields={"BucketName": name})

    async def set_versioning(self, principal: Principal, name: str, state: str) -> None:
        """``Enabled`` or ``Suspended``; a bucket never goes back to unversioned. Writes
        committing meanwhile see the old state or the new one (they read it under the
        bucket's lock)."""
        if state not in versions.STATES:
            raise errors.MalformedXML()
        bucket = await self.owned(principal, name)

        def unit(conn: Connection) -> None:
            repo.lock_bucket(conn, bucket.id)
            repo.set_bucket_versioning(conn, bucket.id, state)

        await self.ctx.db.write(unit)

    async def list(self, principal: Principal) -> list[BucketRecord]:
        if principal.is_anonymous:
            raise errors.AccessDenied()
        if principal.is_admin:
            return await self.ctx.db.read(lambda conn: repo.list_buckets(conn, None))
        # Owned buckets, and those shared with the caller or one of their groups.
        visible = await self.ctx.db.read(
            lambda conn: repo.list_buckets_visible(conn, principal.user_id))
        if principal.bucket_scope is not None:  # a bot's package key sees its bucket alone
            return [b for b in visible if b.name == principal.bucket_scope]
        return visible
