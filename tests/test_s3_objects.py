"""Object operations over real HTTP with boto3: round trips, headers, keys, delete, copy,
ranges, response overrides and checksums, success and error paths."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from tests._errors import client_error

#: fs, and the s3:// backend on moto and on a second gateway, and fs with its metadata on
#: PostgreSQL (tests/conftest.py): each test runs on those whose difference it can show.
#: Where the bytes go through the blob store (ranges, copies, large and empty bodies, a body
#: refused at its end): the blob backends; where keys, metadata, timestamps and checksums are
#: stored and looked up: both databases; what is answered from the request alone or from
#: what the others cover (validation, errors, overrides): fs only. Round trips, overwrites,
#: copies and bulk deletes run on all four.
pytestmark = pytest.mark.upstreams
BLOBS = pytest.mark.upstreams("fs", "s3-moto", "s3-gateway")
DATABASE = pytest.mark.upstreams("fs", "postgresql")
GATEWAY_ONLY = pytest.mark.upstreams("fs")

ALPHABET = b"abcdefghijklmnopqrstuvwxyz"


def quoted_md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def expected_checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "CRC32":
        return b64(zlib.crc32(data).to_bytes(4, "big"))
    if algorithm == "CRC32C":
        return b64(crt.crc32c(data).to_bytes(4, "big"))
    if algorithm == "CRC64NVME":
        return b64(crt.crc64nvme(data).to_bytes(8, "big"))
    if algorithm == "SHA1":
        return b64(hashlib.sha1(data).digest())
    if algorithm == "SHA256":
        return b64(hashlib.sha256(data).digest())
    raise AssertionError(algorithm)


def body(s3: Any, bucket: str, key: str, **kwargs: Any) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    return data


def list_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


# -- PutObject / GetObject / HeadObject ------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"x", b"hello world\n", os.urandom(70_000)],
                         ids=["empty", "one-byte", "text", "70k-random"])
def test_put_get_head_round_trip(s3: Any, bucket: str, data: bytes) -> None:
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["ETag"] == quoted_md5(data)

    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == quoted_md5(data)
    assert got["LastModified"] is not None
    assert got["ResponseMetadata"]["HTTPHeaders"].get("accept-ranges") == "bytes"

    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == quoted_md5(data)
    assert head["LastModified"] == got["LastModified"]
    # HEAD has the GET's headers and no body.
    assert head["ResponseMetadata"]["HTTPHeaders"]["content-length"] == str(len(data))


def test_overwrite_replaces_content_and_metadata(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", Metadata={"v": "1"},
                  ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second!")
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["Metadata"] == {}
    assert head["ContentLength"] == 7
    assert head["ContentType"] != "text/plain"
    assert body(s3, bucket, "k") == b"second!"
    assert list_keys(s3, bucket) == ["k"]


@DATABASE
def test_last_modified_agrees_between_head_and_listing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="k")
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert listed["LastModified"].replace(microsecond=0) == head["LastModified"]
    assert listed["ETag"] == head["ETag"]
    assert listed["Size"] == head["ContentLength"]
    now = datetime.now(UTC)
    assert abs((now - head["LastModified"]).total_seconds()) < 120


@GATEWAY_ONLY
def test_default_content_type(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentType"] in (
        "binary/octet-stream", "application/octet-stream")


@BLOBS
def test_twenty_mib_single_put(s3: Any, bucket: str) -> None:
    data = os.urandom(1024 * 1024) * 20
    put = s3.put_object(Bucket=bucket, Key="big", Body=data)
    assert put["ETag"] == quoted_md5(data)
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentLength"] == len(data)
    assert hashlib.md5(got["Body"].read()).hexdigest() == hashlib.md5(data).hexdigest()


@DATABASE
def test_user_metadata_preserved(s3: Any, bucket: str) -> None:
    metadata = {"color": "blue", "multi-word-name": "a value with spaces", "n": "42",
                "mixed": "Case Preserved In Value"}
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata=metadata)
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == metadata
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Metadata"] == metadata
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-meta-color"] == "blue"


@GATEWAY_ONLY
def test_user_metadata_names_are_lower_cased(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"CamelName": "V"})
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"camelname": "V"}


@DATABASE
def test_user_metadata_under_limit(s3: Any, bucket: str) -> None:
    metadata = {"a": "x" * 1000, "b": "y" * 900}
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata=metadata)
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == metadata


@GATEWAY_ONLY
def test_user_metadata_too_large(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    metadata = {"a": "x" * 1100, "b": "y" * 1100}
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"new",
                                Metadata=metadata)
    assert (code, status) == ("MetadataTooLarge", 400)
    assert body(s3, bucket, "k") == b"old"
    code, status = client_error(s3.put_object, Bucket=bucket, Key="other", Body=b"new",
                                Metadata={"one": "z" * 2100})
    assert (code, status) == ("MetadataTooLarge", 400)
    assert client_error(s3.head_object, Bucket=bucket, Key="other") == ("404", 404)


@DATABASE
def test_standard_headers_preserved(s3: Any, bucket: str) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    s3.put_object(
        Bucket=bucket, Key="doc.html", Body=b"<html></html>",
        ContentType="text/html; charset=utf-8",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="report.html"',
        ContentLanguage="pt-BR",
        CacheControl="max-age=3600, must-revalidate",
        Expires=expires,
    )
    for response in (s3.head_object(Bucket=bucket, Key="doc.html"),
                     s3.get_object(Bucket=bucket, Key="doc.html")):
        assert response["ContentType"] == "text/html; charset=utf-8"
        assert response["ContentEncoding"] == "identity"
        assert response["ContentDisposition"] == 'attachment; filename="report.html"'
        assert response["ContentLanguage"] == "pt-BR"
        assert response["CacheControl"] == "max-age=3600, must-revalidate"
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["expires"] == format_datetime(expires, usegmt=True)


@BLOBS
def test_gzip_content_encoding_is_stored_not_applied(s3: Any, bucket: str) -> None:
    raw = zlib.compress(b"hello" * 100)
    s3.put_object(Bucket=bucket, Key="z", Body=raw, ContentEncoding="gzip")
    got = s3.get_object(Bucket=bucket, Key="z")
    assert got["ContentEncoding"] == "gzip"
    assert got["Body"].read() == raw


# -- keys -------------------------------------------------------------------------------------


@DATABASE
def test_key_of_1024_bytes(s3: Any, bucket: str) -> None:
    for key in ("k" * 1024, "é" * 512, "d/" * 511 + "zz"):
        assert len(key.encode()) == 1024
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode()[:10])
        assert body(s3, bucket, key) == key.encode()[:10]
        assert key in list_keys(s3, bucket)


@GATEWAY_ONLY
def test_key_of_1025_bytes(s3: Any, bucket: str) -> None:
    for key in ("k" * 1025, "é" * 512 + "k"):
        assert len(key.encode()) == 1025
        code, status = client_error(s3.put_object, Bucket=bucket, Key=key, Body=b"x")
        assert (code, status) == ("KeyTooLongError", 400)
    assert list_keys(s3, bucket) == []


@DATABASE
def test_file_and_directory_like_keys_coexist(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"file a")
    s3.put_object(Bucket=bucket, Key="a/b", Body=b"file a/b")
    s3.put_object(Bucket=bucket, Key="a/b/c", Body=b"file a/b/c")
    s3.put_object(Bucket=bucket, Key="a/", Body=b"dir marker")
    assert body(s3, bucket, "a") == b"file a"
    assert body(s3, bucket, "a/b") == b"file a/b"
    assert body(s3, bucket, "a/b/c") == b"file a/b/c"
    assert body(s3, bucket, "a/") == b"dir marker"
    assert list_keys(s3, bucket) == ["a", "a/", "a/b", "a/b/c"]
    s3.delete_object(Bucket=bucket, Key="a")
    assert body(s3, bucket, "a/b") == b"file a/b"
    assert list_keys(s3, bucket) == ["a/", "a/b", "a/b/c"]


SPECIAL_KEYS = [
    "dots/../up", "../leading", "a/./b", "..", ".", "plus+sign", "100%", "%2F-literal",
    "%41", "with space", " leading-space", "trailing-space ", "ünïcödé/日本語.txt",
    "emoji-😀", "trailing/", "double//slash", "//leading-double", "what?", "hash#tag",
    "amp&ersand=1", "semi;colon", "quote'and\"double", "tilde~", "star*", "comma,",
    "brackets[]{}", "back\\slash", "at@sign", "dollar$", "pipe|", "caret^", "lt<gt>",
    "tab-free\u00a0nbsp", "a\u0301-combining", "\U0001f600/\U0001f600",
]


@DATABASE
def test_special_keys_round_trip(s3: Any, bucket: str) -> None:
    for i, key in enumerate(SPECIAL_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"{i}".encode())
    for i, key in enumerate(SPECIAL_KEYS):
        assert body(s3, bucket, key) == f"{i}".encode(), key
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(f"{i}")
    assert list_keys(s3, bucket) == sorted(SPECIAL_KEYS, key=lambda k: k.encode())
    for key in SPECIAL_KEYS:
        response = s3.list_objects_v2(Bucket=bucket, Prefix=key)
        assert key in [o["Key"] for o in response["Contents"]], key
    for key in SPECIAL_KEYS:
        assert s3.delete_object(Bucket=bucket, Key=key)["ResponseMetadata"][
            "HTTPStatusCode"] == 204
        assert client_error(s3.head_object, Bucket=bucket, Key=key) == ("404", 404), key
    assert list_keys(s3, bucket) == []


@DATABASE
def test_special_key_is_distinct(s3: Any, bucket: str) -> None:
    """Each special key names exactly one object: no normalisation merges it with another.
    (All in one bucket: none of the near misses below is itself one of the keys.)"""
    for key in SPECIAL_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert sorted(list_keys(s3, bucket)) == sorted(SPECIAL_KEYS)
    for key in SPECIAL_KEYS:
        near = {key.rstrip("/"), key.replace("//", "/"), key.strip(), key.replace("+", " ")}
        for other in near - {key, ""}:
            assert other not in SPECIAL_KEYS
            assert client_error(s3.head_object, Bucket=bucket, Key=other) == ("404", 404), other


# -- DeleteObject / DeleteObjects -------------------------------------------------------------


@BLOBS
def test_delete_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    response = s3.delete_object(Bucket=bucket, Key="k")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client_error(s3.get_object, Bucket=bucket, Key="k") == ("NoSuchKey", 404)


@GATEWAY_ONLY
def test_delete_missing_object_is_204(s3: Any, bucket: str) -> None:
    response = s3.delete_object(Bucket=bucket, Key="never-existed")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("a", "b/c", "d e"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a"}, {"Key": "b/c"}, {"Key": "d e"}, {"Key": "missing"}]})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sorted(d["Key"] for d in response["Deleted"]) == ["a", "b/c", "d e", "missing"]
    assert "Errors" not in response
    assert list_keys(s3, bucket) == ["keep"]


@GATEWAY_ONLY
def test_delete_objects_quiet(s3: Any, bucket: str) -> None:
    for key in ("q1", "q2"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    response = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "q1"}, {"Key": "q2"}, {"Key": "nope"}], "Quiet": True})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "Deleted" not in response
    assert "Errors" not in response
    assert list_keys(s3, bucket) == []


@DATABASE
def test_delete_objects_special_keys(s3: Any, bucket: str) -> None:
    keys = ["with space", "ünï/日本", "a&b", "lt<gt>", "quote\"s", "plus+", " lead",
            "trail ", "two  spaces", "]]>cdata-end", "&amp;literal", "\u00a0nbsp"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    response = s3.delete_objects(Bucket=bucket,
                                 Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in response["Deleted"]) == sorted(keys)
    assert list_keys(s3, bucket) == []


@GATEWAY_ONLY
def test_delete_objects_more_than_1000_keys(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k0", Body=b"x")
    code, status = client_error(s3.delete_objects, Bucket=bucket, Delete={
        "Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    assert (code, status) == ("MalformedXML", 400)
    assert list_keys(s3, bucket) == ["k0"]


@DATABASE
def test_delete_objects_exactly_1000_keys(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k999", Body=b"x")
    response = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": f"k{i}"} for i in range(1000)], "Quiet": True})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert list_keys(s3, bucket) == []


@GATEWAY_ONLY
def test_delete_objects_missing_bucket(s3: Any) -> None:
    code, status = client_error(s3.delete_objects, Bucket="no-such-bucket-del-objs",
                                Delete={"Objects": [{"Key": "a"}]})
    assert (code, status) == ("NoSuchBucket", 404)


# -- CopyObject -------------------------------------------------------------------------------


def test_copy_object_copies_metadata(s3: Any, bucket: str) -> None:
    data = b"copy me" * 100
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"origin": "src"},
                  ContentType="text/x-source", CacheControl="no-cache")
    response = s3.copy_object(Bucket=bucket, Key="dst",
                              CopySource={"Bucket": bucket, "Key": "src"})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["CopyObjectResult"]["ETag"] == quoted_md5(data)
    assert response["CopyObjectResult"]["LastModified"] is not None
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"origin": "src"}
    assert head["ContentType"] == "text/x-source"
    assert head["CacheControl"] == "no-cache"
    assert head["ETag"] == quoted_md5(data)
    assert body(s3, bucket, "dst") == data
    assert body(s3, bucket, "src") == data


@DATABASE
def test_copy_object_to_another_bucket(s3: Any, bucket: str) -> None:
    other = bucket + "-dst"
    s3.create_bucket(Bucket=other)
    try:
        s3.put_object(Bucket=bucket, Key="src", Body=b"across")
        s3.copy_object(Bucket=other, Key="a/b", CopySource={"Bucket": bucket, "Key": "src"})
        assert body(s3, other, "a/b") == b"across"
    finally:
        s3.delete_object(Bucket=other, Key="a/b")
        s3.delete_bucket(Bucket=other)


@DATABASE
def test_copy_object_replace_metadata(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"data", Metadata={"old": "1"},
                  ContentType="text/plain")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"new": "2"},
                   ContentType="application/json")
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"new": "2"}
    assert head["ContentType"] == "application/json"
    assert body(s3, bucket, "dst") == b"data"
    # The source is untouched.
    src = s3.head_object(Bucket=bucket, Key="src")
    assert src["Metadata"] == {"old": "1"}
    assert src["ContentType"] == "text/plain"


@DATABASE
def test_copy_object_encoded_source_keys(s3: Any, bucket: str) -> None:
    for key in ("with space/and more", "ünïcödé/日本語 file.txt", "a+b%c&d=e", "q?x#y",
                "emoji 😀", "trailing/", "double//slash"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        s3.copy_object(Bucket=bucket, Key=key + "-copy",
                       CopySource={"Bucket": bucket, "Key": key})
        assert body(s3, bucket, key + "-copy") == key.encode(), key
        # The string form "bucket/key" (which boto3 URL-encodes) works too.
        s3.copy_object(Bucket=bucket, Key=key + "-copy2", CopySource=f"{bucket}/{key}")
        assert body(s3, bucket, key + "-copy2") == key.encode(), key


@GATEWAY_ONLY
def test_copy_object_with_copy_directive_ignores_request_metadata(s3: Any,
                                                                  bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"data", Metadata={"kept": "yes"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="COPY", Metadata={"ignored": "1"})
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"kept": "yes"}


@DATABASE
def test_copy_object_source_version_null(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"versionless")
    s3.copy_object(Bucket=bucket, Key="dst",
                   CopySource={"Bucket": bucket, "Key": "src", "VersionId": "null"})
    assert body(s3, bucket, "dst") == b"versionless"


@GATEWAY_ONLY
def test_copy_object_replace_metadata_too_large(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="dst",
                                CopySource={"Bucket": bucket, "Key": "src"},
                                MetadataDirective="REPLACE", Metadata={"big": "v" * 2100})
    assert (code, status) == ("MetadataTooLarge", 400)
    assert client_error(s3.head_object, Bucket=bucket, Key="dst") == ("404", 404)


@GATEWAY_ONLY
def test_copy_object_destination_key_too_long(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="k" * 1025,
                                CopySource={"Bucket": bucket, "Key": "src"})
    assert (code, status) == ("KeyTooLongError", 400)


@BLOBS
def test_copy_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    response = s3.copy_object(Bucket=bucket, Key="empty-copy",
                              CopySource={"Bucket": bucket, "Key": "empty"})
    assert response["CopyObjectResult"]["ETag"] == quoted_md5(b"")
    assert body(s3, bucket, "empty-copy") == b""


@GATEWAY_ONLY
def test_copy_object_invalid_metadata_directive(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="dst",
                                CopySource={"Bucket": bucket, "Key": "src"},
                                MetadataDirective="MERGE")
    assert (code, status) == ("InvalidArgument", 400)
    assert client_error(s3.head_object, Bucket=bucket, Key="dst") == ("404", 404)


@GATEWAY_ONLY
def test_copy_object_onto_itself_without_replace(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="self", Body=b"same", Metadata={"m": "1"})
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="self",
                                CopySource={"Bucket": bucket, "Key": "self"})
    assert (code, status) == ("InvalidRequest", 400)
    assert s3.head_object(Bucket=bucket, Key="self")["Metadata"] == {"m": "1"}


def test_copy_object_onto_itself_with_replace(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="self", Body=b"same", Metadata={"m": "1"},
                  ContentType="text/plain")
    s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                   MetadataDirective="REPLACE", Metadata={"m": "2"}, ContentType="text/csv")
    head = s3.head_object(Bucket=bucket, Key="self")
    assert head["Metadata"] == {"m": "2"}
    assert head["ContentType"] == "text/csv"
    assert body(s3, bucket, "self") == b"same"


@GATEWAY_ONLY
def test_copy_object_missing_source(s3: Any, bucket: str) -> None:
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="dst",
                                CopySource={"Bucket": bucket, "Key": "missing"})
    assert (code, status) == ("NoSuchKey", 404)
    assert list_keys(s3, bucket) == []


@GATEWAY_ONLY
def test_copy_object_missing_source_bucket(s3: Any, bucket: str) -> None:
    code, status = client_error(s3.copy_object, Bucket=bucket, Key="dst",
                                CopySource={"Bucket": "no-such-src-bucket-x", "Key": "k"})
    assert (code, status) == ("NoSuchBucket", 404)


@DATABASE
def test_copy_object_conditions(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"conditional")
    head = s3.head_object(Bucket=bucket, Key="src")
    etag, modified = head["ETag"], head["LastModified"]
    past = modified - timedelta(days=1)
    future = datetime.now(UTC) + timedelta(days=1)
    source = {"Bucket": bucket, "Key": "src"}

    failing: list[dict[str, Any]] = [
        {"CopySourceIfMatch": '"0123456789abcdef0123456789abcdef"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfModifiedSince": future},
        {"CopySourceIfUnmodifiedSince": past},
        # If-None-Match false and If-Modified-Since true: still 412.
        {"CopySourceIfNoneMatch": etag, "CopySourceIfModifiedSince": past},
    ]
    for conditions in failing:
        code, status = client_error(s3.copy_object, Bucket=bucket, Key="dst",
                                    CopySource=source, **conditions)
        assert (code, status) == ("PreconditionFailed", 412), conditions
        assert client_error(s3.head_object, Bucket=bucket, Key="dst") == ("404", 404)

    passing: list[dict[str, Any]] = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfNoneMatch": '"0123456789abcdef0123456789abcdef"'},
        {"CopySourceIfModifiedSince": past},
        {"CopySourceIfUnmodifiedSince": future},
        # If-Match true and If-Unmodified-Since false: the copy happens.
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": past},
    ]
    for i, conditions in enumerate(passing):
        response = s3.copy_object(Bucket=bucket, Key=f"dst{i}", CopySource=source,
                                  **conditions)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, conditions
        assert body(s3, bucket, f"dst{i}") == b"conditional"


# -- GetObject errors -------------------------------------------------------------------------


@GATEWAY_ONLY
def test_get_missing_key(s3: Any, bucket: str) -> None:
    assert client_error(s3.get_object, Bucket=bucket, Key="missing") == ("NoSuchKey", 404)
    assert client_error(s3.head_object, Bucket=bucket, Key="missing") == ("404", 404)


@GATEWAY_ONLY
def test_get_missing_key_error_body(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="dir/missing")
    error = info.value.response["Error"]
    assert error["Code"] == "NoSuchKey"
    assert error.get("Message")
    assert error.get("Key") == "dir/missing"


@GATEWAY_ONLY
def test_get_missing_bucket(s3: Any) -> None:
    code, status = client_error(s3.get_object, Bucket="no-such-bucket-get-obj", Key="k")
    assert (code, status) == ("NoSuchBucket", 404)


# -- ranges -----------------------------------------------------------------------------------


RANGES = [  # (Range header, first byte, last byte) of ALPHABET
    ("bytes=0-9", 0, 9),
    ("bytes=5-", 5, 25),
    ("bytes=-3", 23, 25),
    ("bytes=20-100", 20, 25),
    ("bytes=25-25", 25, 25),
    ("bytes=0-0", 0, 0),
    ("bytes=-100", 0, 25),
    ("bytes=0-", 0, 25),
]


@BLOBS
def test_range_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    for range_header, start, end in RANGES:
        got = s3.get_object(Bucket=bucket, Key="abc", Range=range_header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, range_header
        assert got["ContentRange"] == f"bytes {start}-{end}/26", range_header
        assert got["ContentLength"] == end - start + 1, range_header
        assert got["Body"].read() == ALPHABET[start:end + 1], range_header
        assert got["ETag"] == quoted_md5(ALPHABET), range_header


@GATEWAY_ONLY
@pytest.mark.parametrize("range_header", ["bytes=26-", "bytes=30-40", "bytes=26-30"])
def test_range_not_satisfiable(s3: Any, bucket: str, range_header: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="abc", Range=range_header)
    response = info.value.response
    assert response["Error"]["Code"] == "InvalidRange"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 416


@GATEWAY_ONLY
def test_range_on_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for range_header in ("bytes=0-0", "bytes=0-", "bytes=-1"):
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket=bucket, Key="empty", Range=range_header)
        assert info.value.response["Error"]["Code"] == "InvalidRange", range_header
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


@GATEWAY_ONLY
def test_range_suffix_of_zero_is_not_satisfiable(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="abc", Range="bytes=-0")
    assert info.value.response["Error"]["Code"] == "InvalidRange"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


@GATEWAY_ONLY
def test_range_invalid_syntax_is_ignored(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    got = s3.get_object(Bucket=bucket, Key="abc", Range="bytes=abc")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == ALPHABET


@GATEWAY_ONLY
def test_head_with_range(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    head = s3.head_object(Bucket=bucket, Key="abc", Range="bytes=0-9")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == 10
    assert head["ContentRange"] == "bytes 0-9/26"
    head = s3.head_object(Bucket=bucket, Key="abc", Range="bytes=-4")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentRange"] == "bytes 22-25/26"
    assert client_error(s3.head_object, Bucket=bucket, Key="abc",
                        Range="bytes=50-") == ("416", 416)


@GATEWAY_ONLY
def test_response_header_overrides(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="file.bin", Body=b"payload", ContentType="text/plain",
                  CacheControl="no-store")
    expires = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    got = s3.get_object(
        Bucket=bucket, Key="file.bin",
        ResponseContentType="application/pdf",
        ResponseContentDisposition='attachment; filename="x y.pdf"',
        ResponseCacheControl="max-age=60",
        ResponseContentLanguage="fr",
        ResponseContentEncoding="identity",
        ResponseExpires=expires,
    )
    assert got["ContentType"] == "application/pdf"
    assert got["ContentDisposition"] == 'attachment; filename="x y.pdf"'
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentLanguage"] == "fr"
    assert got["ContentEncoding"] == "identity"
    assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == format_datetime(
        expires, usegmt=True)
    assert got["Body"].read() == b"payload"
    # Overrides change the response only, never the stored object.
    head = s3.head_object(Bucket=bucket, Key="file.bin")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "no-store"
    assert "ContentDisposition" not in head


@GATEWAY_ONLY
def test_response_overrides_on_range_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="abc", Body=ALPHABET)
    got = s3.get_object(Bucket=bucket, Key="abc", Range="bytes=1-2",
                        ResponseContentType="text/x-override")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentType"] == "text/x-override"
    assert got["Body"].read() == b"bc"


# -- checksums --------------------------------------------------------------------------------


def test_default_checksum_crc32(s3: Any, bucket: str) -> None:
    data = b"default checksum body" * 50
    put = s3.put_object(Bucket=bucket, Key="k", Body=data)
    assert put["ChecksumCRC32"] == expected_checksum("CRC32", data)
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected_checksum("CRC32", data)
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == expected_checksum("CRC32", data)
    assert got["Body"].read() == data


ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


@DATABASE
def test_explicit_checksum_algorithm(s3: Any, bucket: str) -> None:
    for algorithm in ALGORITHMS:  # one object each
        data = os.urandom(5000)
        field = f"Checksum{algorithm}"
        put = s3.put_object(Bucket=bucket, Key=algorithm, Body=data,
                            ChecksumAlgorithm=algorithm)
        assert put[field] == expected_checksum(algorithm, data)
        for response in (s3.head_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED"),
                         s3.get_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED")):
            assert response[field] == expected_checksum(algorithm, data)
            other = {f"Checksum{a}" for a in ALGORITHMS}
            assert not (other - {field}) & set(response), \
                f"{algorithm}: only the stored checksum is returned"
        assert body(s3, bucket, algorithm) == data


@DATABASE
def test_explicit_checksum_value(s3: Any, bucket: str) -> None:
    data = b"precomputed"
    for algorithm in ALGORITHMS:  # one object each
        value = expected_checksum(algorithm, data)
        put = s3.put_object(Bucket=bucket, Key=algorithm, Body=data,
                            **{f"Checksum{algorithm}": value})
        assert put[f"Checksum{algorithm}"] == value
        head = s3.head_object(Bucket=bucket, Key=algorithm, ChecksumMode="ENABLED")
        assert head[f"Checksum{algorithm}"] == value


@GATEWAY_ONLY
def test_checksum_not_returned_without_checksum_mode(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="k")
    assert "ChecksumSHA256" not in head


@GATEWAY_ONLY
def test_content_md5_correct(s3: Any, bucket: str) -> None:
    data = b"md5 checked"
    s3.put_object(Bucket=bucket, Key="k", Body=data,
                  ContentMD5=b64(hashlib.md5(data).digest()))
    assert body(s3, bucket, "k") == data


@BLOBS
def test_wrong_content_md5_is_bad_digest(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"previous")
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"new body",
                                ContentMD5=b64(hashlib.md5(b"other").digest()))
    assert (code, status) == ("BadDigest", 400)
    assert body(s3, bucket, "k") == b"previous"
    code, status = client_error(s3.put_object, Bucket=bucket, Key="new", Body=b"new body",
                                ContentMD5=b64(hashlib.md5(b"other").digest()))
    assert (code, status) == ("BadDigest", 400)
    assert client_error(s3.head_object, Bucket=bucket, Key="new") == ("404", 404)


@GATEWAY_ONLY
def test_malformed_content_md5_is_invalid_digest(s3: Any, bucket: str) -> None:
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                                ContentMD5="not-base64-md5")
    assert (code, status) == ("InvalidDigest", 400)


@BLOBS
def test_wrong_checksum_value_is_bad_digest(s3: Any, bucket: str) -> None:
    for algorithm in ALGORITHMS:  # one object each
        s3.put_object(Bucket=bucket, Key=algorithm, Body=b"previous")
        wrong = expected_checksum(algorithm, b"something else")
        code, status = client_error(s3.put_object, Bucket=bucket, Key=algorithm,
                                    Body=b"new body", **{f"Checksum{algorithm}": wrong})
        assert (code, status) == ("BadDigest", 400), algorithm
        assert body(s3, bucket, algorithm) == b"previous"
        assert s3.head_object(Bucket=bucket, Key=algorithm)["ETag"] == quoted_md5(b"previous")
