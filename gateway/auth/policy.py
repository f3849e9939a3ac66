"""Who may do what.

Admins may do everything; an owner everything on their own buckets. Other users act through
*grants* on a bucket, to them or to one of their groups: ``read`` (list the bucket, read its
objects, copy from it), ``write`` (read, plus put, delete, copy into, multipart) and
``full`` (write, plus the bucket's ACL, CORS configuration and grants, and object ACLs).
Deleting a bucket stays its owner's (and admins').

A *bucket-scoped* access key (``Principal.bucket_scope``, a bot's package key) reaches its
one bucket and nothing else, whatever its user may do otherwise: every other bucket is
AccessDenied (public ones too), and so are the bucket-administration operations (ACLs, CORS,
grants, deleting the bucket), even on its own bucket.

Anonymous callers only *read*, and only what a canned ACL made public. A bucket's
``public-read`` lets anyone list it and read its objects (what users of MinIO's "download"
policy and of a public bucket expect); an object's ``public-read`` opens that object alone.

These functions are pure: the service loads the caller's grants (only when
:func:`needs_grants` says they matter, so owners and admins pay no query) and passes them.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.errors import AccessDenied, InvalidArgument
from gateway.types import BucketRecord, ObjectRecord, Principal

CANNED_ACLS = frozenset({
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write",
})
PUBLIC_READ = frozenset({"public-read", "public-read-write"})

READ, WRITE, FULL = "read", "write", "full"
#: Grant permissions, weakest first: each includes the ones before it.
PERMISSIONS = (READ, WRITE, FULL)
_RANK = {name: rank for rank, name in enumerate(PERMISSIONS, start=1)}
NO_GRANTS: frozenset[str] = frozenset()


def validate_acl(value: str | None) -> str:
    if value is None or value == "":
        return "private"
    if value not in CANNED_ACLS:
        raise InvalidArgument(f"{value!r} is not a canned ACL", name="x-amz-acl", value=value)
    return value


def validate_permission(value: str) -> str:
    if value not in _RANK:
        raise InvalidArgument(f"a permission is one of {', '.join(PERMISSIONS)}, not {value!r}",
                              name="permission", value=value)
    return value


def in_scope(principal: Principal, bucket: BucketRecord) -> bool:
    """Whether the caller's access key may reach the bucket at all (unscoped keys reach
    every bucket; a scoped key its own)."""
    return principal.bucket_scope is None or principal.bucket_scope == bucket.name


def is_owner(principal: Principal, bucket: BucketRecord) -> bool:
    if not in_scope(principal, bucket):
        return False
    return principal.is_admin or (not principal.is_anonymous
                                  and bucket.owner_id == principal.user_id)


def needs_grants(principal: Principal, bucket: BucketRecord) -> bool:
    """Whether the caller's grants on the bucket can change a decision (not for owners,
    admins, anonymous callers or keys scoped to another bucket)."""
    return (not principal.is_anonymous and in_scope(principal, bucket)
            and not is_owner(principal, bucket))


def holds(grants: Collection[str], needed: str) -> bool:
    """Whether any of the grants includes the ``needed`` permission."""
    rank = _RANK[needed]
    return any(_RANK.get(g, 0) >= rank for g in grants)


def opens_access(acl: str) -> bool:
    """A canned ACL that lets others read: setting it is a ``full`` matter."""
    return acl in PUBLIC_READ


def require_bucket_access(principal: Principal, bucket: BucketRecord, *, write: bool,
                          grants: Collection[str] = NO_GRANTS) -> None:
    if not in_scope(principal, bucket):
        raise AccessDenied()
    if is_owner(principal, bucket) or (not write and bucket.acl in PUBLIC_READ):
        return
    if not principal.is_anonymous and holds(grants, WRITE if write else READ):
        return
    raise AccessDenied()


def require_full(principal: Principal, bucket: BucketRecord,
                 grants: Collection[str] = NO_GRANTS) -> None:
    """The bucket's ACL, CORS rules, grants and its objects' ACLs: owner, admins, ``full``
    (never a scoped key)."""
    if principal.bucket_scope is not None:
        raise AccessDenied()
    if is_owner(principal, bucket) or (not principal.is_anonymous and holds(grants, FULL)):
        return
    raise AccessDenied()


def require_owner(principal: Principal, bucket: BucketRecord) -> None:
    """What no grant gives: deleting the bucket (nor does a scoped key)."""
    if principal.bucket_scope is not None or not is_owner(principal, bucket):
        raise AccessDenied()


def may_read_object(principal: Principal, bucket: BucketRecord,
                    obj: ObjectRecord | None, grants: Collection[str] = NO_GRANTS) -> bool:
    if not in_scope(principal, bucket):
        return False
    if is_owner(principal, bucket) or bucket.acl in PUBLIC_READ:
        return True
    if obj is not None and obj.acl in PUBLIC_READ:
        return True
    return not principal.is_anonymous and holds(grants, READ)
