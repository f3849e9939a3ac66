"""ListObjectsV2 and ListObjects (v1) against a Python model of the same key set.

Every listing — prefix, delimiter, max-keys, start-after/marker, continuation — is
compared with what the model says S3 returns: entries (keys and common prefixes) in UTF-8
byte order, each common prefix once, pages that are consecutive slices of the whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.config import Config

from tests._errors import client_error
from tests.conftest import make_client

#: Listings come from the database: run on SQLite and on PostgreSQL (whose text ordering
#: must still be S3's byte order).
pytestmark = pytest.mark.upstreams("fs", "postgresql")

KEYS: list[str] = [
    # top level, chosen so that UTF-8 byte order differs from UTF-16 / naive orders
    "a", "a b", "a-b", "a.b", "a/b", "a\u00e9", "a\ue000", "a\ufffd", "a\uffff",
    "a\U00010000", "a\U0001f600", "B-upper", "Zeta", "zeta", "~tilde", " space-first",
    "b", "b.c.d", "m",
    # nested
    "photos/", "photos/readme", "photos/2006/jan/1.jpg", "photos/2006/jan/2.jpg",
    "photos/2006/feb/1.jpg", "photos/2006/", "photos/2007/x.jpg", "photos/2007.txt",
    "docs/a.txt", "docs/b/c.txt", "docs/b/d/e.txt", "docs.txt",
    "docs with space/f g.txt", "docs with space/sub dir/h.txt",
    "\u00fcn\u00efc\u00f6d\u00e9/\u65e5\u672c\u8a9e/1", "\u00fcn\u00efc\u00f6d\u00e9/x",
    "\u00fcn\u00efc\u00f6d\u00e9/\u65e5\u672c\u8a9e/2",
    "emoji\U0001f600/a", "emoji\ue000/a", "emoji\uffff/a", "emoji\U00010000/a",
    "dir//double", "dir/a", "dir/b/", "dir/b/c", "dir/b/c/", "dir/b/c/d",
    *(f"logs/2024-01-0{i}.log" for i in range(1, 10)),
    *(f"many/k{i:02d}" for i in range(15)),
]

PREFIXES = ["", "photos/", "photos/2006/", "photos/2006", "docs", "\u00fcn\u00efc\u00f6d\u00e9/",
            "a", "emoji", "dir/", "dir/b/c", "many/", "nonexistent/"]
DELIMITERS = ["", "/", "."]
PAGE_SIZES = [1, 2, 7, 1000]


def utf8(key: str) -> bytes:
    return key.encode()


Entry = tuple[str, str]  # ("key" | "prefix", value)


def model(keys: list[str], prefix: str = "", delimiter: str = "",
          after: str = "") -> list[Entry]:
    """The whole listing S3 would return, as one ordered list of entries."""
    out: list[Entry] = []
    seen: set[str] = set()
    for key in sorted(keys, key=utf8):
        if not key.startswith(prefix):
            continue
        if after and utf8(key) <= utf8(after):
            continue
        if delimiter:
            at = key.find(delimiter, len(prefix))
            if at >= 0:
                common = key[:at + len(delimiter)]
                if common not in seen:
                    seen.add(common)
                    out.append(("prefix", common))
                continue
        out.append(("key", key))
    return out


def page_entries(page: dict[str, Any]) -> list[Entry]:
    """A page's entries in S3's merged order (keys and prefixes interleaved by bytes)."""
    entries: list[Entry] = [("key", o["Key"]) for o in page.get("Contents", [])]
    entries += [("prefix", p["Prefix"]) for p in page.get("CommonPrefixes", [])]
    return sorted(entries, key=lambda e: utf8(e[1]))


def check_page_shape(page: dict[str, Any]) -> None:
    keys = [o["Key"] for o in page.get("Contents", [])]
    prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert keys == sorted(keys, key=utf8)
    assert prefixes == sorted(prefixes, key=utf8)
    assert len(set(keys)) == len(keys)
    assert len(set(prefixes)) == len(prefixes)


@pytest.fixture(scope="module")
def listing_bucket(s3: Any) -> Iterator[str]:
    name = f"list-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=name, Key=k, Body=utf8(k)), KEYS))
    yield name
    # One by one: a DeleteObjects XML body cannot carry U+FFFF, which is not an XML character.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.delete_object(Bucket=name, Key=k), KEYS))
    s3.delete_bucket(Bucket=name)


def test_key_set_is_what_we_think() -> None:
    assert len(KEYS) == len(set(KEYS))
    assert len(KEYS) >= 60
    # The orders that must not be confused: UTF-16 puts U+10000 before U+E000 and U+FFFF.
    assert sorted(["a\U00010000", "a\ue000", "a\uffff"], key=utf8) == [
        "a\ue000", "a\uffff", "a\U00010000"]
    assert sorted(["a\U00010000", "a\ue000"], key=lambda k: k.encode("utf-16-be")) == [
        "a\U00010000", "a\ue000"]


# -- ListObjectsV2 ---------------------------------------------------------------------------


def walk_v2(s3: Any, bucket: str, **params: Any) -> list[dict[str, Any]]:
    pages = []
    token: str | None = None
    while True:
        request = dict(params, Bucket=bucket)
        if token is not None:
            request["ContinuationToken"] = token
        page = s3.list_objects_v2(**request)
        pages.append(page)
        if token is not None:
            assert page.get("ContinuationToken") == token
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return pages
        token = page["NextContinuationToken"]
        assert token
        assert len(pages) <= len(KEYS) + 2, "listing does not terminate"


def check_pages_against(pages: list[dict[str, Any]], expected: list[Entry],
                        max_keys: int, count_field: str | None) -> None:
    chunks = [expected[i:i + max_keys] for i in range(0, len(expected), max_keys)] or [[]]
    assert len(pages) == len(chunks), (len(pages), len(chunks))
    got_all: list[Entry] = []
    for i, (page, chunk) in enumerate(zip(pages, chunks, strict=True)):
        check_page_shape(page)
        entries = page_entries(page)
        assert entries == chunk, f"page {i}"
        if count_field:
            assert page[count_field] == len(chunk)
        assert page["IsTruncated"] == (i < len(chunks) - 1)
        assert page["MaxKeys"] == max_keys
        got_all += entries
    assert got_all == expected
    prefixes = [v for kind, v in got_all if kind == "prefix"]
    assert len(prefixes) == len(set(prefixes)), "a common prefix repeated across pages"


@pytest.mark.parametrize("delimiter", DELIMITERS)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_v2_manual_pagination(s3: Any, listing_bucket: str, prefix: str,
                                   delimiter: str) -> None:
    for max_keys in PAGE_SIZES:
        params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            params["Delimiter"] = delimiter
        pages = walk_v2(s3, listing_bucket, **params)
        check_pages_against(pages, model(KEYS, prefix, delimiter), max_keys, "KeyCount")
        check_v2_page_fields(pages, listing_bucket, prefix, delimiter)


def check_v2_page_fields(pages: list[dict[str, Any]], bucket: str, prefix: str,
                         delimiter: str) -> None:
    for page in pages:
        assert page["Name"] == bucket
        assert page.get("Prefix", "") == prefix
        assert page.get("Delimiter", "") == delimiter
        for obj in page.get("Contents", []):
            assert obj["Size"] == len(utf8(obj["Key"]))
            assert obj["ETag"].startswith('"') and obj["ETag"].endswith('"')
            assert obj["LastModified"] is not None
            assert obj["StorageClass"] == "STANDARD"
            assert "Owner" not in obj


@pytest.mark.parametrize("max_keys", [1, 7, 1000])
@pytest.mark.parametrize("delimiter", ["", "/"])
def test_list_v2_boto3_paginator(s3: Any, listing_bucket: str, delimiter: str,
                                 max_keys: int) -> None:
    params: dict[str, Any] = {"Bucket": listing_bucket,
                              "PaginationConfig": {"PageSize": max_keys}}
    if delimiter:
        params["Delimiter"] = delimiter
    pages = list(s3.get_paginator("list_objects_v2").paginate(**params))
    check_pages_against(pages, model(KEYS, "", delimiter), max_keys, "KeyCount")
    if not delimiter:
        keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
        assert keys == sorted(KEYS, key=utf8)


@pytest.mark.parametrize(("prefix", "delimiter", "after"), [
    ("", "", "docs/b/c.txt"),
    ("", "", "m"),
    ("", "", "a\uffff"),
    ("", "", "a\U00010000"),
    ("", "", "\U0010ffff"),
    ("", "", ""),
    ("", "/", "b"),
    ("", "/", "a\ue000"),
    ("photos/", "", "photos/2006/jan/1.jpg"),
    ("photos/", "/", "photos/2007.txt"),
    ("many/", "", "many/k07"),
    ("many/", "", "zzz"),
    ("many/", "", "a"),
])
def test_list_v2_start_after(s3: Any, listing_bucket: str, prefix: str, delimiter: str,
                             after: str) -> None:
    for max_keys in (2, 1000):
        params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys, "StartAfter": after}
        if delimiter:
            params["Delimiter"] = delimiter
        pages = walk_v2(s3, listing_bucket, **params)
        check_pages_against(pages, model(KEYS, prefix, delimiter, after), max_keys,
                            "KeyCount")
        if after:
            assert pages[0].get("StartAfter") == after


def test_list_v2_max_keys_zero(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=listing_bucket, MaxKeys=0)
    assert page["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert page["KeyCount"] == 0
    assert "Contents" not in page
    assert "CommonPrefixes" not in page
    assert page["IsTruncated"] is False
    assert "NextContinuationToken" not in page
    assert page["MaxKeys"] == 0


def test_list_v2_default_max_keys(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=listing_bucket)
    assert page["MaxKeys"] == 1000
    assert page["KeyCount"] == len(KEYS)
    assert page["IsTruncated"] is False
    assert [o["Key"] for o in page["Contents"]] == sorted(KEYS, key=utf8)


def test_list_v2_max_keys_above_1000_is_capped(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=listing_bucket, MaxKeys=5000)
    assert page["KeyCount"] == len(KEYS)
    assert page["IsTruncated"] is False


def test_list_v2_fetch_owner(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=listing_bucket, Prefix="many/", FetchOwner=True)
    assert page["KeyCount"] == 15
    for obj in page["Contents"]:
        assert obj["Owner"]["ID"]
    owners = {obj["Owner"]["ID"] for obj in page["Contents"]}
    assert owners == {s3.list_buckets()["Owner"]["ID"]}
    page = s3.list_objects_v2(Bucket=listing_bucket, Prefix="many/", FetchOwner=False)
    assert all("Owner" not in obj for obj in page["Contents"])


def test_list_v2_explicit_encoding_type_url(s3: Any, listing_bucket: str) -> None:
    # Passed explicitly, boto3 leaves the values encoded: decode them here.
    page = s3.list_objects_v2(Bucket=listing_bucket, EncodingType="url")
    assert page["EncodingType"] == "url"
    raw = [o["Key"] for o in page["Contents"]]
    for key in raw:
        assert key.isascii() and " " not in key, key
    assert [unquote_plus(k) for k in raw] == sorted(KEYS, key=utf8)

    page = s3.list_objects_v2(Bucket=listing_bucket, EncodingType="url", Delimiter="/",
                              Prefix="docs with space/")
    assert [unquote_plus(o["Key"]) for o in page["Contents"]] == ["docs with space/f g.txt"]
    assert [unquote_plus(p["Prefix"]) for p in page["CommonPrefixes"]] == [
        "docs with space/sub dir/"]
    assert unquote_plus(page["Prefix"]) == "docs with space/"


def test_list_v2_auto_encoding_returns_exact_keys(s3: Any, listing_bucket: str) -> None:
    # boto3 asks for encoding-type=url by itself and decodes the answer.
    for key in ("a b", "docs with space/sub dir/h.txt", "a\uffff", "a\U0001f600",
                "\u00fcn\u00efc\u00f6d\u00e9/\u65e5\u672c\u8a9e/1", " space-first"):
        page = s3.list_objects_v2(Bucket=listing_bucket, Prefix=key)
        assert page["Contents"][0]["Key"] == key
        assert page["Prefix"] == key


def test_list_v2_invalid_max_keys(s3: Any, gateway: Any, listing_bucket: str) -> None:
    code, status = client_error(s3.list_objects_v2, Bucket=listing_bucket, MaxKeys=-1)
    assert (code, status) == ("InvalidArgument", 400)

    client = make_client(gateway)

    def non_integer(request: Any, **_: Any) -> None:
        request.url = request.url.replace("max-keys=7", "max-keys=abc")

    client.meta.events.register("before-sign.s3.ListObjectsV2", non_integer)
    client.meta.events.register("before-sign.s3.ListObjects", non_integer)
    code, status = client_error(client.list_objects_v2, Bucket=listing_bucket, MaxKeys=7)
    assert (code, status) == ("InvalidArgument", 400)
    code, status = client_error(client.list_objects, Bucket=listing_bucket, MaxKeys=7)
    assert (code, status) == ("InvalidArgument", 400)


def test_list_invalid_encoding_type(s3: Any, listing_bucket: str) -> None:
    code, status = client_error(s3.list_objects_v2, Bucket=listing_bucket,
                                EncodingType="base64")
    assert (code, status) == ("InvalidArgument", 400)
    code, status = client_error(s3.list_objects, Bucket=listing_bucket, EncodingType="base64")
    assert (code, status) == ("InvalidArgument", 400)


def test_list_v2_invalid_continuation_token(s3: Any, listing_bucket: str) -> None:
    code, status = client_error(s3.list_objects_v2, Bucket=listing_bucket,
                                ContinuationToken="this-is-not-a-token")
    assert (code, status) == ("InvalidArgument", 400)


def test_list_missing_bucket(s3: Any) -> None:
    name = f"missing-{uuid.uuid4().hex[:12]}"
    assert client_error(s3.list_objects_v2, Bucket=name) == ("NoSuchBucket", 404)
    assert client_error(s3.list_objects, Bucket=name) == ("NoSuchBucket", 404)


def test_list_empty_bucket(s3: Any, bucket: str) -> None:
    page = s3.list_objects_v2(Bucket=bucket)
    assert page["KeyCount"] == 0
    assert "Contents" not in page
    assert page["IsTruncated"] is False
    page = s3.list_objects(Bucket=bucket)
    assert "Contents" not in page
    assert page["IsTruncated"] is False


def test_listing_sees_writes_and_deletes(s3: Any, bucket: str) -> None:
    keys = ["x/1", "x/2", "y"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert page_entries(page) == [("prefix", "x/"), ("key", "y")]
    s3.put_object(Bucket=bucket, Key="y", Body=b"12345")
    page = s3.list_objects_v2(Bucket=bucket)
    sizes = {o["Key"]: o["Size"] for o in page["Contents"]}
    assert sizes == {"x/1": 1, "x/2": 1, "y": 5}
    s3.delete_object(Bucket=bucket, Key="x/1")
    s3.delete_object(Bucket=bucket, Key="x/2")
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert page_entries(page) == [("key", "y")]


# -- ListObjects (v1) ------------------------------------------------------------------------


def walk_v1(s3: Any, bucket: str, delimiter: str, **params: Any) -> list[dict[str, Any]]:
    pages = []
    marker: str | None = None
    while True:
        request = dict(params, Bucket=bucket)
        if delimiter:
            request["Delimiter"] = delimiter
        if marker is not None:
            request["Marker"] = marker
        page = s3.list_objects(**request)
        pages.append(page)
        if not page["IsTruncated"]:
            return pages
        entries = page_entries(page)
        assert entries, "a truncated page with nothing in it"
        if delimiter:
            # With a delimiter S3 returns NextMarker: the last key or common prefix.
            assert page.get("NextMarker") == entries[-1][1]
        marker = page.get("NextMarker") or page["Contents"][-1]["Key"]
        assert len(pages) <= len(KEYS) + 2, "listing does not terminate"


@pytest.mark.parametrize("delimiter", DELIMITERS)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_v1_manual_pagination(s3: Any, listing_bucket: str, prefix: str,
                                   delimiter: str) -> None:
    for max_keys in PAGE_SIZES:
        pages = walk_v1(s3, listing_bucket, delimiter, Prefix=prefix, MaxKeys=max_keys)
        check_pages_against(pages, model(KEYS, prefix, delimiter), max_keys, None)
        for page in pages:
            assert page["Name"] == listing_bucket
            for obj in page.get("Contents", []):
                assert obj["Size"] == len(utf8(obj["Key"]))
                assert obj["Owner"]["ID"]
            assert "KeyCount" not in page


@pytest.mark.parametrize("max_keys", [1, 7, 1000])
@pytest.mark.parametrize("delimiter", ["", "/"])
def test_list_v1_boto3_paginator(s3: Any, listing_bucket: str, delimiter: str,
                                 max_keys: int) -> None:
    params: dict[str, Any] = {"Bucket": listing_bucket,
                              "PaginationConfig": {"PageSize": max_keys}}
    if delimiter:
        params["Delimiter"] = delimiter
    pages = list(s3.get_paginator("list_objects").paginate(**params))
    check_pages_against(pages, model(KEYS, "", delimiter), max_keys, None)


@pytest.mark.parametrize(("prefix", "delimiter", "marker"), [
    ("", "", "docs/b/c.txt"),
    ("", "", "m"),
    ("", "", "a\uffff"),
    ("", "", "\U0010ffff"),
    ("", "/", "b"),
    ("", "/", "photos/"),
    ("", "/", "dir/"),
    ("photos/", "/", "photos/2006/"),
    ("many/", "", "many/k07"),
])
def test_list_v1_marker(s3: Any, listing_bucket: str, prefix: str, delimiter: str,
                        marker: str) -> None:
    params: dict[str, Any] = {"Bucket": listing_bucket, "Prefix": prefix, "Marker": marker}
    if delimiter:
        params["Delimiter"] = delimiter
    page = s3.list_objects(**params)
    expected = model(KEYS, prefix, delimiter, marker)
    if delimiter and marker.endswith(delimiter):
        # A marker that is a common prefix (as NextMarker can be) skips that whole prefix.
        expected = [e for e in expected if not e[1].startswith(marker)]
    assert page_entries(page) == expected
    assert page["Marker"] == marker
    assert page["IsTruncated"] is False


def test_list_v1_max_keys_zero(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects(Bucket=listing_bucket, MaxKeys=0)
    assert "Contents" not in page
    assert page["IsTruncated"] is False
    assert page["MaxKeys"] == 0


def test_list_v1_invalid_max_keys(s3: Any, listing_bucket: str) -> None:
    code, status = client_error(s3.list_objects, Bucket=listing_bucket, MaxKeys=-5)
    assert (code, status) == ("InvalidArgument", 400)


def test_list_v1_explicit_encoding_type_url(s3: Any, listing_bucket: str) -> None:
    page = s3.list_objects(Bucket=listing_bucket, EncodingType="url", Prefix="a")
    assert page["EncodingType"] == "url"
    raw = [o["Key"] for o in page["Contents"]]
    assert all(k.isascii() and " " not in k for k in raw)
    assert [unquote_plus(k) for k in raw] == [k for k in sorted(KEYS, key=utf8)
                                              if k.startswith("a")]


def test_list_more_than_1000_keys(s3: Any, gateway: Any, bucket: str) -> None:
    keys = [f"k/{i:05d}" for i in range(1005)]
    # The seeding is most of this test's time: 32 writes in flight (a client with as many
    # connections), which SQLite commits in groups and PostgreSQL overlaps but for the
    # bucket's usage row.
    writer = make_client(gateway, config=Config(max_pool_connections=32))
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: writer.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    writer.close()
    for max_keys in (None, 1000, 5000):
        params: dict[str, Any] = {"Bucket": bucket}
        if max_keys is not None:
            params["MaxKeys"] = max_keys
        page = s3.list_objects_v2(**params)
        assert page["KeyCount"] == 1000
        assert page["IsTruncated"] is True
        assert [o["Key"] for o in page["Contents"]] == keys[:1000]
        rest = s3.list_objects_v2(Bucket=bucket,
                                  ContinuationToken=page["NextContinuationToken"])
        assert [o["Key"] for o in rest["Contents"]] == keys[1000:]
        assert rest["IsTruncated"] is False
        v1 = s3.list_objects(**params)
        assert len(v1["Contents"]) == 1000
        assert v1["IsTruncated"] is True
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert page_entries(page) == [("prefix", "k/")]
    assert page["IsTruncated"] is False
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])]
    assert listed == keys
