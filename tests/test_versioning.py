"""S3 versioning through boto3 against a real gateway process: Put/GetBucketVersioning,
version ids on every write, GET/HEAD/DELETE/CopyObject by version, delete markers,
ListObjectVersions with its markers, the ``null`` version of a suspended bucket, quotas
counting every version, and the JSON API's ``versioning`` flag and ``version_id``.

A Hypothesis state machine drives put / delete / delete-version / get-version / list in a
versioned bucket, then suspends and re-enables it, against a model of S3's rules.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from gateway import errors
from gateway.checksums import DigestingStream
from gateway.types import ObjectAttributes
from tests._inprocess import ROOT_KEY, in_process_gateway
from tests._server import GatewayProcess, cli_json


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("versioning") / "data").start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def s3(server: GatewayProcess) -> Any:
    return boto3.client("s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))


_bucket_seq = iter(range(10_000))


def new_bucket(s3: Any, state: str | None = "Enabled") -> str:
    name = f"versioned-{next(_bucket_seq)}-{os.urandom(3).hex()}"
    s3.create_bucket(Bucket=name)
    if state is not None:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": state})
    return name


def error(call: Any) -> tuple[int, str, dict[str, str]]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["ResponseMetadata"]["HTTPHeaders"])


def versions_of(s3: Any, bucket: str, **kwargs: Any) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is delete marker), in the listing's order."""
    answer = s3.list_object_versions(Bucket=bucket, **kwargs)
    entries = {(v["Key"], v["VersionId"]): (v["Key"], v["VersionId"], v["IsLatest"], False)
               for v in answer.get("Versions", [])}
    entries.update({(m["Key"], m["VersionId"]): (m["Key"], m["VersionId"], m["IsLatest"], True)
                    for m in answer.get("DeleteMarkers", [])})
    # boto3 splits the two kinds; the wire order is by key, then newest first.
    return [entries[entry] for entry in _wire_order(s3, bucket, **kwargs)]


def _wire_order(s3: Any, bucket: str, **kwargs: Any) -> list[tuple[str, str]]:
    """(key, version id) of each Version and DeleteMarker, as the answer lists them."""
    seen: list[tuple[str, str]] = []

    def capture(http_response: Any, **_: Any) -> None:
        root = ElementTree.fromstring(http_response.content)
        for entry in root:
            if entry.tag.endswith(("}Version", "}DeleteMarker")):
                fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in entry}
                seen.append((fields["Key"], fields["VersionId"]))

    s3.meta.events.register("after-call.s3.ListObjectVersions", capture)
    try:
        s3.list_object_versions(Bucket=bucket, **kwargs)
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectVersions", capture)
    return seen


def test_versioning_configuration(s3: Any) -> None:
    bucket = new_bucket(s3, None)
    answer = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in answer
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    status, code, _ = error(lambda: s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Disabled"}))
    assert (status, code) == (400, "MalformedXML")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    status, code, _ = error(lambda: s3.put_bucket_versioning(
        Bucket="no-such-bucket-here", VersioningConfiguration={"Status": "Enabled"}))
    assert (status, code) == (404, "NoSuchBucket")


def test_versions_of_one_key(s3: Any) -> None:
    bucket = new_bucket(s3)
    v1 = s3.put_object(Bucket=bucket, Key="faq.md", Body=b"first")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="faq.md", Body=b"second")["VersionId"]
    assert v1 != v2 and v1 != "null"
    assert s3.get_object(Bucket=bucket, Key="faq.md")["Body"].read() == b"second"
    old = s3.get_object(Bucket=bucket, Key="faq.md", VersionId=v1)
    assert old["Body"].read() == b"first" and old["VersionId"] == v1
    assert s3.head_object(Bucket=bucket, Key="faq.md", VersionId=v1)["ContentLength"] == 5
    assert s3.head_object(Bucket=bucket, Key="faq.md")["VersionId"] == v2

    # A delete hides the object behind a marker; every version stays.
    deleted = s3.delete_object(Bucket=bucket, Key="faq.md")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    status, code, headers = error(lambda: s3.get_object(Bucket=bucket, Key="faq.md"))
    assert (status, code) == (404, "NoSuchKey")
    assert headers["x-amz-delete-marker"] == "true"
    assert headers["x-amz-version-id"] == marker
    status, code, headers = error(lambda: s3.get_object(Bucket=bucket, Key="faq.md",
                                                        VersionId=marker))
    assert (status, code) == (405, "MethodNotAllowed")
    assert headers["x-amz-delete-marker"] == "true"
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert versions_of(s3, bucket) == [("faq.md", marker, True, True),
                                       ("faq.md", v2, False, False),
                                       ("faq.md", v1, False, False)]
    assert s3.get_object(Bucket=bucket, Key="faq.md", VersionId=v2)["Body"].read() == b"second"

    # Removing the marker brings the object back; removing a version is for good.
    undone = s3.delete_object(Bucket=bucket, Key="faq.md", VersionId=marker)
    assert undone["DeleteMarker"] is True and undone["VersionId"] == marker
    assert s3.get_object(Bucket=bucket, Key="faq.md")["Body"].read() == b"second"
    s3.delete_object(Bucket=bucket, Key="faq.md", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="faq.md")["Body"].read() == b"first"
    assert versions_of(s3, bucket) == [("faq.md", v1, True, False)]
    status, code, _ = error(lambda: s3.get_object(Bucket=bucket, Key="faq.md", VersionId=v2))
    assert (status, code) == (404, "NoSuchVersion")
    # A version that is not there: S3 answers 204 all the same.
    assert s3.delete_object(Bucket=bucket, Key="faq.md", VersionId=v2)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    status, code, _ = error(lambda: s3.get_object(Bucket=bucket, Key="faq.md",
                                                  VersionId="not a version!"))
    assert (status, code) == (400, "InvalidArgument")


def test_copy_from_a_version_and_multipart(s3: Any) -> None:
    bucket = new_bucket(s3)
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"one")["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"two")
    copied = s3.copy_object(Bucket=bucket, Key="dst",
                            CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1
    assert copied["VersionId"] not in ("null", v1)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"one"
    marker = s3.delete_object(Bucket=bucket, Key="src")["VersionId"]
    status, code, _ = error(lambda: s3.copy_object(
        Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src",
                                               "VersionId": marker}))
    assert (status, code) == (400, "InvalidRequest")
    status, code, _ = error(lambda: s3.copy_object(
        Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"}))
    assert (status, code) == (404, "NoSuchKey")

    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1,
                          Body=b"p" * 1000)
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["VersionId"] not in (None, "null")
    assert s3.head_object(Bucket=bucket, Key="big", VersionId=done["VersionId"])[
        "ContentLength"] == 1000


def test_list_object_versions_pages(s3: Any) -> None:
    bucket = new_bucket(s3)
    made: list[tuple[str, str]] = []
    for key in ("a/1", "a/2", "b", "c"):
        for n in range(3):
            made.append((key, s3.put_object(Bucket=bucket, Key=key,
                                            Body=f"{key}{n}".encode())["VersionId"]))
    expected = [v for key in ("a/1", "a/2", "b", "c")
                for v in reversed([v for k, v in made if k == key])]
    seen: list[str] = []
    kwargs: dict[str, Any] = {"MaxKeys": 5}
    while True:
        page = s3.list_object_versions(Bucket=bucket, **kwargs)
        ids = [version for _key, version in _wire_order(s3, bucket, **kwargs)]
        assert len(ids) <= 5
        seen.extend(ids)
        if not page["IsTruncated"]:
            break
        kwargs = {"MaxKeys": 5, "KeyMarker": page["NextKeyMarker"],
                  "VersionIdMarker": page["NextVersionIdMarker"]}
    assert seen == expected
    rolled = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["a/"]
    assert {v["Key"] for v in rolled["Versions"]} == {"b", "c"}
    only_b = s3.list_object_versions(Bucket=bucket, Prefix="b")
    assert [v["VersionId"] for v in only_b["Versions"]] == expected[6:9]
    after_b = s3.list_object_versions(Bucket=bucket, KeyMarker="b")
    assert [v["Key"] for v in after_b["Versions"]] == ["c"] * 3
    status, code, _ = error(lambda: s3.list_object_versions(Bucket=bucket,
                                                            VersionIdMarker=expected[0]))
    assert (status, code) == (400, "InvalidArgument")


def test_suspended_bucket_writes_the_null_version(s3: Any) -> None:
    bucket = new_bucket(s3)
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"versioned")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"null one")
    assert first.get("VersionId", "null") == "null"
    s3.put_object(Bucket=bucket, Key="k", Body=b"null two")  # replaces the null version
    assert versions_of(s3, bucket) == [("k", "null", True, False), ("k", kept, False, False)]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"null two"
    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True and marker["VersionId"] == "null"
    assert versions_of(s3, bucket) == [("k", "null", True, True), ("k", kept, False, False)]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    newest = s3.put_object(Bucket=bucket, Key="k", Body=b"again")["VersionId"]
    assert versions_of(s3, bucket) == [("k", newest, True, False), ("k", "null", False, True),
                                       ("k", kept, False, False)]


def test_delete_objects_reports_markers(s3: Any) -> None:
    bucket = new_bucket(s3)
    v = s3.put_object(Bucket=bucket, Key="x", Body=b"x")["VersionId"]
    s3.put_object(Bucket=bucket, Key="y", Body=b"y")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "x", "VersionId": v}, {"Key": "y"}]})
    by_key = {d["Key"]: d for d in answer["Deleted"]}
    assert by_key["x"]["VersionId"] == v and "DeleteMarker" not in by_key["x"]
    assert by_key["y"]["DeleteMarker"] is True and by_key["y"]["DeleteMarkerVersionId"]
    assert [e[0] for e in versions_of(s3, bucket)] == ["y", "y"]
    # A bucket with versions or markers left is not empty.
    status, code, _ = error(lambda: s3.delete_bucket(Bucket=bucket))
    assert (status, code) == (409, "BucketNotEmpty")


def test_quota_counts_every_version(server: GatewayProcess, s3: Any) -> None:
    bucket = new_bucket(s3)
    for n in range(3):
        s3.put_object(Bucket=bucket, Key="doc", Body=b"v" * (100 * (n + 1)))
    usage = cli_json(server.data_dir, "quota", "get", bucket)
    assert usage["used_bytes"] == 600 and usage["used_objects"] == 3
    s3.delete_object(Bucket=bucket, Key="doc")  # a marker holds nothing
    assert cli_json(server.data_dir, "quota", "get", bucket)["used_bytes"] == 600
    cli_json(server.data_dir, "quota", "set", bucket, "--max-bytes", "700")
    status, code, _ = error(lambda: s3.put_object(Bucket=bucket, Key="doc", Body=b"w" * 200))
    assert (status, code) == (403, "QuotaExceeded")
    for entry in versions_of(s3, bucket):
        s3.delete_object(Bucket=bucket, Key="doc", VersionId=entry[1])
    usage = cli_json(server.data_dir, "quota", "get", bucket)
    assert usage["used_bytes"] == 0 and usage["used_objects"] == 0
    s3.delete_bucket(Bucket=bucket)


def test_json_api_versioning(server: GatewayProcess, s3: Any) -> None:
    token = cli_json(server.data_dir, "token", "create", "--user", "admin", "--name",
                     os.urandom(4).hex(), "--permission=storage:read",
                     "--permission=storage:write")["token"]
    api = httpx.Client(base_url=server.url + "/api/v1/storage",
                       headers={"Authorization": f"Bearer {token}"})
    name = f"jsonver-{os.urandom(3).hex()}"
    assert api.post("/buckets", json={"name": name, "versioning": True}).status_code == 201
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    first = api.put(f"/buckets/{name}/objects/kb/a.txt", content=b"one").json()
    second = api.put(f"/buckets/{name}/objects/kb/a.txt", content=b"two").json()
    assert first["version_id"] and second["version_id"] != first["version_id"]
    old = api.get(f"/buckets/{name}/objects/kb/a.txt",
                  params={"version_id": first["version_id"]})
    assert old.content == b"one" and old.headers["x-amz-version-id"] == first["version_id"]
    gone = api.delete(f"/buckets/{name}/objects/kb/a.txt").json()
    assert gone["delete_marker"] is True and gone["version_id"]
    assert api.get(f"/buckets/{name}/objects/kb/a.txt").status_code == 404
    assert api.get(f"/buckets/{name}/objects/kb/a.txt",
                   params={"version_id": gone["version_id"]}).status_code == 405
    plain = f"plain-{os.urandom(3).hex()}"
    assert api.post("/buckets", json={"name": plain}).status_code == 201
    assert api.put(f"/buckets/{plain}/objects/x", content=b"x").json()["version_id"] is None


# -- the model ---------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "dir/c"])
BODIES = st.binary(min_size=0, max_size=64)


class VersionedBucket(RuleBasedStateMachine):
    """S3's rules, as a list of versions per key (newest last): each is (version id,
    body or None for a delete marker)."""

    s3: Any = None
    versions = Bundle("versions")

    def __init__(self) -> None:
        super().__init__()
        self.bucket = new_bucket(self.s3)
        self.state = "Enabled"
        self.model: dict[str, list[tuple[str, bytes | None]]] = {}

    def _latest(self, key: str) -> tuple[str, bytes | None] | None:
        history = self.model.get(key)
        return history[-1] if history else None

    def _drop_null(self, key: str) -> None:
        self.model[key] = [v for v in self.model.get(key, []) if v[0] != "null"]

    @rule(target=versions, key=KEYS, body=BODIES)
    def put(self, key: str, body: bytes) -> tuple[str, str]:
        answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        version = answer.get("VersionId", "null")
        if self.state == "Suspended":
            assert version == "null"
            self._drop_null(key)
        else:
            assert version != "null"
        self.model.setdefault(key, []).append((version, body))
        return key, version

    @rule(target=versions, key=KEYS)
    def delete(self, key: str) -> tuple[str, str]:
        answer = self.s3.delete_object(Bucket=self.bucket, Key=key)
        assert answer["DeleteMarker"] is True
        version = answer["VersionId"]
        if self.state == "Suspended":
            assert version == "null"
            self._drop_null(key)
        self.model.setdefault(key, []).append((version, None))
        return key, version

    @rule(entry=consumes(versions))
    def delete_version(self, entry: tuple[str, str]) -> None:
        key, version = entry
        self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
        self.model[key] = [v for v in self.model.get(key, []) if v[0] != version]

    @rule(entry=versions)
    def get_version(self, entry: tuple[str, str]) -> None:
        key, version = entry
        held = next((v for v in self.model.get(key, []) if v[0] == version), None)
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=version)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if held is None:
                assert code == "NoSuchVersion", code
            else:
                assert held[1] is None and code == "MethodNotAllowed", (held, code)
            return
        assert held is not None and held[1] is not None
        assert got["Body"].read() == held[1]

    @rule(key=KEYS)
    def get_latest(self, key: str) -> None:
        latest = self._latest(key)
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey"
            assert latest is None or latest[1] is None
            return
        assert latest is not None and latest[1] is not None
        assert got["Body"].read() == latest[1]
        assert got.get("VersionId", "null") == latest[0]

    @precondition(lambda self: self.state == "Enabled")
    @rule()
    def suspend(self) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket,
                                      VersioningConfiguration={"Status": "Suspended"})
        self.state = "Suspended"

    @precondition(lambda self: self.state == "Suspended")
    @rule()
    def enable(self) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket,
                                      VersioningConfiguration={"Status": "Enabled"})
        self.state = "Enabled"

    @invariant()
    def listing_matches(self) -> None:
        expected = [(key, version, i == len(self.model[key]) - 1, body is None)
                    for key in sorted(self.model)
                    for i, (version, body) in reversed(list(enumerate(self.model[key])))]
        assert versions_of(self.s3, self.bucket) == expected
        live = sorted(k for k, h in self.model.items() if h and h[-1][1] is not None)
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        assert [o["Key"] for o in listed] == live
        for o in listed:
            assert o["ETag"].strip('"') == hashlib.md5(self._latest(o["Key"])[1]).hexdigest()


def test_versioning_state_machine(s3: Any, tmp_path: Path) -> None:
    VersionedBucket.s3 = s3
    run = VersionedBucket.TestCase
    run.settings = settings(max_examples=12, stateful_step_count=25, deadline=None,
                            suppress_health_check=list(HealthCheck))
    run().runTest()


# -- a sweep that decided on an older state ----------------------------------------------


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("versioned", [False, True])
async def test_delete_batch_spares_keys_written_since(tmp_path: Path, versioned: bool) -> None:
    """Lifecycle expiry scans, then deletes: a key overwritten in between (the same row id
    when a never-versioned bucket replaces it in place) is left alone, and nothing else."""
    async with in_process_gateway(tmp_path) as gw:
        principal, _ = await gw.accounts.lookup(ROOT_KEY)
        assert principal is not None
        bucket = await gw.buckets.create(principal, "sweep", versioning=versioned)
        seen = {}
        for key in ("old", "rewritten"):
            record = await gw.objects.put(principal, "sweep", key,
                                          DigestingStream(_body(b"first")),
                                          ObjectAttributes(), size_hint=5)
            seen[key] = (record.id, record.last_modified)
        await gw.objects.put(principal, "sweep", "rewritten", DigestingStream(_body(b"new")),
                             ObjectAttributes(), size_hint=3)
        outcomes = await gw.objects.delete_batch(
            bucket, [("old", None), ("rewritten", None)], owner_id=principal.user_id,
            unchanged=seen)
        assert [(o.key, o.changed) for o in outcomes] == [("old", True), ("rewritten", False)]
        read = await gw.objects.open(principal, "sweep", "rewritten")
        assert b"".join([chunk async for chunk in read.chunks()]) == b"new"
        with pytest.raises(errors.NoSuchKey):
            await gw.objects.open(principal, "sweep", "old", head=True)
