"""SigV2 query-string (presigned URL) verification, with botocore's presigner as the oracle.

boto3's ``generate_presigned_url`` signs with SigV2 by default, so these are the URLs
browsers and bots hand to the gateway. Everything goes through the one dispatcher,
:func:`gateway.auth.authenticate_request`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.auth import (
    PayloadMode,
    RequestView,
    authenticate,
    authenticate_request,
    query_signed_headers,
)
from gateway.auth.sigv2 import SUBRESOURCES, authenticate_v2_query

AK, SECRET = "AKIDV2EXAMPLE", "v2/secret+key/EXAMPLE"
ENDPOINT = "http://127.0.0.1:9000"
BUCKET = "bucket1"


async def lookup(access_key: str) -> str | None:
    return {AK: SECRET, "OTHER": "other-secret"}.get(access_key)


def client(config: Config | None = None, *, endpoint: str = ENDPOINT,
           access_key: str = AK, secret: str = SECRET) -> Any:
    kwargs: dict[str, Any] = {} if config is None else {"config": config}
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret,
                        **kwargs)


DEFAULT = client()
V2 = client(Config(signature_version="s3"))
V4 = client(Config(signature_version="s3v4"))
CLIENTS = pytest.mark.parametrize("s3", [DEFAULT, V2], ids=["default", "s3"])

METHODS = {"get_object": "GET", "head_object": "HEAD", "put_object": "PUT",
           "delete_object": "DELETE", "upload_part": "PUT", "list_objects": "GET",
           "list_objects_v2": "GET", "create_multipart_upload": "POST",
           "complete_multipart_upload": "POST", "abort_multipart_upload": "DELETE",
           "get_object_tagging": "GET", "get_object_acl": "GET", "list_parts": "GET"}


def view_of(url: str, method: str, headers: dict[str, str] | None = None) -> RequestView:
    parts = urlsplit(url)
    return RequestView(method, parts.path, parts.query,
                       [("Host", parts.netloc), *(headers or {}).items()])


def presign(s3: Any, operation: str, params: dict[str, Any], *, expires: int = 3600,
            headers: dict[str, str] | None = None) -> RequestView:
    url = s3.generate_presigned_url(operation, Params=params, ExpiresIn=expires)
    return view_of(url, METHODS[operation], headers)


def with_query(view: RequestView, query: str) -> RequestView:
    return dataclasses.replace(view, query=query)


def replace_param(view: RequestView, name: str, value: str) -> RequestView:
    pieces = []
    for piece in view.query.split("&"):
        key = piece.partition("=")[0]
        pieces.append(f"{name}={value}" if key == name else piece)
    return with_query(view, "&".join(pieces))


def param(view: RequestView, name: str) -> str:
    for piece in view.query.split("&"):
        key, _, value = piece.partition("=")
        if key == name:
            return value
    raise KeyError(name)


async def accept(view: RequestView, **kw: Any) -> None:
    ctx = await authenticate_request(view, lookup, **kw)
    assert ctx is not None
    assert ctx.access_key == AK
    assert ctx.presigned is True
    assert ctx.payload_mode is PayloadMode.UNSIGNED
    assert ctx.content_sha256 is None and ctx.chunk_signer is None


# -- what boto3 produces ---------------------------------------------------------------------


def test_boto3_default_presigns_with_sigv2() -> None:
    """The reason this module exists: no Config means SigV2 URLs and SigV2 POST forms."""
    url = DEFAULT.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "k"})
    query = urlsplit(url).query
    assert "AWSAccessKeyId=" in query and "Signature=" in query and "Expires=" in query
    assert "X-Amz-" not in query
    post = DEFAULT.generate_presigned_post(BUCKET, "k")
    assert {"AWSAccessKeyId", "policy", "signature"} <= set(post["fields"])


# -- accepted --------------------------------------------------------------------------------

KEYS = ["plain.txt", "dir/with space/ünï 日本.txt", "a+b&c=d", "100%/~tilde", "a//b/../c",
        "trailing/", "?question#hash", "quote'\"<>", "k%2Fencoded"]


@CLIENTS
@pytest.mark.parametrize("key", KEYS)
async def test_get_object(s3: Any, key: str) -> None:
    await accept(presign(s3, "get_object", {"Bucket": BUCKET, "Key": key}))


@CLIENTS
@pytest.mark.parametrize("operation", ["head_object", "delete_object", "get_object_tagging",
                                       "get_object_acl", "create_multipart_upload"])
async def test_object_operations(s3: Any, operation: str) -> None:
    await accept(presign(s3, operation, {"Bucket": BUCKET, "Key": "dir/ü k+1"}))


@CLIENTS
async def test_upload_part_signs_part_number_and_upload_id(s3: Any) -> None:
    view = presign(s3, "upload_part", {"Bucket": BUCKET, "Key": "k", "PartNumber": 7,
                                       "UploadId": "id/with+special=chars"})
    assert "partNumber=7" in view.query
    await accept(view)
    for name, value in (("partNumber", "8"), ("uploadId", "other")):
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(replace_param(view, name, value), lookup)


@CLIENTS
@pytest.mark.parametrize("operation", ["list_parts", "abort_multipart_upload",
                                       "complete_multipart_upload"])
async def test_upload_id_operations(s3: Any, operation: str) -> None:
    params: dict[str, Any] = {"Bucket": BUCKET, "Key": "k", "UploadId": "u-1"}
    await accept(presign(s3, operation, params))


@CLIENTS
async def test_list_objects_unsigned_filters(s3: Any) -> None:
    """SigV2 signs sub-resources only: list filters are not covered, exactly as on AWS."""
    view = presign(s3, "list_objects_v2", {"Bucket": BUCKET, "Prefix": "a/", "MaxKeys": 5})
    await accept(view)
    await accept(replace_param(view, "prefix", "b%2F"))


@CLIENTS
async def test_put_object_content_type_and_md5(s3: Any) -> None:
    md5 = "1B2M2Y8AsgTpgAmY7PhCfg=="
    params = {"Bucket": BUCKET, "Key": "up load.bin", "ContentType": "image/png",
              "ContentMD5": md5}
    view = presign(s3, "put_object", params)
    # botocore moves the signed headers into the query string
    assert ("content-type", "image/png") in query_signed_headers(view.query)
    assert ("content-md5", md5) in query_signed_headers(view.query)
    await accept(view)  # the client sends no headers
    await accept(dataclasses.replace(view, headers=[*view.headers,
                                                    ("Content-Type", "image/png"),
                                                    ("Content-MD5", md5)]))
    for name, value in (("Content-Type", "text/html"), ("Content-MD5", "XXXX")):
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(
                dataclasses.replace(view, headers=[*view.headers, (name, value)]), lookup)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "content-type", "text%2Fhtml"), lookup)


@CLIENTS
async def test_put_object_without_content_type_rejects_one(s3: Any) -> None:
    view = presign(s3, "put_object", {"Bucket": BUCKET, "Key": "k"})
    await accept(view)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(
            dataclasses.replace(view, headers=[*view.headers, ("Content-Type", "text/x")]),
            lookup)


@CLIENTS
async def test_put_object_amz_headers(s3: Any) -> None:
    view = presign(s3, "put_object", {"Bucket": BUCKET, "Key": "k", "ACL": "public-read",
                                      "Metadata": {"Color": "blue", "n": "1"}})
    assert ("x-amz-acl", "public-read") in query_signed_headers(view.query)
    await accept(view)
    await accept(dataclasses.replace(view, headers=[*view.headers,
                                                    ("x-amz-acl", "public-read")]))
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "x-amz-acl", "private"), lookup)
    with pytest.raises(errors.SignatureDoesNotMatch):  # a header overrides the query
        await authenticate_request(
            dataclasses.replace(view, headers=[*view.headers, ("X-Amz-Acl", "private")]),
            lookup)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(
            dataclasses.replace(view, headers=[*view.headers, ("x-amz-meta-extra", "1")]),
            lookup)


@CLIENTS
async def test_response_overrides(s3: Any) -> None:
    params = {"Bucket": BUCKET, "Key": "report.pdf",
              "ResponseContentDisposition": 'attachment; filename="r é+p&o=rt.pdf"',
              "ResponseContentType": "application/pdf", "ResponseCacheControl": "no-cache",
              "ResponseContentLanguage": "fr", "ResponseContentEncoding": "gzip",
              "ResponseExpires": datetime(2030, 1, 1, tzinfo=UTC)}
    view = presign(s3, "get_object", params)
    await accept(view)
    tampered = replace_param(view, "response-content-type", "text%2Fhtml")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(tampered, lookup)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(
            with_query(view, view.query.replace("response-content-language=fr&", "")), lookup)


@CLIENTS
@pytest.mark.parametrize("extra", ["versionId=3", "acl", "tagging", "uploads", "torrent",
                                   "attributes", "retention", "legal-hold"])
async def test_added_subresource_is_signed(s3: Any, extra: str) -> None:
    """A sub-resource is part of the signature: it cannot be slipped into a URL."""
    view = presign(s3, "get_object", {"Bucket": BUCKET, "Key": "k"})
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(with_query(view, f"{extra}&{view.query}"), lookup)


async def test_version_id_signed() -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k", "VersionId": "v 1/+"})
    await accept(view)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "versionId", "v2"), lookup)


async def test_unsigned_extra_params_allowed() -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    await accept(with_query(view, view.query + "&x-id=GetObject&foo=bar"))


async def test_bucket_level_path_spellings() -> None:
    """botocore signs ``/bucket/`` for the URL path ``/bucket``; both name the bucket."""
    view = presign(V2, "list_objects", {"Bucket": BUCKET})
    assert view.path == f"/{BUCKET}"
    await accept(view)
    await accept(dataclasses.replace(view, path=f"/{BUCKET}/"))
    for path in (f"/{BUCKET}x", f"/{BUCKET}//", f"/{BUCKET}/k", "/"):
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(dataclasses.replace(view, path=path), lookup)


async def test_list_buckets() -> None:
    await accept(view_of(V2.generate_presigned_url("list_buckets"), "GET"))


async def test_virtual_host_style() -> None:
    s3 = client(Config(signature_version="s3", s3={"addressing_style": "virtual"}),
                endpoint="http://s3.gateway.test:9000")
    for operation, params in (
        ("get_object", {"Bucket": BUCKET, "Key": "dir/ü k"}),
        ("list_objects", {"Bucket": BUCKET, "Prefix": "p"}),
        ("upload_part", {"Bucket": BUCKET, "Key": "k", "PartNumber": 2, "UploadId": "u"}),
    ):
        view = presign(s3, operation, params)
        assert dict(view.headers)["Host"].startswith(BUCKET + ".")
        await accept(view, virtual_host_bucket=BUCKET)
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(view, lookup, virtual_host_bucket="other-bucket")
        with pytest.raises(errors.SignatureDoesNotMatch):  # taken as path style
            await authenticate_request(view, lookup)


async def test_sigv4_authenticate_also_verifies_v2_path_style() -> None:
    """Direct callers of sigv4.authenticate get SigV2 verified too (path style)."""
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    ctx = await authenticate(view, lookup)
    assert ctx is not None and ctx.presigned and ctx.access_key == AK
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate(replace_param(view, "Expires", str(int(param(view, "Expires")) + 1)),
                           lookup)


async def test_unencoded_plus_in_signature_tolerated() -> None:
    for n in range(200):  # find a signature with a '+' in it
        view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": f"k{n}"})
        if "%2B" in param(view, "Signature"):
            break
    else:
        pytest.skip("no signature with '+'")
    await accept(replace_param(view, "Signature", param(view, "Signature").replace("%2B", "+")))


# -- rejected ---------------------------------------------------------------------------------


@CLIENTS
async def test_tampered_path(s3: Any) -> None:
    view = presign(s3, "get_object", {"Bucket": BUCKET, "Key": "dir/key.txt"})
    for path in (f"/{BUCKET}/dir/key.txT", f"/{BUCKET}/dir/key.txt/", "/other/dir/key.txt",
                 f"/{BUCKET}/dir%2Fkey.txt"):
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(dataclasses.replace(view, path=path), lookup)


@CLIENTS
async def test_tampered_method(s3: Any) -> None:
    view = presign(s3, "get_object", {"Bucket": BUCKET, "Key": "k"})
    for method in ("PUT", "DELETE", "HEAD"):
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(dataclasses.replace(view, method=method), lookup)


@CLIENTS
async def test_tampered_expires_and_signature(s3: Any) -> None:
    view = presign(s3, "get_object", {"Bucket": BUCKET, "Key": "k"})
    later = replace_param(view, "Expires", str(int(param(view, "Expires")) + 60))
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        await authenticate_request(later, lookup)
    fields = info.value.fields
    assert fields["AWSAccessKeyId"] == AK
    assert fields["StringToSign"] == f"GET\n\n\n{int(param(view, 'Expires')) + 60}\n/{BUCKET}/k"
    assert fields["SignatureProvided"]
    signature = param(view, "Signature")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "Signature", flipped), lookup)
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "Signature", "garbage!"), lookup)


async def test_wrong_secret_and_unknown_key() -> None:
    wrong = client(Config(signature_version="s3"), secret="not-the-secret")
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(presign(wrong, "get_object", {"Bucket": BUCKET, "Key": "k"}),
                                   lookup)
    unknown = client(Config(signature_version="s3"), access_key="NOBODY")
    with pytest.raises(errors.InvalidAccessKeyId) as info:
        await authenticate_request(
            presign(unknown, "get_object", {"Bucket": BUCKET, "Key": "k"}), lookup)
    assert info.value.fields["AWSAccessKeyId"] == "NOBODY"


async def test_expired() -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"}, expires=60)
    expires = datetime.fromtimestamp(int(param(view, "Expires")), UTC)
    await accept(view, now=expires)  # valid up to and including the second it names
    with pytest.raises(errors.AccessDenied, match="Request has expired") as info:
        await authenticate_request(view, lookup, now=expires + timedelta(seconds=1))
    assert info.value.fields["Expires"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(errors.AccessDenied, match="expired"):
        await authenticate_request(replace_param(view, "Expires", "0"), lookup)


async def test_expiry_at_most_a_week() -> None:
    await accept(presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"}, expires=604800))
    # a client clock a few minutes fast is tolerated
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"}, expires=604800 + 600)
    await accept(view)
    for seconds in (604800 + 3600, 10 * 365 * 86400):
        view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"}, expires=seconds)
        with pytest.raises(errors.AccessDenied, match="week"):
            await authenticate_request(view, lookup)
    for expires in ("999999999999", "253402300800", "99999999999999999999"):
        with pytest.raises(errors.AccessDenied, match="week"):
            await authenticate_request(replace_param(view, "Expires", expires), lookup)


@pytest.mark.parametrize("drop", ["AWSAccessKeyId", "Signature", "Expires"])
async def test_missing_parameter(drop: str) -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    query = "&".join(p for p in view.query.split("&") if not p.startswith(drop + "="))
    with pytest.raises(errors.AccessDenied, match="requires the Signature, Expires"):
        await authenticate_request(with_query(view, query), lookup)


@pytest.mark.parametrize("value", ["soon", "-5", "1e9", "\uff11\uff12\uff13", "",
                                   "1" * 21])
async def test_malformed_expires(value: str) -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    with pytest.raises(errors.AccessDenied):
        await authenticate_request(replace_param(view, "Expires", quote(value)), lookup)


async def test_mixed_v2_and_v4_query() -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    v4 = presign(V4, "get_object", {"Bucket": BUCKET, "Key": "k"})
    with pytest.raises(errors.InvalidArgument):
        await authenticate_request(with_query(view, view.query + "&" + v4.query), lookup)
    with pytest.raises(errors.InvalidArgument):
        await authenticate_request(with_query(view, view.query + "&X-Amz-Algorithm=x"),
                                   lookup)
    with pytest.raises(errors.InvalidArgument):
        await authenticate(with_query(view, view.query + "&X-Amz-Signature=x"), lookup)


async def test_v2_query_with_authorization_header() -> None:
    view = presign(V2, "get_object", {"Bucket": BUCKET, "Key": "k"})
    with_header = dataclasses.replace(view, headers=[*view.headers,
                                                     ("Authorization", "AWS AK:sig")])
    with pytest.raises(errors.InvalidArgument):
        await authenticate_request(with_header, lookup)


async def test_sigv2_authorization_header_still_refused() -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/{BUCKET}/k")
    HmacV1Auth(Credentials(AK, SECRET)).add_auth(request)
    view = view_of(request.url, "GET", dict(request.headers.items()))
    assert dict(view.headers)["Authorization"].startswith("AWS ")
    with pytest.raises(errors.InvalidRequest, match="Signature Version 2"):
        await authenticate_request(view, lookup)


# -- SigV4 and anonymous still go through the dispatcher ------------------------------------


@pytest.mark.parametrize("key", KEYS[:4])
async def test_sigv4_presigned_through_dispatcher(key: str) -> None:
    view = presign(V4, "get_object", {"Bucket": BUCKET, "Key": key,
                                      "ResponseContentType": "text/plain"})
    assert "X-Amz-Signature=" in view.query
    ctx = await authenticate_request(view, lookup)
    assert ctx is not None and ctx.presigned and ctx.access_key == AK
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(replace_param(view, "response-content-type", "x"), lookup)


async def test_sigv4_header_through_dispatcher() -> None:
    body = b"hello"
    request = AWSRequest(method="PUT", url=f"{ENDPOINT}/{BUCKET}/dir/k%C3%BC", data=body,
                         headers={"Content-Type": "text/plain"})
    S3SigV4Auth(Credentials(AK, SECRET), "s3", "us-east-1").add_auth(request)
    view = view_of(request.url, "PUT", dict(request.headers.items()))
    ctx = await authenticate_request(view, lookup)
    assert ctx is not None and not ctx.presigned
    assert ctx.payload_mode is PayloadMode.SIGNED
    assert ctx.content_sha256 == hashlib.sha256(body).hexdigest()
    with pytest.raises(errors.RequestTimeTooSkewed):
        await authenticate_request(view, lookup, now=datetime.now(UTC) + timedelta(hours=1))


async def test_anonymous_through_dispatcher() -> None:
    assert await authenticate_request(RequestView("GET", f"/{BUCKET}/k", "", []), lookup) \
        is None
    assert await authenticate_request(
        RequestView("GET", f"/{BUCKET}/k", "Expires=5&prefix=a", []), lookup) is None


# -- properties ------------------------------------------------------------------------------

key_text = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"),
                   min_size=1, max_size=60)
value_text = st.text(st.characters(codec="utf-8"), max_size=40)
OVERRIDES = {"ResponseContentDisposition": "response-content-disposition",
             "ResponseContentType": "response-content-type",
             "ResponseCacheControl": "response-cache-control",
             "ResponseContentLanguage": "response-content-language",
             "ResponseContentEncoding": "response-content-encoding"}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=key_text, overrides=st.dictionaries(st.sampled_from(sorted(OVERRIDES)), value_text,
                                               max_size=3),
       virtual=st.booleans())
async def test_property_keys_and_overrides(key: str, overrides: dict[str, str],
                                           virtual: bool) -> None:
    if virtual:
        s3 = client(Config(signature_version="s3", s3={"addressing_style": "virtual"}),
                    endpoint="http://s3.gateway.test:9000")
    else:
        s3 = V2
    view = presign(s3, "get_object", {"Bucket": BUCKET, "Key": key, **overrides})
    vhb = BUCKET if virtual else None
    await accept(view, virtual_host_bucket=vhb)
    # any change to the key is caught
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate_request(dataclasses.replace(view, path=view.path + "x"), lookup,
                                   virtual_host_bucket=vhb)
    # any change to an override value is caught
    for name in overrides:
        qname = OVERRIDES[name]
        tampered = replace_param(view, qname, param(view, qname) + "x")
        with pytest.raises(errors.SignatureDoesNotMatch):
            await authenticate_request(tampered, lookup, virtual_host_bucket=vhb)


def test_subresource_list_covers_router_words() -> None:
    from gateway.s3.routing import BUCKET_SUBRESOURCES, OBJECT_SUBRESOURCES

    assert BUCKET_SUBRESOURCES | OBJECT_SUBRESOURCES <= SUBRESOURCES
    assert set(HmacV1Auth.QSAOfInterest) <= SUBRESOURCES
    assert {"location", "versioning", "versions", "uploads", "uploadId", "partNumber",
            "delete"} <= SUBRESOURCES


async def test_direct_function_with_fixed_clock() -> None:
    with mock.patch("time.time", return_value=1_700_000_000):
        url = V2.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "k"},
                                        ExpiresIn=100)
    view = view_of(url, "GET")
    assert param(view, "Expires") == "1700000100"
    now = datetime.fromtimestamp(1_700_000_050, UTC)
    ctx = await authenticate_v2_query(view, lookup, now=now)
    assert ctx.access_key == AK
