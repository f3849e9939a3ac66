"""Bucket lifecycle against a real gateway: Put/Get/DeleteBucketLifecycleConfiguration with
boto3 (and hand-made XML for what boto3 never sends), S3's validation errors, and what a
run does at a given clock (``gateway lifecycle run --now …``): expiration by days (S3's
rounding to midnight UTC) and by date, with prefix, tag and size filters; aborting old
multipart uploads, whose parts leave the quota; the bot packages' ``.gbdrive/temp/`` rule;
and, in versioned buckets, delete markers, noncurrent versions and expired delete markers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from gateway.service.lifecycle_rules import (
    compile_rules,
    expiration_header,
    expires_at,
    package_temp_rule,
    validate_rules,
)
from tests._server import GatewayProcess, run_cli, run_cli_here
from tests.conftest import make_client

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MiB = 1024 * 1024
BOB_KEY, BOB_SECRET = "LIFECYCLEBOBKEY00001", "lifecycle-bob-secret-0123456789abcdefghij"


# -- helpers -------------------------------------------------------------------------------


def in_process(data: Path, *args: str) -> tuple[int, str, str]:
    """``gateway <args> --data-dir <data>`` run by the command's own entry point in this
    process (``run_cli_here``; as a separate process would, it opens the running gateway's
    database): exit code, standard output and standard error. ``run_cli`` still runs the
    real command in ``test_cli_refuses_a_bad_clock`` and
    ``test_expiration_days_counts_to_midnight``."""
    done = run_cli_here(data, *args)
    return done.returncode, done.stdout, done.stderr



def gateway_cli(data: Path, *args: str) -> str:
    """:func:`in_process`, which must succeed: its standard output."""
    code, out, err = in_process(data, *args)
    assert code == 0, (args, err)
    return out


def cli_json(data: Path, *args: str) -> dict[str, Any]:
    """:func:`gateway_cli` with ``--json``: its object."""
    parsed: dict[str, Any] = json.loads(gateway_cli(data, *args, "--json"))
    return parsed


class Env:
    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        self.data: Path = server.data_dir
        self.s3 = make_client(server)

    def run(self, now: datetime, *, spawn: bool = False) -> dict[str, Any]:
        """``gateway lifecycle run --now <now> --json``: the report (``spawn``: as its own
        process, else in this one)."""
        args = ("lifecycle", "run", "--now", now.isoformat())
        if not spawn:
            return cli_json(self.data, *args)
        result = run_cli(self.data, *args, "--json")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def keys(self, bucket: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    def versions(self, bucket: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(key, version id) of the objects' versions and of the delete markers."""
        listed = self.s3.list_object_versions(Bucket=bucket)
        return ([(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])],
                [(m["Key"], m["VersionId"]) for m in listed.get("DeleteMarkers", [])])

    def put_rules(self, bucket: str, *rules: dict[str, Any]) -> None:
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("lifecycle") / "data"
    server = GatewayProcess(data).start()
    try:
        yield Env(server)
    finally:
        server.stop()


@pytest.fixture
def bucket(env: Env) -> Iterator[str]:
    name = f"lc-{uuid.uuid4().hex[:16]}"
    env.s3.create_bucket(Bucket=name)
    yield name
    # Its rules must not act in the runs of the tests that follow.
    env.s3.delete_bucket_lifecycle(Bucket=name)


@pytest.fixture
def versioned(env: Env, bucket: str) -> str:
    env.s3.put_bucket_versioning(Bucket=bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    return bucket


def midnight(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def written(env: Env, bucket: str, *keys: str) -> tuple[datetime, datetime]:
    """The earliest and latest LastModified of ``keys``."""
    times = [env.s3.head_object(Bucket=bucket, Key=k)["LastModified"] for k in keys]
    return min(times), max(times)


def client_error(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def signed(server: GatewayProcess, method: str, path: str, query: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> httpx.Response:
    """A SigV4-signed request built by hand, for bodies boto3 never sends."""
    url = f"{server.url}{quote(path, safe='/~')}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3",
                "us-east-1").add_auth(request)
    return httpx.request(method, url, headers=dict(request.headers.items()), content=body,
                         timeout=30)


def put_xml(env: Env, bucket: str, body: str, *, md5: bool = True,
            headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body.encode()
    sent = dict(headers or {})
    if md5:
        sent["Content-MD5"] = base64.b64encode(hashlib.md5(raw).digest()).decode()
    return signed(env.server, "PUT", f"/{bucket}", "lifecycle", raw, sent)


def error_of(response: httpx.Response) -> tuple[int, str]:
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.content
    return response.status_code, root.findtext("Code") or ""


def rule(**fields: Any) -> dict[str, Any]:
    """A valid rule, with ``fields`` replacing or adding to it."""
    base: dict[str, Any] = {"ID": "r1", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                            "Expiration": {"Days": 30}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


# -- day counting (no server) ---------------------------------------------------------------


def test_days_round_up_to_midnight_utc() -> None:
    # S3's own example: written 1/15 at 10:30 UTC, Days 3: gone on 1/19 at 00:00 UTC.
    assert expires_at(datetime(2014, 1, 15, 10, 30, tzinfo=UTC), 3) \
        == datetime(2014, 1, 19, tzinfo=UTC)
    # Another zone's late evening is already the next day in UTC.
    late = datetime.fromisoformat("2014-01-15T23:30:00-02:00")
    assert expires_at(late, 1) == datetime(2014, 1, 18, tzinfo=UTC)
    assert expires_at(late, 2**31 - 1) is None  # beyond any calendar: never


def test_expiration_header_names_the_earliest_rule() -> None:
    rules = compile_rules(validate_rules([
        {"ID": "slow", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 30}},
        {"ID": "fast", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "Expiration": {"Days": "2"}},
        {"ID": "off", "Status": "Disabled", "Filter": {}, "Expiration": {"Days": 1}},
    ]))
    written_at = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert expiration_header(rules, "tmp/x", None, 1, written_at) \
        == 'expiry-date="Mon, 04 Mar 2024 00:00:00 GMT", rule-id="fast"'
    assert expiration_header(rules, "other", None, 1, written_at) \
        == 'expiry-date="Mon, 01 Apr 2024 00:00:00 GMT", rule-id="slow"'
    temp = [package_temp_rule(3600)]
    assert expiration_header(temp, ".gbdrive/temp/a", None, 1, written_at) \
        == 'expiry-date="Fri, 01 Mar 2024 09:00:00 GMT", rule-id="gbdrive-temp"'
    assert expiration_header(temp, ".gbdrive/temp/", None, 0, written_at) is None


# -- the configuration ---------------------------------------------------------------------


def test_put_get_delete(env: Env, bucket: str) -> None:
    rules = [
        {"ID": "prefix", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
         "Expiration": {"Days": 30}},
        {"ID": "tag", "Status": "Disabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
         "Expiration": {"Date": datetime(2031, 1, 2, tzinfo=UTC)}},
        {"ID": "and", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "x", "Value": "1"},
                                                     {"Key": "y", "Value": "2"}],
                            "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 7, "NewerNoncurrentVersions": 3}},
        {"ID": "size", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1024},
         "Expiration": {"Days": 1}},
        {"ID": "everything", "Status": "Enabled", "Filter": {},
         "Expiration": {"ExpiredObjectDeleteMarker": True},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    ]
    answer = env.s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got == rules
    # A PUT replaces the whole configuration.
    env.put_rules(bucket, rules[0])
    assert env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules[:1]
    deleted = env.s3.delete_bucket_lifecycle(Bucket=bucket)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client_error(lambda: env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)) \
        == (404, "NoSuchLifecycleConfiguration")
    # Deleting what is not there is no error (as S3).
    assert env.s3.delete_bucket_lifecycle(Bucket=bucket)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204


def test_get_without_configuration(env: Env, bucket: str) -> None:
    assert client_error(lambda: env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)) \
        == (404, "NoSuchLifecycleConfiguration")
    assert client_error(lambda: env.s3.get_bucket_lifecycle_configuration(
        Bucket=f"lc-missing-{uuid.uuid4().hex[:8]}")) == (404, "NoSuchBucket")


def test_rule_without_id_gets_one_and_legacy_prefix_stays(env: Env, bucket: str) -> None:
    env.put_rules(bucket, {"Status": "Enabled", "Prefix": "old/", "Expiration": {"Days": 5}})
    (got,) = env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got["ID"] and len(got["ID"]) <= 255
    assert got["Prefix"] == "old/" and "Filter" not in got
    assert got["Expiration"] == {"Days": 5} and got["Status"] == "Enabled"


def test_legacy_xml_without_namespace(env: Env, bucket: str) -> None:
    body = ("<LifecycleConfiguration><Rule><ID>x</ID><Prefix></Prefix><Status>Enabled</Status>"
            "<Expiration><Days>3</Days></Expiration></Rule></LifecycleConfiguration>")
    assert put_xml(env, bucket, body).status_code == 200
    got = signed(env.server, "GET", f"/{bucket}", "lifecycle")
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(got.content)
    assert root.tag == f"{{{NS}}}LifecycleConfiguration"
    assert root.findtext(f"{{{NS}}}Rule/{{{NS}}}Expiration/{{{NS}}}Days") == "3"
    assert root.find(f"{{{NS}}}Rule/{{{NS}}}Prefix") is not None


INVALID = [
    ("id-too-long", [rule(ID="a" * 256)], 400, "InvalidArgument"),
    ("same-id", [rule(), rule(Filter={"Prefix": "other/"})], 400, "InvalidArgument"),
    ("bad-status", [rule(Status="invalid")], 400, "MalformedXML"),
    ("days-zero", [rule(Expiration={"Days": 0})], 400, "InvalidArgument"),
    ("days-negative", [rule(Expiration={"Days": -3})], 400, "InvalidArgument"),
    ("date-not-midnight",
     [rule(Expiration={"Date": datetime(2031, 1, 2, 12, 0, tzinfo=UTC)})], 400,
     "InvalidArgument"),
    ("days-and-marker", [rule(Expiration={"Days": 1, "ExpiredObjectDeleteMarker": True})],
     400, "MalformedXML"),
    ("days-and-date", [rule(Expiration={"Days": 1, "Date": datetime(2031, 1, 2, tzinfo=UTC)})],
     400, "MalformedXML"),
    ("abort-with-tag", [rule(Filter={"Tag": {"Key": "k", "Value": "v"}}, Expiration=None,
                             AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1})],
     400, "InvalidRequest"),
    ("marker-with-tags", [rule(Filter={"And": {"Prefix": "p/",
                                               "Tags": [{"Key": "k", "Value": "v"}]}},
                               Expiration={"ExpiredObjectDeleteMarker": True})],
     400, "InvalidRequest"),
    ("abort-days-zero", [rule(Expiration=None,
                              AbortIncompleteMultipartUpload={"DaysAfterInitiation": 0})],
     400, "InvalidArgument"),
    ("noncurrent-days-zero", [rule(Expiration=None,
                                   NoncurrentVersionExpiration={"NoncurrentDays": 0})],
     400, "InvalidArgument"),
    ("newer-noncurrent-101", [rule(NoncurrentVersionExpiration={
        "NoncurrentDays": 1, "NewerNoncurrentVersions": 101})], 400, "InvalidArgument"),
    ("and-of-one", [rule(Filter={"And": {"Prefix": "p/"}})], 400, "MalformedXML"),
    ("two-predicates", [rule(Filter={"Prefix": "p/", "ObjectSizeGreaterThan": 5})], 400,
     "MalformedXML"),
    ("sizes-reversed", [rule(Filter={"And": {"ObjectSizeGreaterThan": 100,
                                             "ObjectSizeLessThan": 100}})],
     400, "InvalidArgument"),
    ("duplicate-tag-keys", [rule(Filter={"And": {"Tags": [{"Key": "k", "Value": "1"},
                                                          {"Key": "k", "Value": "2"}]}})],
     400, "InvalidRequest"),
    ("no-action", [rule(Expiration=None)], 400, "InvalidRequest"),
    ("transition", [rule(Transitions=[{"Days": 30, "StorageClass": "GLACIER"}])], 400,
     "InvalidStorageClass"),
    ("noncurrent-transition", [rule(NoncurrentVersionTransitions=[
        {"NoncurrentDays": 30, "StorageClass": "STANDARD_IA"}])], 400, "InvalidStorageClass"),
    ("too-many-rules", [rule(ID=f"r{i}") for i in range(1001)], 400, "InvalidRequest"),
]


@pytest.mark.parametrize(("rules", "status", "code"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_configurations(env: Env, bucket: str, rules: list[dict[str, Any]],
                                status: int, code: str) -> None:
    assert client_error(lambda: env.s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules})) == (status, code)
    # Nothing was stored.
    assert client_error(lambda: env.s3.get_bucket_lifecycle_configuration(Bucket=bucket)) \
        == (404, "NoSuchLifecycleConfiguration")


def _doc(rules: str) -> str:
    return f'<LifecycleConfiguration xmlns="{NS}">{rules}</LifecycleConfiguration>'


_OK_RULE = ("<ID>r</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status>"
            "<Expiration><Days>1</Days></Expiration>")
RAW_INVALID = [
    ("not-xml", "this is not xml", "MalformedXML"),
    ("wrong-root", f'<Lifecycle xmlns="{NS}"><Rule>{_OK_RULE}</Rule></Lifecycle>',
     "MalformedXML"),
    ("no-rule", _doc(""), "MalformedXML"),
    ("unknown-element", _doc(f"<Rule>{_OK_RULE}<Colour>red</Colour></Rule>"), "MalformedXML"),
    ("days-not-a-number",
     _doc("<Rule><ID>r</ID><Filter/><Status>Enabled</Status>"
          "<Expiration><Days>soon</Days></Expiration></Rule>"), "MalformedXML"),
    ("no-filter-no-prefix",
     _doc("<Rule><ID>r</ID><Status>Enabled</Status>"
          "<Expiration><Days>1</Days></Expiration></Rule>"), "MalformedXML"),
    ("filter-and-prefix", _doc(f"<Rule>{_OK_RULE}<Prefix>q/</Prefix></Rule>"),
     "MalformedXML"),
    ("no-status",
     _doc("<Rule><ID>r</ID><Filter/><Expiration><Days>1</Days></Expiration></Rule>"),
     "MalformedXML"),
    ("two-expirations",
     _doc(f"<Rule>{_OK_RULE}<Expiration><Days>2</Days></Expiration></Rule>"), "MalformedXML"),
    ("empty-expiration",
     _doc("<Rule><ID>r</ID><Filter/><Status>Enabled</Status><Expiration/></Rule>"),
     "MalformedXML"),
    ("date-not-iso",
     _doc("<Rule><ID>r</ID><Filter/><Status>Enabled</Status>"
          "<Expiration><Date>next tuesday</Date></Expiration></Rule>"), "MalformedXML"),
]


@pytest.mark.parametrize(("body", "code"), [c[1:] for c in RAW_INVALID],
                         ids=[c[0] for c in RAW_INVALID])
def test_invalid_documents(env: Env, bucket: str, body: str, code: str) -> None:
    assert error_of(put_xml(env, bucket, body)) == (400, code)


def test_put_needs_an_integrity_header(env: Env, bucket: str) -> None:
    body = _doc(f"<Rule>{_OK_RULE}</Rule>")
    assert error_of(put_xml(env, bucket, body, md5=False)) == (400, "InvalidRequest")
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    assert error_of(put_xml(env, bucket, body, md5=False,
                            headers={"Content-MD5": wrong})) == (400, "BadDigest")
    # boto3 sends a flexible checksum (x-amz-checksum-*) instead; that is enough.
    env.put_rules(bucket, rule())


def test_who_may_configure(env: Env, bucket: str) -> None:
    gateway_cli(env.data, "user", "add", "lcbob")
    gateway_cli(env.data, "key", "create", "--user", "lcbob", "--access-key", BOB_KEY,
                "--secret-key", BOB_SECRET)
    bob = boto3.client("s3", endpoint_url=env.server.url, aws_access_key_id=BOB_KEY,
                       aws_secret_access_key=BOB_SECRET, region_name="us-east-1")
    anonymous = boto3.client("s3", endpoint_url=env.server.url, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED))
    config = {"Rules": [rule()]}
    for caller in (bob, anonymous):
        assert client_error(lambda c=caller: c.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration=config)) == (403, "AccessDenied")
    # Writing objects is not enough; ``full`` (as for CORS and ACLs) is.
    gateway_cli(env.data, "grant", "set", bucket, "--user", "lcbob", "--permission", "write")
    assert client_error(lambda: bob.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration=config)) == (403, "AccessDenied")
    gateway_cli(env.data, "grant", "set", bucket, "--user", "lcbob", "--permission", "full")
    bob.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=config)
    assert bob.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == config["Rules"]
    assert client_error(lambda: anonymous.get_bucket_lifecycle_configuration(
        Bucket=bucket)) == (403, "AccessDenied")


# -- the run: unversioned buckets ----------------------------------------------------------


def test_expiration_days_counts_to_midnight(env: Env, bucket: str) -> None:
    s3 = env.s3
    for key in ("logs/a", "logs/b", "data/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    env.put_rules(bucket, rule(Filter={"Prefix": "logs/"}, Expiration={"Days": 1}))
    first, last = written(env, bucket, "logs/a", "logs/b", "data/c")
    # Written on day D, one day to live: the object goes at midnight starting D + 2.
    env.run(midnight(first) + timedelta(days=2) - timedelta(seconds=1))
    assert env.keys(bucket) == ["data/c", "logs/a", "logs/b"]
    report = env.run(midnight(last) + timedelta(days=2), spawn=True)
    assert report["expired"] >= 2 and report["failed_buckets"] == []
    assert env.keys(bucket) == ["data/c"]
    usage = cli_json(env.data, "quota", "get", bucket)
    assert (usage["used_bytes"], usage["used_objects"]) == (1, 1)


def test_expiration_filters_by_tags_and_size(env: Env, bucket: str) -> None:
    s3 = env.s3
    objects = {  # key: (size, tags)
        "t/match": (50, "k=v&other=1"),
        "t/too-small": (5, "k=v"),
        "t/too-big": (200, "k=v"),
        "t/untagged": (50, ""),
        "t/other-value": (50, "k=w"),
        "u/other-prefix": (50, "k=v"),
    }
    for key, (size, tags) in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size, Tagging=tags)
    env.put_rules(bucket, rule(
        Filter={"And": {"Prefix": "t/", "Tags": [{"Key": "k", "Value": "v"}],
                        "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 100}},
        Expiration={"Days": 3}))
    _first, last = written(env, bucket, *objects)
    env.run(midnight(last) + timedelta(days=30))
    assert env.keys(bucket) == sorted(set(objects) - {"t/match"})


def test_size_only_and_tag_only_filters(env: Env, bucket: str) -> None:
    s3 = env.s3
    s3.put_object(Bucket=bucket, Key="big", Body=b"x" * 2048)
    s3.put_object(Bucket=bucket, Key="small", Body=b"x" * 10)
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x" * 10, Tagging="purge=yes")
    env.put_rules(
        bucket,
        rule(ID="size", Filter={"ObjectSizeGreaterThan": 1024}, Expiration={"Days": 1}),
        rule(ID="tag", Filter={"Tag": {"Key": "purge", "Value": "yes"}},
             Expiration={"Days": 1}),
        rule(ID="off", Status="Disabled", Filter={}, Expiration={"Days": 1}))
    _first, last = written(env, bucket, "big", "small", "tagged")
    env.run(midnight(last) + timedelta(days=2))
    assert env.keys(bucket) == ["small"]


def test_expiration_date(env: Env, bucket: str) -> None:
    s3 = env.s3
    s3.put_object(Bucket=bucket, Key="d/old", Body=b"x")
    s3.put_object(Bucket=bucket, Key="keep/old", Body=b"x")
    _first, last = written(env, bucket, "d/old", "keep/old")
    date = midnight(last) + timedelta(days=10)
    env.put_rules(bucket, rule(Filter={"Prefix": "d/"}, Expiration={"Date": date}))
    env.run(date - timedelta(seconds=1))
    assert env.keys(bucket) == ["d/old", "keep/old"]
    env.run(date)
    assert env.keys(bucket) == ["keep/old"]
    # From that date on, whatever the rule names goes at the next run, however new.
    s3.put_object(Bucket=bucket, Key="d/new", Body=b"x")
    env.run(date + timedelta(days=1))
    assert env.keys(bucket) == ["keep/old"]


def test_expired_objects_are_lifecycle_deletes_in_the_change_log(env: Env, bucket: str) -> None:
    made = cli_json(env.data, "token", "create", "--user", "admin", "--name",
                    uuid.uuid4().hex[:8], "--permission=storage:read")
    env.s3.put_object(Bucket=bucket, Key="feed/a", Body=b"x")
    env.put_rules(bucket, rule(Filter={"Prefix": "feed/"}, Expiration={"Days": 1}))
    with httpx.Client(base_url=env.server.url, timeout=30,
                      headers={"Authorization": f"Bearer {made['token']}"}) as api:
        cursor = api.get("/api/v1/storage/changes",
                         params={"bucket": bucket, "since": "now"}).json()["cursor"]
        _first, last = written(env, bucket, "feed/a")
        env.run(midnight(last) + timedelta(days=2))
        feed = api.get("/api/v1/storage/changes", params={"bucket": bucket, "since": cursor})
    assert [(c["key"], c["event"]) for c in feed.json()["changes"]] == [
        ("feed/a", "s3:LifecycleExpiration:Delete")]


def test_abort_incomplete_uploads_frees_quota(env: Env, bucket: str) -> None:
    s3 = env.s3
    cli_json(env.data, "quota", "set", bucket, "--max-bytes", "3MiB")
    old = s3.create_multipart_upload(Bucket=bucket, Key="mp/old")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp/old", UploadId=old, PartNumber=1,
                   Body=b"p" * (2 * MiB))
    other = s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")["UploadId"]
    # The parts hold the quota: a 2 MiB object does not fit beside them.
    assert client_error(lambda: s3.put_object(Bucket=bucket, Key="big",
                                              Body=b"b" * (2 * MiB)))[1] == "QuotaExceeded"
    env.put_rules(bucket, rule(Filter={"Prefix": "mp/"}, Expiration=None,
                               AbortIncompleteMultipartUpload={"DaysAfterInitiation": 2}))
    started = {u["UploadId"]: u["Initiated"]
               for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]}
    assert set(started) == {old, other}
    env.run(midnight(started[old]) + timedelta(days=3) - timedelta(seconds=1))
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 2
    report = env.run(midnight(started[old]) + timedelta(days=3))
    assert report["uploads_aborted"] >= 1
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] \
        == [other]
    assert client_error(lambda: s3.list_parts(Bucket=bucket, Key="mp/old",
                                              UploadId=old)) == (404, "NoSuchUpload")
    assert cli_json(env.data, "quota", "get", bucket)["used_bytes"] == 0
    s3.put_object(Bucket=bucket, Key="big", Body=b"b" * (2 * MiB))
    s3.abort_multipart_upload(Bucket=bucket, Key="elsewhere/x", UploadId=other)
    s3.delete_object(Bucket=bucket, Key="big")


def test_package_temp_folder_rule(env: Env) -> None:
    """A bot package's ``.gbdrive/temp/`` expires after GATEWAY_TEMP_EXPIRY (1 day here),
    to the second, besides the rules of its S3 configuration, which it does not show."""
    s3 = env.s3
    pkg = f"lc{uuid.uuid4().hex[:10]}.gbai"
    s3.create_bucket(Bucket=pkg)
    for key in (".gbdrive/temp/", ".gbdrive/temp/a.txt", "mybot.gbdrive/temp/b.txt",
                ".gbdrive/attachments/keep.txt", ".gbkb/data/faq.csv", ".gbkb/data/old.csv"):
        body = b"q,a\n" if key.endswith(".csv") else b"" if key.endswith("/") else b"t"
        s3.put_object(Bucket=pkg, Key=key, Body=body)
    assert client_error(lambda: s3.get_bucket_lifecycle_configuration(Bucket=pkg)) \
        == (404, "NoSuchLifecycleConfiguration")
    first, last = written(env, pkg, ".gbdrive/temp/a.txt", "mybot.gbdrive/temp/b.txt")
    env.run(first + timedelta(days=1) - timedelta(seconds=5))
    assert ".gbdrive/temp/a.txt" in env.keys(pkg)
    env.put_rules(pkg, rule(ID="old-kb", Filter={"Prefix": ".gbkb/data/old"},
                            Expiration={"Days": 1}))
    env.run(midnight(last) + timedelta(days=2))
    assert env.keys(pkg) == [".gbdrive/attachments/keep.txt", ".gbdrive/temp/",
                             ".gbkb/data/faq.csv"]
    assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=pkg)["Rules"]] \
        == ["old-kb"]


def test_cli_refuses_a_bad_clock(env: Env) -> None:
    code, _out, err = in_process(env.data, "lifecycle", "run", "--now", "next tuesday")
    assert code == 2 and "lifecycle" in err
    plain = run_cli(env.data, "lifecycle", "run")
    assert plain.returncode == 0 and "bucket(s)" in plain.stdout


# -- the run: versioned buckets (need S3 versioning) -----------------------------------------


def test_versioned_expiration_makes_a_delete_marker(env: Env, versioned: str) -> None:
    s3 = env.s3
    version = s3.put_object(Bucket=versioned, Key="v/a", Body=b"one")["VersionId"]
    env.put_rules(versioned, rule(Filter={"Prefix": "v/"}, Expiration={"Days": 1}))
    _first, last = written(env, versioned, "v/a")
    env.run(midnight(last) + timedelta(days=2))
    objects, markers = env.versions(versioned)
    assert objects == [("v/a", version)] and len(markers) == 1
    assert client_error(lambda: s3.get_object(Bucket=versioned, Key="v/a"))[1] == "NoSuchKey"
    assert s3.get_object(Bucket=versioned, Key="v/a", VersionId=version)["Body"].read() \
        == b"one"
    # A second run does not pile markers on markers.
    env.run(midnight(last) + timedelta(days=2, hours=1))
    assert len(env.versions(versioned)[1]) == 1


def test_noncurrent_versions_expire(env: Env, versioned: str) -> None:
    s3 = env.s3
    made = [s3.put_object(Bucket=versioned, Key="n/k", Body=f"v{i}".encode())["VersionId"]
            for i in range(4)]
    other = s3.put_object(Bucket=versioned, Key="m/k", Body=b"0")["VersionId"]
    s3.put_object(Bucket=versioned, Key="m/k", Body=b"1")
    env.put_rules(versioned, rule(Filter={"Prefix": "n/"}, Expiration=None,
                                  NoncurrentVersionExpiration={"NoncurrentDays": 1,
                                                               "NewerNoncurrentVersions": 2}))
    _first, last = written(env, versioned, "n/k")
    env.run(midnight(last) + timedelta(days=2) - timedelta(seconds=1))
    assert len(env.versions(versioned)[0]) == 6
    env.run(midnight(last) + timedelta(days=2))
    kept = {v for k, v in env.versions(versioned)[0] if k == "n/k"}
    # The current version and the two newest noncurrent ones stay.
    assert kept == set(made[1:])
    assert other in {v for k, v in env.versions(versioned)[0] if k == "m/k"}
    env.put_rules(versioned, rule(Filter={"Prefix": "n/"}, Expiration=None,
                                  NoncurrentVersionExpiration={"NoncurrentDays": 1}))
    env.run(midnight(last) + timedelta(days=2))
    assert {v for k, v in env.versions(versioned)[0] if k == "n/k"} == {made[3]}


def test_expired_delete_markers_go(env: Env, versioned: str) -> None:
    s3 = env.s3
    lone = s3.put_object(Bucket=versioned, Key="x/lone", Body=b"1")["VersionId"]
    s3.delete_object(Bucket=versioned, Key="x/lone")
    s3.delete_object(Bucket=versioned, Key="x/lone", VersionId=lone)  # the marker is alone
    s3.put_object(Bucket=versioned, Key="x/kept", Body=b"1")
    s3.delete_object(Bucket=versioned, Key="x/kept")  # a marker over a noncurrent version
    markers = env.versions(versioned)[1]
    assert sorted(k for k, _v in markers) == ["x/kept", "x/lone"]
    env.put_rules(versioned, rule(Filter={"Prefix": "x/"},
                                  Expiration={"ExpiredObjectDeleteMarker": True}))
    report = env.run(datetime.now(UTC))
    assert report["delete_markers_removed"] >= 1
    assert [k for k, _v in env.versions(versioned)[1]] == ["x/kept"]
    assert [k for k, _v in env.versions(versioned)[0]] == ["x/kept"]


def test_days_rule_removes_old_lone_delete_markers(env: Env, versioned: str) -> None:
    s3 = env.s3
    version = s3.put_object(Bucket=versioned, Key="y/a", Body=b"1")["VersionId"]
    s3.delete_object(Bucket=versioned, Key="y/a")
    s3.delete_object(Bucket=versioned, Key="y/a", VersionId=version)
    env.put_rules(versioned, rule(Filter={"Prefix": "y/"}, Expiration={"Days": 1}))
    now = datetime.now(UTC)
    env.run(now)  # the marker is too young for the rule
    assert len(env.versions(versioned)[1]) == 1
    env.run(midnight(now) + timedelta(days=2))
    assert env.versions(versioned) == ([], [])


def test_expiration_then_noncurrent_cleanup_empties_a_key(env: Env, versioned: str) -> None:
    """Days, NoncurrentDays and ExpiredObjectDeleteMarker together: a key expires behind a
    marker, its version goes once noncurrent long enough, then the marker, alone, goes.
    (What a run does is stamped with the real clock: the version is noncurrent from now.)"""
    s3 = env.s3
    s3.put_object(Bucket=versioned, Key="z/a", Body=b"1")
    markers_rule = rule(ID="markers", Filter={"Prefix": "z/"},
                        Expiration={"ExpiredObjectDeleteMarker": True})
    env.put_rules(versioned, rule(ID="expire", Filter={"Prefix": "z/"},
                                  Expiration={"Days": 1}), markers_rule)
    _first, last = written(env, versioned, "z/a")
    env.run(midnight(last) + timedelta(days=2))
    objects, markers = env.versions(versioned)
    assert len(objects) == 1 and len(markers) == 1  # the marker is not alone
    env.put_rules(versioned, rule(ID="expire", Filter={"Prefix": "z/"},
                                  Expiration={"Days": 1},
                                  NoncurrentVersionExpiration={"NoncurrentDays": 1}),
                  markers_rule)
    now = datetime.now(UTC)
    env.run(now)  # noncurrent for less than a day
    assert env.versions(versioned) == (objects, markers)
    env.run(midnight(now) + timedelta(days=2))  # the version goes, then the marker
    assert env.versions(versioned) == ([], [])
