"""What browsers rely on, over real HTTP: presigned URLs (SigV2 and SigV4), POST policies,
CORS and public reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from tests._errors import client_error
from tests._server import GatewayProcess

ORIGIN = "https://app.example.com"


def error_code(response: httpx.Response) -> str:
    start = response.text.find("<Code>")
    return response.text[start + 6:response.text.find("</Code>")] if start >= 0 else ""


def signer(gateway: GatewayProcess, version: str | None) -> Any:
    config = Config(signature_version=version) if version else None
    return boto3.client("s3", endpoint_url=gateway.url, region_name="us-east-1",
                        aws_access_key_id=gateway.access_key,
                        aws_secret_access_key=gateway.secret_key, config=config)


def tamper(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


VERSIONS = [None, "s3", "s3v4"]  # boto3's default, SigV2, SigV4


@pytest.mark.parametrize("version", VERSIONS)
def test_presigned_get_put_head_delete(gateway: GatewayProcess, s3: Any, bucket: str,
                                       version: str | None) -> None:
    c = signer(gateway, version)
    key = "docs/report one+ü.pdf"
    put = c.generate_presigned_url("put_object", Params={
        "Bucket": bucket, "Key": key, "ContentType": "application/pdf"})
    r = httpx.put(put, content=b"%PDF-1.7", headers={"Content-Type": "application/pdf"})
    assert r.status_code == 200, r.text
    # The signed Content-Type is enforced.
    r = httpx.put(put, content=b"evil", headers={"Content-Type": "text/html"})
    assert r.status_code == 403 and error_code(r) == "SignatureDoesNotMatch"
    get = c.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": key,
        "ResponseContentDisposition": 'attachment; filename="report.pdf"'})
    r = httpx.get(get)
    assert r.status_code == 200 and r.content == b"%PDF-1.7"
    assert r.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    head = c.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": key})
    r = httpx.head(head)
    assert r.status_code == 200 and r.headers["content-length"] == "8"
    delete = c.generate_presigned_url("delete_object", Params={"Bucket": bucket, "Key": key})
    assert httpx.delete(delete).status_code == 204
    assert client_error(s3.head_object, Bucket=bucket, Key=key)[1] == 404


@pytest.mark.parametrize("version", VERSIONS)
def test_presigned_tampered_and_expired(gateway: GatewayProcess, s3: Any, bucket: str,
                                        version: str | None) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    c = signer(gateway, version)
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    assert httpx.get(url).status_code == 200
    other = url.replace(f"/{bucket}/k", f"/{bucket}/other")
    r = httpx.get(other)
    assert r.status_code == 403 and error_code(r) == "SignatureDoesNotMatch"
    signature = "X-Amz-Signature" if "X-Amz-Signature" in url else "Signature"
    r = httpx.get(tamper(url, signature, "0" * 64 if signature == "X-Amz-Signature"
                         else "AAAAAAAAAAAAAAAAAAAAAAAAAAA="))
    assert r.status_code == 403 and error_code(r) == "SignatureDoesNotMatch"
    short = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                     ExpiresIn=1)
    time.sleep(2.2)
    r = httpx.get(short)
    assert r.status_code == 403 and error_code(r) == "AccessDenied"


def test_presigned_over_long(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    v4 = signer(gateway, "s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604801)
    r = httpx.get(v4)
    assert r.status_code == 400 and error_code(r) == "AuthorizationQueryParametersError"
    v2 = signer(gateway, "s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=8 * 86400)
    r = httpx.get(v2)
    assert r.status_code == 403 and error_code(r) == "AccessDenied"


@pytest.mark.parametrize("version", ["s3", "s3v4"])
def test_presigned_upload_part(gateway: GatewayProcess, s3: Any, bucket: str,
                               version: str) -> None:
    c = signer(gateway, version)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    parts = [b"a" * (5 * 1024 * 1024), b"tail"]
    listed = []
    for number, body in enumerate(parts, start=1):
        url = c.generate_presigned_url("upload_part", Params={
            "Bucket": bucket, "Key": "big", "UploadId": upload, "PartNumber": number})
        r = httpx.put(url, content=body)
        assert r.status_code == 200, r.text
        listed.append({"PartNumber": number, "ETag": r.headers["etag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload,
                                 MultipartUpload={"Parts": listed})
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)


# -- POST policies --------------------------------------------------------------------------

def _post(gateway: GatewayProcess, bucket: str, version: str | None, key: str,
          conditions: list[Any], fields: dict[str, str] | None = None,
          expires: int = 600) -> dict[str, Any]:
    return dict(signer(gateway, version).generate_presigned_post(
        bucket, key, Fields=fields or {}, Conditions=conditions, ExpiresIn=expires))


@pytest.mark.parametrize("version", VERSIONS)
def test_post_policy_upload_and_answers(gateway: GatewayProcess, s3: Any, bucket: str,
                                        version: str | None) -> None:
    form = _post(gateway, bucket, version, "uploads/${filename}",
                 [["content-length-range", 1, 1024], ["starts-with", "$key", "uploads/"],
                  ["starts-with", "$Content-Type", "text/"], {"x-amz-meta-bot": "faq"}],
                 {"Content-Type": "text/plain", "x-amz-meta-bot": "faq"})
    r = httpx.post(form["url"], data=form["fields"], files={"file": ("note.txt", b"hi")})
    assert r.status_code == 204, r.text
    obj = s3.get_object(Bucket=bucket, Key="uploads/note.txt")
    assert obj["Body"].read() == b"hi" and obj["ContentType"] == "text/plain"
    assert obj["Metadata"] == {"bot": "faq"}
    assert r.headers["etag"] == obj["ETag"]

    created = _post(gateway, bucket, version, "k201", [{"success_action_status": "201"}],
                    {"success_action_status": "201"})
    r = httpx.post(created["url"], data=created["fields"], files={"file": ("x", b"x")})
    assert r.status_code == 201 and "<Key>k201</Key>" in r.text and "<ETag>" in r.text

    target = "https://app.example.com/done"
    redirect = _post(gateway, bucket, version, "k303",
                     [{"success_action_redirect": target}],
                     {"success_action_redirect": target})
    r = httpx.post(redirect["url"], data=redirect["fields"], files={"file": ("x", b"x")})
    assert r.status_code == 303
    location = urlsplit(r.headers["location"])
    assert location.netloc == "app.example.com" and location.path == "/done"
    assert dict(parse_qsl(location.query))["key"] == "k303"


@pytest.mark.parametrize("version", ["s3", "s3v4"])
def test_post_policy_violations(gateway: GatewayProcess, s3: Any, bucket: str,
                                version: str) -> None:
    form = _post(gateway, bucket, version, "uploads/a.txt",
                 [["content-length-range", 10, 20], ["starts-with", "$key", "uploads/"]])
    url, fields = form["url"], form["fields"]
    r = httpx.post(url, data=fields, files={"file": ("a.txt", b"x" * 21)})
    assert r.status_code == 400 and error_code(r) == "EntityTooLarge"
    r = httpx.post(url, data=fields, files={"file": ("a.txt", b"x" * 5)})
    assert r.status_code == 400 and error_code(r) == "EntityTooSmall"
    r = httpx.post(url, data={**fields, "key": "elsewhere/a.txt"},
                   files={"file": ("a.txt", b"x" * 15)})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    r = httpx.post(url, data={**fields, "x-amz-meta-extra": "1"},
                   files={"file": ("a.txt", b"x" * 15)})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    policy = fields["policy"]
    r = httpx.post(url, data={**fields, "policy": policy[:-4] + "AAA="},
                   files={"file": ("a.txt", b"x" * 15)})
    assert r.status_code in (400, 403)
    assert error_code(r) in ("SignatureDoesNotMatch", "InvalidPolicyDocument")
    short = _post(gateway, bucket, version, "uploads/b.txt", [], expires=1)
    time.sleep(2.2)
    r = httpx.post(short["url"], data=short["fields"], files={"file": ("b.txt", b"x")})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    r = httpx.post(url, files={"file": ("a.txt", b"x" * 15)}, data={"key": "uploads/a.txt"})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"


def test_post_policy_odd_fields(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    """Form values a browser page may carry: answered sensibly, never by a broken or
    missing response, and the object is stored whenever the answer says so."""
    def upload(key: str, fields: dict[str, str]) -> httpx.Response:
        form = _post(gateway, bucket, "s3v4", key, [{n: v} for n, v in fields.items()],
                     fields)
        return httpx.post(form["url"], data=form["fields"], files={"file": ("f", b"odd")})

    # Not 200, 201 or 204: the object is stored and the answer is 204, as S3 documents.
    assert upload("status", {"success_action_status": "-1"}).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="status")["Body"].read() == b"odd"
    # A redirect holding a control character or non-ASCII text: percent-encoded.
    r = upload("redirect", {"success_action_redirect": "https://app.example.com/d\x7fné"})
    assert r.status_code == 303
    assert r.headers["location"].startswith("https://app.example.com/d%7Fn%C3%A9?")
    # An empty Expires is no header at all (botocore cannot read an empty one back).
    assert upload("expires", {"Expires": "", "Cache-Control": ""}).status_code == 204
    head = s3.head_object(Bucket=bucket, Key="expires")
    assert "expires" not in head["ResponseMetadata"]["HTTPHeaders"]
    assert "cache-control" not in head["ResponseMetadata"]["HTTPHeaders"]


def test_post_with_an_overlong_boundary_is_malformed(gateway: GatewayProcess, s3: Any,
                                                     bucket: str) -> None:
    form = _post(gateway, bucket, "s3v4", "long-boundary", [])
    boundary = "b" * 300  # RFC 2046 allows 70
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n" for name, value in form["fields"].items()]
    body = ("".join(parts) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="f"\r\n\r\nx\r\n--{boundary}--\r\n').encode()
    r = httpx.post(form["url"], content=body,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and error_code(r) == "MalformedPOSTRequest"
    assert client_error(s3.head_object, Bucket=bucket, Key="long-boundary")[1] == 404


# -- CORS -----------------------------------------------------------------------------------

CORS = {"CORSRules": [
    {"AllowedOrigins": [ORIGIN, "https://*.bots.example"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"],
     "MaxAgeSeconds": 600},
]}


def preflight(gateway: GatewayProcess, path: str, origin: str | None, method: str | None,
              headers: str | None = None) -> httpx.Response:
    h = {}
    if origin:
        h["Origin"] = origin
    if method:
        h["Access-Control-Request-Method"] = method
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return httpx.options(gateway.url + path, headers=h)


def test_cors_configuration(s3: Any, bucket: str) -> None:
    assert client_error(s3.get_bucket_cors, Bucket=bucket) == ("NoSuchCORSConfiguration", 404)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS)
    rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert rules[0]["AllowedOrigins"] == CORS["CORSRules"][0]["AllowedOrigins"]
    assert rules[0]["MaxAgeSeconds"] == 600
    bad = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    assert client_error(s3.put_bucket_cors, Bucket=bucket,
                        CORSConfiguration=bad) == ("InvalidRequest", 400)
    s3.delete_bucket_cors(Bucket=bucket)
    assert client_error(s3.get_bucket_cors, Bucket=bucket)[0] == "NoSuchCORSConfiguration"


def test_cors_preflight_and_actual_responses(gateway: GatewayProcess, s3: Any,
                                             bucket: str) -> None:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS)
    r = preflight(gateway, f"/{bucket}/k", ORIGIN, "PUT", "Content-Type, X-Amz-Meta-A")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "PUT" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-expose-headers"] == "ETag"
    r = preflight(gateway, f"/{bucket}/k", "https://x.bots.example", "GET")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://x.bots.example"
    for origin, method, headers in [("https://evil.example", "GET", None),
                                    (ORIGIN, "DELETE", None),
                                    (ORIGIN, "PUT", "authorization-x")]:
        r = preflight(gateway, f"/{bucket}/k", origin, method, headers)
        assert r.status_code == 403 and error_code(r) == "AccessForbidden"
        assert "access-control-allow-origin" not in r.headers
    assert preflight(gateway, f"/{bucket}/k", None, "GET").status_code == 400
    # Actual responses, success and error alike, carry the headers for an allowed origin.
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    url = signer(gateway, "s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"})
    r = httpx.get(url, headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-expose-headers"] == "ETag"
    assert "Origin" in r.headers["vary"]
    missing = signer(gateway, "s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "missing"})
    r = httpx.get(missing, headers={"Origin": ORIGIN})
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(url, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_server_wide_cors_origins(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data",
                            env_extra={"GATEWAY_CORS_ORIGINS": ORIGIN}).start()
    try:
        c = signer(server, "s3v4")
        c.create_bucket(Bucket="no-rules")
        r = preflight(server, "/no-rules/k", ORIGIN, "PUT", "content-type")
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "ETag" in r.headers["access-control-expose-headers"]
        assert preflight(server, "/no-rules/k", "https://other.example", "PUT").status_code \
            == 403
    finally:
        server.stop()


# -- public reads ---------------------------------------------------------------------------

def test_canned_acls_and_anonymous_reads(gateway: GatewayProcess, s3: Any,
                                         bucket: str) -> None:
    base = f"{gateway.url}/{bucket}"
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"secret")
    s3.put_object(Bucket=bucket, Key="public.txt", Body=b"open", ACL="public-read")
    assert httpx.get(f"{base}/private.txt").status_code == 403
    r = httpx.get(f"{base}/public.txt")
    assert r.status_code == 200 and r.content == b"open"
    assert httpx.head(f"{base}/public.txt").status_code == 200
    # Strangers cannot tell a missing key from a private one, nor list, nor write.
    assert httpx.get(f"{base}/missing").status_code == 403
    assert httpx.get(base).status_code == 403
    assert httpx.put(f"{base}/public.txt", content=b"x").status_code == 403
    grants = s3.get_object_acl(Bucket=bucket, Key="public.txt")["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in \
        [g["Grantee"] for g in grants if g["Permission"] == "READ"]
    s3.put_object_acl(Bucket=bucket, Key="public.txt", ACL="private")
    assert httpx.get(f"{base}/public.txt").status_code == 403

    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert [g["Permission"] for g in s3.get_bucket_acl(Bucket=bucket)["Grants"]] == \
        ["FULL_CONTROL", "READ"]
    assert httpx.get(f"{base}/private.txt").content == b"secret"
    assert httpx.get(f"{base}/missing").status_code == 404
    assert "<Key>private.txt</Key>" in httpx.get(base).text
    assert httpx.put(f"{base}/new.txt", content=b"x").status_code == 403
    assert httpx.delete(f"{base}/private.txt").status_code == 403
    assert httpx.get(gateway.url + "/").status_code == 403  # ListBuckets needs a caller
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert httpx.get(f"{base}/private.txt").status_code == 403
    assert client_error(s3.put_bucket_acl, Bucket=bucket, ACL="world-writable")[1] == 400


def test_sigv2_url_headers_in_query_take_effect(gateway: GatewayProcess, s3: Any,
                                                bucket: str) -> None:
    """botocore moves Content-Type and x-amz-* into a SigV2 URL's query; they are signed
    and must act as the request's headers."""
    url = signer(gateway, "s3").generate_presigned_url("put_object", Params={
        "Bucket": bucket, "Key": "shared.pdf", "ContentType": "application/pdf",
        "ACL": "public-read"})
    assert "Content-Type=" in url or "content-type=" in url.lower()
    assert httpx.put(url, content=b"%PDF").status_code == 200
    assert s3.head_object(Bucket=bucket, Key="shared.pdf")["ContentType"] == "application/pdf"
    assert httpx.get(f"{gateway.url}/{bucket}/shared.pdf").status_code == 200
