"""Bucket operations over real HTTP with boto3: the answers S3 gives, errors included."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests._buckets import remove_bucket
from tests._errors import client_error


def unique(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def cleanup(s3: Any) -> Iterator[list[str]]:
    """Buckets a test created by hand; removed (with their objects) afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ClientError):
            remove_bucket(s3, name)


# -- ListBuckets --------------------------------------------------------------------------


def test_list_buckets_contains_created_buckets_and_owner(s3: Any, cleanup: list[str]) -> None:
    names = [unique("lb"), unique("lb")]
    for name in names:
        s3.create_bucket(Bucket=name)
        cleanup.append(name)
    listed = s3.list_buckets()
    assert listed["ResponseMetadata"]["HTTPStatusCode"] == 200
    found = {b["Name"]: b for b in listed["Buckets"]}
    for name in names:
        assert name in found
        assert found[name]["CreationDate"] is not None
    assert "Owner" in listed
    assert listed["Owner"].get("ID")


def test_list_buckets_is_sorted_by_name(s3: Any, cleanup: list[str]) -> None:
    base = uuid.uuid4().hex[:10]
    for name in (f"zz-{base}", f"aa-{base}", f"mm-{base}"):
        s3.create_bucket(Bucket=name)
        cleanup.append(name)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == sorted(names)
    assert len(names) == len(set(names))


# -- CreateBucket ---------------------------------------------------------------------------


def test_create_bucket_without_configuration(s3: Any, cleanup: list[str]) -> None:
    name = unique()
    response = s3.create_bucket(Bucket=name)
    cleanup.append(name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response.get("Location") == f"/{name}"
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    # us-east-1 is reported as an empty LocationConstraint, which boto3 turns into None.
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None


def test_create_bucket_with_location_constraint(s3: Any, cleanup: list[str]) -> None:
    name = unique()
    response = s3.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    cleanup.append(name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"


def test_create_bucket_with_dots_in_name(s3: Any, cleanup: list[str]) -> None:
    name = f"mybot-{uuid.uuid4().hex[:8]}.gbai"
    s3.create_bucket(Bucket=name)
    cleanup.append(name)
    s3.head_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="mybot.gbkb/faq.txt", Body=b"hello")
    assert s3.get_object(Bucket=name, Key="mybot.gbkb/faq.txt")["Body"].read() == b"hello"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]]
    assert keys == ["mybot.gbkb/faq.txt"]
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", [
    "abc", "a" * 63, "0ab", "my.bucket.name", "a-b-c", "bucket9", "9bucket",
])
def test_create_bucket_valid_names(s3: Any, cleanup: list[str], name: str) -> None:
    # Names that are valid per the S3 rules; made unique without changing their shape.
    suffix = uuid.uuid4().hex[:6]
    name = (name[: 63 - len(suffix)] + suffix) if len(name) > 3 else name + suffix
    s3.create_bucket(Bucket=name)
    cleanup.append(name)
    s3.head_bucket(Bucket=name)


@pytest.mark.parametrize("name", [
    "UpperCase-bucket",
    "ab",
    "a",
    "a" * 64,
    "192.168.1.1",
    "10.0.0.255",
    "my..bucket",
    "-leading-dash",
    "trailing-dash-",
    ".leading-dot",
    "trailing-dot.",
    "under_score",
    "my.-bucket",
    "my-.bucket",
    "xn--punycode",
    "bucket-s3alias",
    "bucket--ol-s3",
    "sthree-bucket",
])
def test_create_bucket_invalid_names(s3: Any, cleanup: list[str], name: str) -> None:
    cleanup.append(name)  # in case the server wrongly accepts it
    code, status = client_error(s3.create_bucket, Bucket=name)
    assert (code, status) == ("InvalidBucketName", 400)


@pytest.mark.parametrize("name", ["api", "console", "healthz", "readyz", "metrics", "ws"])
def test_create_bucket_reserved_names(s3: Any, cleanup: list[str], name: str) -> None:
    cleanup.append(name)
    code, status = client_error(s3.create_bucket, Bucket=name)
    assert (code, status) == ("InvalidBucketName", 400)


def test_create_bucket_again_is_already_owned_by_you(s3: Any, cleanup: list[str]) -> None:
    name = unique()
    s3.create_bucket(Bucket=name)
    cleanup.append(name)
    s3.put_object(Bucket=name, Key="keep", Body=b"still here")
    code, status = client_error(s3.create_bucket, Bucket=name)
    assert (code, status) == ("BucketAlreadyOwnedByYou", 409)
    # The failed create changed nothing.
    assert s3.get_object(Bucket=name, Key="keep")["Body"].read() == b"still here"


# -- HeadBucket -----------------------------------------------------------------------------


def test_head_bucket_existing(s3: Any, bucket: str) -> None:
    response = s3.head_bucket(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("x-amz-bucket-region") == "us-east-1"
    assert "x-amz-request-id" in headers


def test_head_bucket_missing(s3: Any) -> None:
    code, status = client_error(s3.head_bucket, Bucket=unique("missing"))
    assert (code, status) == ("404", 404)


# -- DeleteBucket ---------------------------------------------------------------------------


def test_delete_empty_bucket(s3: Any) -> None:
    name = unique()
    s3.create_bucket(Bucket=name)
    response = s3.delete_bucket(Bucket=name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    code, status = client_error(s3.head_bucket, Bucket=name)
    assert (code, status) == ("404", 404)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # The name can be used again.
    s3.create_bucket(Bucket=name)
    s3.delete_bucket(Bucket=name)


def test_delete_non_empty_bucket(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dir/file", Body=b"x")
    code, status = client_error(s3.delete_bucket, Bucket=bucket)
    assert (code, status) == ("BucketNotEmpty", 409)
    s3.head_bucket(Bucket=bucket)
    assert s3.get_object(Bucket=bucket, Key="dir/file")["Body"].read() == b"x"
    s3.delete_object(Bucket=bucket, Key="dir/file")
    # After the last object is gone the bucket can be deleted (the fixture does it).


def test_delete_bucket_after_its_objects_are_deleted(s3: Any) -> None:
    name = unique()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a", Body=b"1")
    s3.put_object(Bucket=name, Key="b/c", Body=b"2")
    s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "a"}, {"Key": "b/c"}]})
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_missing_bucket(s3: Any) -> None:
    code, status = client_error(s3.delete_bucket, Bucket=unique("missing"))
    assert (code, status) == ("NoSuchBucket", 404)


# -- GetBucketLocation / GetBucketVersioning ------------------------------------------------


def test_get_bucket_location_missing_bucket(s3: Any) -> None:
    code, status = client_error(s3.get_bucket_location, Bucket=unique("missing"))
    assert (code, status) == ("NoSuchBucket", 404)


def test_get_bucket_versioning_of_new_bucket(s3: Any, bucket: str) -> None:
    response = s3.get_bucket_versioning(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "Status" not in response
    assert "MFADelete" not in response


def test_operations_on_missing_bucket(s3: Any) -> None:
    name = unique("missing")
    assert client_error(s3.list_objects_v2, Bucket=name) == ("NoSuchBucket", 404)
    assert client_error(s3.list_objects, Bucket=name) == ("NoSuchBucket", 404)
    assert client_error(s3.get_object, Bucket=name, Key="k") == ("NoSuchBucket", 404)
    assert client_error(s3.head_object, Bucket=name, Key="k") == ("404", 404)
    assert client_error(s3.delete_object, Bucket=name, Key="k") == ("NoSuchBucket", 404)


def test_put_object_into_missing_bucket(s3: Any) -> None:
    name = unique("missing")
    assert client_error(s3.put_object, Bucket=name, Key="k", Body=b"x") == ("NoSuchBucket", 404)
    # The connection the error came back on must still be usable for the next request.
    assert client_error(s3.get_object, Bucket=name, Key="k") == ("NoSuchBucket", 404)
