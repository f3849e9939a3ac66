"""POST Object form authentication and policy, with boto3's generate_presigned_post as the
oracle (SigV4 and SigV2, the latter being boto3's default)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.auth import VerifiedPost, check_content_length, verify_post_form
from gateway.auth.sigv4 import signing_key

AK, SECRET = "AKIDPOSTEXAMPLE", "post/secret+KEY"
BUCKET = "uploads-bucket"


async def lookup(access_key: str) -> str | None:
    return {AK: SECRET}.get(access_key)


def client(config: Config | None = None, *, access_key: str = AK,
           secret: str = SECRET) -> Any:
    kwargs: dict[str, Any] = {} if config is None else {"config": config}
    return boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret, **kwargs)


DEFAULT = client()
V2 = client(Config(signature_version="s3"))
V4 = client(Config(signature_version="s3v4"))
ALL = pytest.mark.parametrize("s3", [V4, V2, DEFAULT], ids=["s3v4", "s3", "default"])


def post(s3: Any, key: str = "user/photo.png", fields: dict[str, Any] | None = None,
         conditions: list[Any] | None = None, expires: int = 3600,
         bucket: str = BUCKET) -> dict[str, str]:
    form = s3.generate_presigned_post(bucket, key, Fields=dict(fields or {}),
                                      Conditions=list(conditions or []), ExpiresIn=expires)
    assert form["url"].endswith("/" + bucket)
    return dict(form["fields"])


async def verify(fields: dict[str, str], *, bucket: str = BUCKET,
                 filename: str | None = "photo.png",
                 now: datetime | None = None) -> VerifiedPost:
    return await verify_post_form(fields, bucket=bucket, filename=filename,
                                  lookup_secret=lookup, now=now)


def policy_of(fields: dict[str, str]) -> dict[str, Any]:
    name = next(n for n in fields if n.lower() == "policy")
    document: dict[str, Any] = json.loads(base64.b64decode(fields[name]))
    return document


def resign(fields: dict[str, str], document: Any, *, raw: str | None = None) -> dict[str, str]:
    """Replace the policy and sign it properly, as a forger holding the secret would."""
    fields = dict(fields)
    policy = raw if raw is not None else base64.b64encode(
        json.dumps(document).encode()).decode()
    fields["policy"] = policy
    if "x-amz-signature" in fields:
        _, date, region, service, _ = fields["x-amz-credential"].split("/")
        key = signing_key(SECRET, date, region, service)
        fields["x-amz-signature"] = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    else:
        fields["signature"] = base64.b64encode(
            hmac.new(SECRET.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    return fields


FULL_FIELDS = {"Content-Type": "image/png", "x-amz-meta-owner": "eric",
               "success_action_status": "201", "acl": "private",
               "Cache-Control": "max-age=60"}


def full_conditions() -> list[Any]:
    return [["content-length-range", 10, 1000], ["starts-with", "$key", "user/"],
            ["starts-with", "$Content-Type", "image/"], {"x-amz-meta-owner": "eric"},
            {"success_action_status": "201"}, ["eq", "$acl", "private"],
            ["starts-with", "$Cache-Control", ""]]


# -- accepted --------------------------------------------------------------------------------


def test_boto3_forms() -> None:
    assert {"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature",
            "policy"} <= set(post(V4))
    for s3 in (V2, DEFAULT):
        fields = post(s3)
        assert {"AWSAccessKeyId", "signature", "policy"} <= set(fields)
        assert "x-amz-signature" not in fields


@ALL
async def test_minimal_form(s3: Any) -> None:
    verified = await verify(post(s3, "plain key.txt"))
    assert verified.access_key == AK
    assert verified.key == "plain key.txt"
    assert verified.content_length_range is None
    assert verified.fields["key"] == "plain key.txt"
    assert "policy" in verified.fields


@ALL
async def test_full_conditions(s3: Any) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    verified = await verify(fields)
    assert verified.key == "user/photo.png"
    assert verified.content_length_range == (10, 1000)
    assert verified.fields["content-type"] == "image/png"
    assert verified.fields["x-amz-meta-owner"] == "eric"
    assert verified.fields["success_action_status"] == "201"
    assert all(name == name.lower() for name in verified.fields)


@ALL
@pytest.mark.parametrize("filename,expected", [
    ("photo.png", "user/photo.png"),
    ("C:\\Users\\eric\\My Photo.png", "user/My Photo.png"),
    ("../../etc/passwd", "user/passwd"),
    ("ü 日本.txt", "user/ü 日本.txt"),
    (None, "user/"),
])
async def test_filename_substitution(s3: Any, filename: str | None, expected: str) -> None:
    fields = post(s3, "user/${filename}")
    verified = await verify(fields, filename=filename)
    assert verified.key == expected
    assert verified.fields["key"] == "user/${filename}"


@ALL
async def test_exact_key_condition_with_filename_placeholder(s3: Any) -> None:
    """A policy naming the key as sent ("dir/${filename}") holds for any file name."""
    fields = post(s3, "dir/${filename}", conditions=[{"key": "dir/${filename}"}])
    assert (await verify(fields, filename="a.txt")).key == "dir/a.txt"


@ALL
async def test_field_names_case_insensitive(s3: Any) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    shouted = {name.upper(): value for name, value in fields.items()}
    verified = await verify(shouted)
    assert verified.key == "user/photo.png"
    assert verified.fields["x-amz-meta-owner"] == "eric"
    # and in the policy's conditions
    lowered = post(s3, fields={"content-type": "image/gif"},
                   conditions=[["starts-with", "$CONTENT-TYPE", "image/"]])
    await verify(lowered)


@ALL
async def test_ignored_fields(s3: Any) -> None:
    fields = post(s3)
    fields["x-ignore-submit"] = "Upload"
    fields["X-Ignore-Other"] = "1"
    fields["file"] = "not really"
    verified = await verify(fields)
    assert "file" not in verified.fields


@ALL
async def test_content_type_list(s3: Any) -> None:
    conditions = [["starts-with", "$Content-Type", "image/"]]
    ok = post(s3, fields={"Content-Type": "image/png, image/jpeg"}, conditions=conditions)
    await verify(ok)
    bad = post(s3, fields={"Content-Type": "image/png,text/html"}, conditions=conditions)
    with pytest.raises(errors.AccessDenied, match="Policy Condition failed"):
        await verify(bad)


@ALL
async def test_empty_prefix_matches_anything(s3: Any) -> None:
    conditions = [["starts-with", "$success_action_redirect", ""],
                  ["starts-with", "$x-amz-meta-note", ""]]
    fields = post(s3, fields={"success_action_redirect": "https://x.test/done?a=1"},
                  conditions=conditions)
    await verify(fields)  # x-amz-meta-note is absent: "" starts with ""


# -- each condition failing -----------------------------------------------------------------


@ALL
@pytest.mark.parametrize("name,value,shown", [
    ("Content-Type", "text/html", '["starts-with", "$Content-Type", "image/"]'),
    ("x-amz-meta-owner", "mallory", '["eq", "$x-amz-meta-owner", "eric"]'),
    ("success_action_status", "200", '["eq", "$success_action_status", "201"]'),
    ("acl", "public-read", '["eq", "$acl", "private"]'),
    ("key", "admin/photo.png", '["starts-with", "$key", "user/"]'),
])
async def test_condition_fails(s3: Any, name: str, value: str, shown: str) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    fields[name] = value
    with pytest.raises(errors.AccessDenied) as info:
        await verify(fields)
    assert info.value.message == ("Invalid according to Policy: Policy Condition failed: "
                                  + shown)


@ALL
async def test_missing_field_fails_its_condition(s3: Any) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    del fields["acl"]
    with pytest.raises(errors.AccessDenied, match=r'\["eq", "\$acl", "private"\]'):
        await verify(fields)


@ALL
async def test_bucket_condition(s3: Any) -> None:
    fields = post(s3)
    with pytest.raises(errors.AccessDenied, match=r'"\$bucket", "uploads-bucket"'):
        await verify(fields, bucket="other-bucket")
    starts = post(s3, conditions=[["starts-with", "$bucket", "uploads-"]])
    await verify(starts)


@ALL
async def test_extra_field(s3: Any) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    fields["x-amz-meta-sneaky"] = "1"
    with pytest.raises(errors.AccessDenied) as info:
        await verify(fields)
    assert info.value.message == ("Invalid according to Policy: Extra input fields: "
                                  "x-amz-meta-sneaky")
    fields = post(s3)
    fields["Content-Disposition"] = "attachment"
    with pytest.raises(errors.AccessDenied, match="Extra input fields: Content-Disposition"):
        await verify(fields)


@ALL
async def test_expired(s3: Any) -> None:
    fields = post(s3, expires=60)
    expiration = datetime.fromisoformat(policy_of(fields)["expiration"].replace("Z", "+00:00"))
    await verify(fields, now=expiration - timedelta(seconds=1))
    with pytest.raises(errors.AccessDenied) as info:
        await verify(fields, now=expiration + timedelta(seconds=1))
    assert info.value.message == "Invalid according to Policy: Policy expired."


@ALL
async def test_tampered_policy(s3: Any) -> None:
    fields = post(s3, fields=FULL_FIELDS, conditions=full_conditions())
    document = policy_of(fields)
    document["conditions"] = [c for c in document["conditions"]
                              if c != ["content-length-range", 10, 1000]]
    fields["policy"] = base64.b64encode(json.dumps(document).encode()).decode()
    with pytest.raises(errors.SignatureDoesNotMatch):
        await verify(fields)


@ALL
async def test_tampered_signature_and_keys(s3: Any) -> None:
    fields = post(s3)
    name = "x-amz-signature" if "x-amz-signature" in fields else "signature"
    sig = fields[name]
    fields[name] = ("0" if sig[0] != "0" else "1") + sig[1:]
    with pytest.raises(errors.SignatureDoesNotMatch):
        await verify(fields)
    wrong = client(s3.meta.config, secret="not-the-secret")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await verify(post(wrong))
    unknown = client(s3.meta.config, access_key="NOBODY")
    with pytest.raises(errors.InvalidAccessKeyId):
        await verify(post(unknown))


async def test_v4_fields_checked() -> None:
    fields = post(V4)
    for name, value, error in (
        ("x-amz-algorithm", "AWS4-HMAC-SHA1", errors.InvalidArgument),
        ("x-amz-credential", "garbage", errors.InvalidArgument),
        ("x-amz-date", "yesterday", errors.InvalidArgument),
        ("x-amz-date", "19990101T000000Z", errors.InvalidArgument),  # not the scope's date
    ):
        with pytest.raises(error):
            await verify({**fields, name: value})
    # a credential from another region signs with another key
    credential = fields["x-amz-credential"].replace("us-east-1", "eu-west-1")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await verify({**fields, "x-amz-credential": credential})
    # re-signed for that region, the policy still pins the original credential
    document = policy_of(fields)
    moved = resign({**fields, "x-amz-credential": credential}, document)
    with pytest.raises(errors.AccessDenied, match=r'"\$x-amz-credential"'):
        await verify(moved)


# -- missing pieces and malformed policies ----------------------------------------------------


async def test_anonymous_refused() -> None:
    fields = {"key": "k", "policy": post(V2)["policy"]}
    with pytest.raises(errors.AccessDenied, match="Anonymous"):
        await verify(fields)
    with pytest.raises(errors.AccessDenied):
        await verify({"key": "k"})


@pytest.mark.parametrize("s3,drop", [
    (V4, "policy"), (V4, "x-amz-date"), (V4, "x-amz-algorithm"), (V4, "x-amz-signature"),
    (V2, "policy"), (V2, "signature"), (V2, "AWSAccessKeyId"),
])
async def test_missing_auth_field(s3: Any, drop: str) -> None:
    fields = post(s3)
    del fields[drop]
    with pytest.raises(errors.InvalidArgument, match=f"field named '{drop}'"):
        await verify(fields)


@ALL
async def test_missing_key(s3: Any) -> None:
    fields = post(s3)
    del fields["key"]
    with pytest.raises(errors.InvalidArgument) as info:
        await verify(fields)
    assert info.value.message.startswith("Bucket POST must contain a field named 'key'.")


async def test_mixed_v2_and_v4() -> None:
    fields = {**post(V4), "AWSAccessKeyId": AK, "signature": "x"}
    with pytest.raises(errors.InvalidArgument, match="Only one auth mechanism"):
        await verify(fields)


async def test_duplicate_field_names() -> None:
    fields = {**post(V2), "KEY": "other"}
    with pytest.raises(errors.InvalidArgument, match="more than once"):
        await verify(fields)


@ALL
@pytest.mark.parametrize("raw", ["not base64!", base64.b64encode(b"{not json").decode(),
                                 base64.b64encode(b"[1, 2]").decode(),
                                 base64.b64encode(b"\xff\xfe").decode(),
                                 # nesting past the JSON parser's stack
                                 base64.b64encode(b"[" * 100_000).decode(),
                                 base64.b64encode(b'{"a":' * 5000).decode()])
async def test_malformed_policy(s3: Any, raw: str) -> None:
    fields = resign(post(s3), None, raw=raw)
    with pytest.raises(errors.InvalidPolicyDocument) as info:
        await verify(fields)
    assert info.value.code == "InvalidPolicyDocument" and info.value.status == 400


@ALL
@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("expiration"),
    lambda d: d.update(expiration="next tuesday"),
    lambda d: d.update(expiration=12345),
    # Valid ISO 8601 whose offset takes it past the calendar's first or last day.
    lambda d: d.update(expiration="0001-01-01T00:00:00+01:00"),
    lambda d: d.update(expiration="9999-12-31T23:59:59-01:00"),
    lambda d: d.pop("conditions"),
    lambda d: d.update(conditions={"key": "k"}),
    lambda d: d["conditions"].append(["content-length-range", 10]),
    lambda d: d["conditions"].append(["content-length-range", 100, 10]),
    lambda d: d["conditions"].append(["content-length-range", "a", 10]),
    lambda d: d["conditions"].append(["content-length-range", -1, 10]),
    lambda d: d["conditions"].append(["ends-with", "$key", "x"]),
    lambda d: d["conditions"].append(["eq", "key", "x"]),
    lambda d: d["conditions"].append(["eq", "$key"]),
    lambda d: d["conditions"].append({"acl": ["a", "b"]}),
    lambda d: d["conditions"].append("acl"),
    lambda d: d["conditions"].append([]),
])
async def test_invalid_policy_document(s3: Any, mutate: Any) -> None:
    fields = post(s3)
    document = policy_of(fields)
    mutate(document)
    with pytest.raises(errors.InvalidPolicyDocument):
        await verify(resign(fields, document))


@ALL
async def test_policy_variants_accepted(s3: Any) -> None:
    fields = post(s3, fields={"success_action_status": "201"})
    document = policy_of(fields)
    document["expiration"] = (datetime.now(UTC) + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    document["conditions"] += [["content-length-range", "5", "50"],
                               ["content-length-range", 0, 40],
                               {"success_action_status": 201}]
    verified = await verify(resign(fields, document))
    assert verified.content_length_range == (5, 40)
    # line-wrapped base64 (older libraries) is accepted
    policy = base64.b64encode(json.dumps(document).encode()).decode()
    wrapped = "\n".join(policy[i:i + 60] for i in range(0, len(policy), 60))
    await verify(resign(fields, None, raw=wrapped))


@ALL
async def test_key_limits(s3: Any) -> None:
    with pytest.raises(errors.InvalidArgument, match="length greater than 0"):
        await verify(post(s3, "${filename}"), filename=None)
    with pytest.raises(errors.KeyTooLongError):
        await verify(post(s3, "k" * 1025))
    await verify(post(s3, "é" * 512))


# -- content-length-range -------------------------------------------------------------------


def test_check_content_length() -> None:
    check_content_length(None, 10**12)
    check_content_length((10, 20), 10)
    check_content_length((10, 20), 20)
    with pytest.raises(errors.EntityTooSmall) as small:
        check_content_length((10, 20), 9)
    assert small.value.fields == {"ProposedSize": "9", "MinSizeAllowed": "10"}
    with pytest.raises(errors.EntityTooLarge) as large:
        check_content_length((10, 20), 21)
    assert large.value.fields == {"ProposedSize": "21", "MaxSizeAllowed": "20"}
    check_content_length((0, 0), 0)


# -- properties ------------------------------------------------------------------------------

meta_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
ascii_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@settings(max_examples=60, deadline=None)
@given(key=st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
       meta=st.dictionaries(meta_name, ascii_value, max_size=4),
       version=st.sampled_from(["s3v4", "s3"]), low=st.integers(0, 10**6),
       span=st.integers(0, 10**6))
async def test_property_boto3_forms_verify(key: str, meta: dict[str, str], version: str,
                                           low: int, span: int) -> None:
    s3 = V4 if version == "s3v4" else V2
    extra = {f"x-amz-meta-{name}": value for name, value in meta.items()}
    conditions: list[Any] = [{name: value} for name, value in extra.items()]
    conditions.append(["content-length-range", low, low + span])
    fields = post(s3, key, fields=extra, conditions=conditions)
    verified = await verify(fields, filename="f.bin")
    assert verified.key == key.replace("${filename}", "f.bin")
    assert verified.content_length_range == (low, low + span)
    for name, value in extra.items():
        assert verified.fields[name] == value
    if extra:
        name = next(iter(extra))
        with pytest.raises(errors.AccessDenied):
            await verify({**fields, name: extra[name] + "x"})
