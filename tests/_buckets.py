"""Cleaning up after tests that create buckets."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


def remove_bucket(s3: Any, name: str, *, missing_ok: bool = False) -> None:
    """Empty the bucket ``name`` and delete it (a bucket already gone is fine with
    ``missing_ok``)."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)
    except ClientError as exc:
        if not (missing_ok and exc.response["Error"]["Code"] == "NoSuchBucket"):
            raise
