"""Property tests against the session's real server: any valid key and any header-safe
user metadata round-trip exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Any character but surrogates and the C0 controls and DEL.
KEY_CHARS = st.characters(blacklist_categories=("Cs",),
                          blacklist_characters=[chr(c) for c in range(0x20)] + ["\x7f"])
KEYS = st.text(KEY_CHARS, min_size=1, max_size=200).filter(lambda k: len(k.encode()) <= 1024)

META_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30)
META_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
    str.strip)
METADATA = st.dictionaries(META_NAME, META_VALUE, max_size=8)

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def prop_bucket(s3: Any) -> Iterator[str]:
    name = f"prop-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    # One by one: keys may hold characters an XML DeleteObjects body cannot carry.
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@SETTINGS
@given(key=KEYS, data=st.binary(max_size=64))
def test_any_key_round_trips(s3: Any, prop_bucket: str, key: str, data: bytes) -> None:
    s3.put_object(Bucket=prop_bucket, Key=key, Body=data)
    try:
        assert s3.get_object(Bucket=prop_bucket, Key=key)["Body"].read() == data
        assert s3.head_object(Bucket=prop_bucket, Key=key)["ContentLength"] == len(data)
        listed = s3.list_objects_v2(Bucket=prop_bucket, Prefix=key)
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert key in keys
        assert all(k.startswith(key) for k in keys)
        assert listed["Prefix"] == key
        exact = s3.list_objects_v2(Bucket=prop_bucket, Prefix=key, MaxKeys=1)
        assert exact["Contents"][0]["Key"] == key
        v1 = s3.list_objects(Bucket=prop_bucket, Prefix=key, MaxKeys=1)
        assert v1["Contents"][0]["Key"] == key
    finally:
        s3.delete_object(Bucket=prop_bucket, Key=key)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=prop_bucket, Prefix=key).get(
        "Contents", [])] == []


@SETTINGS
@given(metadata=METADATA)
def test_any_metadata_round_trips(s3: Any, prop_bucket: str,
                                  metadata: dict[str, str]) -> None:
    s3.put_object(Bucket=prop_bucket, Key="meta", Body=b"m", Metadata=metadata)
    assert s3.head_object(Bucket=prop_bucket, Key="meta")["Metadata"] == metadata
    assert s3.get_object(Bucket=prop_bucket, Key="meta")["Metadata"] == metadata
    s3.copy_object(Bucket=prop_bucket, Key="meta-copy",
                   CopySource={"Bucket": prop_bucket, "Key": "meta"})
    assert s3.head_object(Bucket=prop_bucket, Key="meta-copy")["Metadata"] == metadata
