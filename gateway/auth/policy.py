"""Who may do what.

Today: admins everything; an owner their own buckets; anonymous callers only *read*, and
only what a canned ACL made public. A bucket's ``public-read`` lets anyone list it and read
its objects (what users of MinIO's "download" policy and of a public bucket expect); an
object's ``public-read`` opens that object alone. Grants to other users and groups arrive
with accounts.
"""

from __future__ import annotations

from gateway.errors import AccessDenied, InvalidArgument
from gateway.types import BucketRecord, ObjectRecord, Principal

CANNED_ACLS = frozenset({
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write",
})
PUBLIC_READ = frozenset({"public-read", "public-read-write"})


def validate_acl(value: str | None) -> str:
    if value is None or value == "":
        return "private"
    if value not in CANNED_ACLS:
        raise InvalidArgument(f"{value!r} is not a canned ACL", name="x-amz-acl", value=value)
    return value


def is_owner(principal: Principal, bucket: BucketRecord) -> bool:
    return principal.is_admin or (not principal.is_anonymous
                                  and bucket.owner_id == principal.user_id)


def require_bucket_access(principal: Principal, bucket: BucketRecord, *, write: bool) -> None:
    if is_owner(principal, bucket):
        return
    if principal.is_anonymous and not write and bucket.acl in PUBLIC_READ:
        return
    raise AccessDenied()


def require_owner(principal: Principal, bucket: BucketRecord) -> None:
    """ACLs and CORS rules are the owner's to read and change."""
    if not is_owner(principal, bucket):
        raise AccessDenied()


def may_read_object(principal: Principal, bucket: BucketRecord,
                    obj: ObjectRecord | None) -> bool:
    if is_owner(principal, bucket) or bucket.acl in PUBLIC_READ:
        return True
    return principal.is_anonymous and obj is not None and obj.acl in PUBLIC_READ
