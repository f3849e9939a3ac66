"""Who may do what. For now: admins everything; a member only their own buckets."""

from __future__ import annotations

from gateway.errors import AccessDenied
from gateway.types import BucketRecord, Principal


def require_bucket_access(principal: Principal, bucket: BucketRecord, *, write: bool) -> None:
    del write  # read and write grants arrive with sharing; ownership decides both today
    if principal.is_admin or bucket.owner_id == principal.user_id:
        return
    raise AccessDenied()
