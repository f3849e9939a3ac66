"""The wire and authentication: error documents, request ids, SigV4 failures, clock skew,
presigned URLs, Expect: 100-continue, payload hashes, aws-chunked bodies (signed,
unsigned, with trailers, with Transfer-Encoding: chunked) and connection reuse after errors.

Raw requests are signed here with botocore's S3SigV4Auth (payload hash chosen by the test)
and sent with httpx, http.client or a bare socket.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit, urlunsplit

import boto3
import httpx
import pytest
from awscrt import checksums as crt
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests import _awschunked as ac
from tests._errors import client_error
from tests._server import GatewayProcess
from tests.conftest import make_client

UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SIGNED_STREAM = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_STREAM_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"


class _Auth(S3SigV4Auth):
    """S3 SigV4 with the x-amz-content-sha256 value chosen by the caller."""

    def __init__(self, credentials: Credentials, payload: str | None) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self._payload = payload

    def payload(self, request: Any) -> str:
        if self._payload is not None:
            return self._payload
        return str(super().payload(request))


def sign(server: GatewayProcess, method: str, path: str, *, query: str = "",
         body: bytes = b"", headers: dict[str, str] | None = None,
         payload: str | None = None, access_key: str | None = None,
         secret: str | None = None, when: datetime | None = None) -> dict[str, str]:
    """Headers (Authorization, x-amz-date, x-amz-content-sha256 and the given ones) for a
    request to ``path`` (already percent-encoded) with ``query``."""
    url = server.url + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    credentials = Credentials(access_key or server.access_key, secret or server.secret_key)
    auth = _Auth(credentials, payload)
    if when is None:
        auth.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            auth.add_auth(request)
    return dict(request.headers.items())


def send(server: GatewayProcess, method: str, path: str, *, query: str = "",
         body: bytes = b"", headers: dict[str, str] | None = None,
         content: Any = None, **sign_kwargs: Any) -> httpx.Response:
    signed = sign(server, method, path, query=query, body=body, headers=headers,
                  **sign_kwargs)
    url = server.url + path + (f"?{query}" if query else "")
    return httpx.request(method, url, headers=signed,
                         content=body if content is None else content, timeout=30)


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers.get("content-type", "").startswith(("application/xml",
                                                                 "text/xml"))
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.content
    return {child.tag: child.text or "" for child in root}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, (response.status_code, response.content)
    error = error_of(response)
    assert error["Code"] == code, error
    return error


def obj_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{quote(key, safe='/~')}"


def get_body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def absent(s3: Any, bucket: str, key: str) -> bool:
    return client_error(s3.head_object, Bucket=bucket, Key=key) == ("404", 404)


# -- error documents and request ids --------------------------------------------------------


def test_anonymous_list_buckets_is_access_denied(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/")
    error = assert_error(response, 403, "AccessDenied")
    assert error["Message"]
    assert "Resource" in error
    assert error["RequestId"]
    assert response.headers["x-amz-request-id"] == error["RequestId"]


def test_anonymous_object_read_is_access_denied(gateway: GatewayProcess, s3: Any,
                                                bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    response = httpx.get(f"{gateway.url}/{bucket}/private")
    assert_error(response, 403, "AccessDenied")
    response = httpx.put(f"{gateway.url}/{bucket}/anon", content=b"x")
    assert_error(response, 403, "AccessDenied")
    assert absent(s3, bucket, "anon")


def test_request_id_on_every_response(gateway: GatewayProcess, bucket: str) -> None:
    path = obj_path(bucket, "rid")
    responses = [
        httpx.get(gateway.url + "/"),                                   # 403
        send(gateway, "GET", "/"),                                      # 200
        send(gateway, "PUT", path, body=b"hello"),                      # 200
        send(gateway, "GET", path),                                     # 200
        send(gateway, "HEAD", path),                                    # 200
        send(gateway, "GET", path, headers={"Range": "bytes=0-1"}),     # 206
        send(gateway, "GET", path, headers={"Range": "bytes=99-"}),     # 416
        send(gateway, "GET", obj_path(bucket, "missing")),              # 404
        send(gateway, "HEAD", obj_path(bucket, "missing")),             # 404
        send(gateway, "GET", f"/{bucket}", query="list-type=2"),        # 200
        send(gateway, "HEAD", "/no-such-bucket-rid"),                   # 404
        send(gateway, "DELETE", path),                                  # 204
        send(gateway, "PUT", "/Invalid_Bucket"),                        # 400
        send(gateway, "PUT", path, body=b"again"),                      # 200
        send(gateway, "PUT", path, body=b"no", headers={"If-None-Match": "*"}),  # 412
        send(gateway, "GET", path, headers={"If-None-Match": '"' + hashlib.md5(
            b"again").hexdigest() + '"'}),                              # 304
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [403, 200, 200, 200, 200, 206, 416, 404, 404, 200, 404, 204, 400,
                        200, 412, 304]
    ids = [r.headers.get("x-amz-request-id") for r in responses]
    assert all(ids), list(zip(statuses, ids, strict=True))
    assert len(set(ids)) == len(ids), "request ids are unique"
    for response in responses:
        if response.status_code >= 400 and response.request.method != "HEAD":
            # Error documents carry the same id as the header.
            assert error_of(response)["RequestId"] == response.headers["x-amz-request-id"]


def test_error_document_fields(gateway: GatewayProcess, bucket: str) -> None:
    response = send(gateway, "GET", obj_path(bucket, "dir/missing key"))
    error = assert_error(response, 404, "NoSuchKey")
    assert error["Message"]
    assert error["Key"] == "dir/missing key"
    assert error["Resource"]
    assert error["RequestId"] == response.headers["x-amz-request-id"]
    response = send(gateway, "GET", "/no-such-bucket-doc", query="list-type=2")
    error = assert_error(response, 404, "NoSuchBucket")
    assert error["BucketName"] == "no-such-bucket-doc"


def raw_exchange(server: GatewayProcess, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"",
                port: int = 0) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("target", ["missing-object", "missing-bucket", "anonymous"])
def test_head_errors_have_empty_body(gateway: GatewayProcess, bucket: str,
                                     target: str) -> None:
    path = {"missing-object": obj_path(bucket, "nope"),
            "missing-bucket": "/no-such-bucket-head",
            "anonymous": obj_path(bucket, "nope")}[target]
    headers = {} if target == "anonymous" else sign(gateway, "HEAD", path)
    headers["Connection"] = "close"
    raw = raw_exchange(gateway, raw_request("HEAD", path, headers, port=gateway.port))
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"404", b"403"), status_line
    assert rest == b"", "a HEAD answer must not carry a body"
    assert b"x-amz-request-id" in head.lower()


# -- signature failures -----------------------------------------------------------------------


def client_with(server: GatewayProcess, access_key: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=server.url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, region_name="us-east-1")


def test_wrong_secret_is_signature_does_not_match(gateway: GatewayProcess) -> None:
    client = client_with(gateway, gateway.access_key, "wrong-secret-key-wrong-secret-key-000")
    assert client_error(client.list_buckets) == ("SignatureDoesNotMatch", 403)
    response = send(gateway, "GET", "/", secret="another-wrong-secret")
    error = assert_error(response, 403, "SignatureDoesNotMatch")
    assert error["RequestId"]


def test_unknown_access_key_is_invalid_access_key_id(gateway: GatewayProcess) -> None:
    client = client_with(gateway, "AKIAUNKNOWNKEY000000", gateway.secret_key)
    assert client_error(client.list_buckets) == ("InvalidAccessKeyId", 403)
    response = send(gateway, "GET", "/", access_key="AKIANOSUCHKEY0000000")
    assert_error(response, 403, "InvalidAccessKeyId")


@pytest.mark.parametrize("offset", [timedelta(minutes=-20), timedelta(minutes=20)])
def test_request_time_too_skewed(gateway: GatewayProcess, bucket: str,
                                 offset: timedelta) -> None:
    when = datetime.now(UTC).replace(tzinfo=None) + offset
    response = send(gateway, "GET", f"/{bucket}", query="list-type=2", when=when)
    assert_error(response, 403, "RequestTimeTooSkewed")


def test_small_clock_difference_is_accepted(gateway: GatewayProcess, bucket: str) -> None:
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=4)
    response = send(gateway, "GET", f"/{bucket}", query="list-type=2", when=when)
    assert response.status_code == 200


def test_tampered_signed_request(gateway: GatewayProcess, bucket: str, s3: Any) -> None:
    path = obj_path(bucket, "signed")
    headers = sign(gateway, "PUT", path, body=b"original")
    # Same signature, different key: the canonical request no longer matches.
    response = httpx.put(gateway.url + obj_path(bucket, "other"), headers=headers,
                         content=b"original")
    assert_error(response, 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "other")


def test_any_region_in_credential_scope(gateway: GatewayProcess) -> None:
    """Deliberately more lenient than AWS and MinIO (which answer
    AuthorizationHeaderMalformed): a client configured for another region just works.
    The signature is still verified in full; the region only enters key derivation."""
    for region in ("eu-west-1", "ap-southeast-2", "garage"):
        request = AWSRequest(method="GET", url=gateway.url + "/")
        S3SigV4Auth(Credentials(gateway.access_key, gateway.secret_key), "s3",
                    region).add_auth(request)
        response = httpx.get(gateway.url + "/", headers=dict(request.headers.items()))
        assert response.status_code == 200, response.text
        wrong = AWSRequest(method="GET", url=gateway.url + "/")
        S3SigV4Auth(Credentials(gateway.access_key, "not-the-secret"), "s3",
                    region).add_auth(wrong)
        response = httpx.get(gateway.url + "/", headers=dict(wrong.headers.items()))
        assert_error(response, 403, "SignatureDoesNotMatch")


def test_missing_content_sha256_header(gateway: GatewayProcess) -> None:
    # Generic SigV4 (not the S3 flavour) does not send x-amz-content-sha256, which S3
    # requires with header authentication.
    request = AWSRequest(method="GET", url=gateway.url + "/")
    SigV4Auth(Credentials(gateway.access_key, gateway.secret_key), "s3",
              "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    assert not any(k.lower() == "x-amz-content-sha256" for k in headers)
    response = httpx.get(gateway.url + "/", headers=headers)
    assert_error(response, 400, "InvalidRequest")


def test_malformed_authorization_header(gateway: GatewayProcess) -> None:
    headers = sign(gateway, "GET", "/")
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=garbage"
    response = httpx.get(gateway.url + "/", headers=headers)
    assert response.status_code == 400
    assert error_of(response)["Code"] == "AuthorizationHeaderMalformed"


def test_delete_objects_requires_integrity_header(gateway: GatewayProcess, s3: Any,
                                                  bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    xml = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
           b"<Object><Key>k</Key></Object></Delete>")
    response = send(gateway, "POST", f"/{bucket}", query="delete=", body=xml)
    assert_error(response, 400, "InvalidRequest")
    assert get_body(s3, bucket, "k") == b"x"


def test_delete_objects_malformed_xml(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for xml in (b"<Delete><Object><Key>k</Key></Object>", b"not xml at all",
                b"<Delete></Delete>"):
        md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
        response = send(gateway, "POST", f"/{bucket}", query="delete=", body=xml,
                        headers={"Content-MD5": md5})
        assert_error(response, 400, "MalformedXML")
    assert get_body(s3, bucket, "k") == b"x"


# -- presigned URLs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def presigner(gateway: GatewayProcess) -> Any:
    return make_client(gateway, config=Config(signature_version="s3v4"))


@pytest.mark.parametrize("key", ["plain.txt", "dir/with space/ünï 日本.txt", "a+b&c=d"])
def test_presigned_get(presigner: Any, s3: Any, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"presigned content")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                           ExpiresIn=300)
    assert "X-Amz-Signature=" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"presigned content"
    assert response.headers["x-amz-request-id"]


def test_presigned_head_and_range(presigner: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    url = presigner.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": "k"})
    response = httpx.head(url)
    assert response.status_code == 200
    assert response.headers["content-length"] == "10"
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    response = httpx.get(url, headers={"Range": "bytes=2-4"})
    assert response.status_code == 206
    assert response.content == b"234"


def test_presigned_get_with_response_overrides(presigner: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    url = presigner.generate_presigned_url("get_object", Params={
        "Bucket": bucket, "Key": "k", "ResponseContentDisposition": 'attachment; filename="a.bin"',
        "ResponseContentType": "application/x-test"})
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="a.bin"'
    assert response.headers["content-type"] == "application/x-test"


def test_presigned_get_expired(presigner: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                           ExpiresIn=1)
    time.sleep(2.1)
    response = httpx.get(url)
    assert_error(response, 403, "AccessDenied")


def tamper_query(url: str, name: str, change: Callable[[str], str]) -> str:
    parts = urlsplit(url)
    pairs = [p.split("=", 1) for p in parts.query.split("&")]
    query = "&".join(f"{k}={change(v) if k == name else v}" for k, v in pairs)
    return urlunsplit(parts._replace(query=query))


def test_presigned_get_tampered(presigner: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    s3.put_object(Bucket=bucket, Key="other", Body=b"other data")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})

    flipped = tamper_query(url, "X-Amz-Signature",
                           lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"))
    assert_error(httpx.get(flipped), 403, "SignatureDoesNotMatch")

    other_key = url.replace(f"/{bucket}/k?", f"/{bucket}/other?")
    assert other_key != url
    assert_error(httpx.get(other_key), 403, "SignatureDoesNotMatch")

    longer = tamper_query(url, "X-Amz-Expires", lambda v: str(int(v) + 100))
    assert_error(httpx.get(longer), 403, "SignatureDoesNotMatch")

    # Asking for something the signature did not cover.
    extra = url + "&response-content-type=text%2Fhtml"
    assert_error(httpx.get(extra), 403, "SignatureDoesNotMatch")


def test_presigned_expiry_longer_than_a_week(presigner: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                           ExpiresIn=604801)
    assert_error(httpx.get(url), 400, "AuthorizationQueryParametersError")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                           ExpiresIn=604800)
    assert httpx.get(url).status_code == 200


def test_presigned_wrong_secret(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    other = boto3.client("s3", endpoint_url=gateway.url, aws_access_key_id=gateway.access_key,
                         aws_secret_access_key="not-the-secret", region_name="us-east-1",
                         config=Config(signature_version="s3v4"))
    url = other.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    assert_error(httpx.get(url), 403, "SignatureDoesNotMatch")


def test_presigned_put(presigner: Any, s3: Any, bucket: str) -> None:
    url = presigner.generate_presigned_url("put_object",
                                           Params={"Bucket": bucket, "Key": "up/loaded.bin"},
                                           ExpiresIn=300)
    data = os.urandom(100_000)
    response = httpx.put(url, content=data)
    assert response.status_code == 200, response.content
    assert response.headers["etag"] == '"' + hashlib.md5(data).hexdigest() + '"'
    assert get_body(s3, bucket, "up/loaded.bin") == data


def test_presigned_put_with_content_type(presigner: Any, s3: Any, bucket: str) -> None:
    url = presigner.generate_presigned_url("put_object", Params={
        "Bucket": bucket, "Key": "typed", "ContentType": "text/csv"})
    response = httpx.put(url, content=b"a,b\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.content
    assert s3.head_object(Bucket=bucket, Key="typed")["ContentType"] == "text/csv"


# -- Expect: 100-continue -----------------------------------------------------------------------


def read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(("name", "value"), [
    ("Expect", "100-continue"), ("expect", "100-Continue"), ("EXPECT", "100-CONTINUE")])
def test_expect_100_continue_waits_for_go_ahead(gateway: GatewayProcess, s3: Any,
                                                bucket: str, name: str, value: str) -> None:
    data = os.urandom(50_000)
    path = obj_path(bucket, "continued")
    headers = sign(gateway, "PUT", path, body=data,
                   headers={"Content-Length": str(len(data))})
    headers[name] = value
    headers["Connection"] = "close"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(raw_request("PUT", path, headers, port=gateway.port))
        interim = read_response_head(sock)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        rest = interim.partition(b"\r\n\r\n")[2]
        sock.sendall(data)
        final = rest
        while b"\r\n\r\n" not in final:
            chunk = sock.recv(65536)
            if not chunk:
                break
            final += chunk
    assert final.startswith(b"HTTP/1.1 200"), final
    assert get_body(s3, bucket, "continued") == data


@pytest.mark.parametrize(("name", "value"), [
    ("Expect", "100-continue"), ("expect", "100-Continue")])
def test_expect_100_continue_with_http_client(gateway: GatewayProcess, s3: Any, bucket: str,
                                              name: str, value: str) -> None:
    data = b"sent without waiting" * 1000
    path = obj_path(bucket, "eager")
    headers = sign(gateway, "PUT", path, body=data)
    headers[name] = value
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("PUT", path, body=data, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        # The connection is still usable afterwards.
        get_headers = sign(gateway, "GET", path)
        conn.request("GET", path, headers=get_headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == data
    finally:
        conn.close()


# -- payload hashes ---------------------------------------------------------------------------


def test_content_sha256_mismatch(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    path = obj_path(bucket, "mismatch")
    response = send(gateway, "PUT", path, body=b"the real body",
                    payload=hashlib.sha256(b"a different body").hexdigest())
    assert_error(response, 400, "XAmzContentSHA256Mismatch")
    assert absent(s3, bucket, "mismatch")


def test_content_sha256_mismatch_keeps_previous_object(gateway: GatewayProcess, s3: Any,
                                                       bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="keep", Body=b"previous")
    response = send(gateway, "PUT", obj_path(bucket, "keep"), body=b"new",
                    payload=hashlib.sha256(b"not new").hexdigest())
    assert_error(response, 400, "XAmzContentSHA256Mismatch")
    assert get_body(s3, bucket, "keep") == b"previous"


def test_signed_payload(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    response = send(gateway, "PUT", obj_path(bucket, "signed"), body=b"signed body",
                    payload=hashlib.sha256(b"signed body").hexdigest())
    assert response.status_code == 200, response.content
    assert get_body(s3, bucket, "signed") == b"signed body"


def test_unsigned_payload(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    response = send(gateway, "PUT", obj_path(bucket, "unsigned"), body=b"not hashed",
                    payload="UNSIGNED-PAYLOAD")
    assert response.status_code == 200, response.content
    assert response.headers["etag"] == '"' + hashlib.md5(b"not hashed").hexdigest() + '"'
    assert get_body(s3, bucket, "unsigned") == b"not hashed"


def test_invalid_content_sha256_value(gateway: GatewayProcess, s3: Any, bucket: str) -> None:
    response = send(gateway, "PUT", obj_path(bucket, "bad"), body=b"x", payload="not-a-hash")
    assert_error(response, 400, "InvalidArgument")
    assert absent(s3, bucket, "bad")


# -- versionId=null on unversioned buckets --------------------------------------------------------


def test_version_id_null(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"unversioned")
    assert "VersionId" not in put
    assert "x-amz-version-id" not in put["ResponseMetadata"]["HTTPHeaders"]
    head = s3.head_object(Bucket=bucket, Key="k", VersionId="null")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = s3.get_object(Bucket=bucket, Key="k", VersionId="null")
    assert got["Body"].read() == b"unversioned"
    for response in (head, got, s3.head_object(Bucket=bucket, Key="k"),
                     s3.get_object(Bucket=bucket, Key="k")):
        assert "x-amz-version-id" not in response["ResponseMetadata"]["HTTPHeaders"]
    copy = s3.copy_object(Bucket=bucket, Key="k2", CopySource={"Bucket": bucket, "Key": "k"})
    assert "x-amz-version-id" not in copy["ResponseMetadata"]["HTTPHeaders"]
    deleted = s3.delete_object(Bucket=bucket, Key="k2")
    assert "x-amz-version-id" not in deleted["ResponseMetadata"]["HTTPHeaders"]


# -- aws-chunked bodies -----------------------------------------------------------------------


CHUNK_DATA = os.urandom(200_000)


def chunked_put(server: GatewayProcess, bucket: str, key: str, mode: str, data: bytes, *,
                trailer_value: str | None = None, transfer_chunked: bool = False,
                tamper: Callable[[bytes], bytes] | None = None,
                chunk_size: int = 64 * 1024) -> httpx.Response:
    path = obj_path(bucket, key)
    has_trailer = mode in (UNSIGNED_TRAILER, SIGNED_STREAM_TRAILER)
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data))}
    trailers: list[tuple[str, str]] | None = None
    if has_trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
        trailers = [("x-amz-checksum-crc32", trailer_value or ac.crc32_b64(data))]
    if mode == UNSIGNED_TRAILER:
        signed = sign(server, "PUT", path, headers=headers, payload=mode)
        wire = ac.encode(data, chunk_size=chunk_size, trailers=trailers)
    else:
        # The body's length must be known before signing only when Content-Length is sent;
        # encode once with a placeholder seed to learn it (signatures are fixed width).
        probe = ac.encode(data, chunk_size=chunk_size, trailers=trailers,
                          signing=ac.Signing(b"k" * 32, "20000101T000000Z",
                                             "20000101/us-east-1/s3/aws4_request", "0" * 64))
        if not transfer_chunked:
            headers["Content-Length"] = str(len(probe))
        signed = sign(server, "PUT", path, headers=headers, payload=mode)
        signing = ac.Signing.from_authorization(signed["Authorization"],
                                                signed["X-Amz-Date"], server.secret_key)
        wire = ac.encode(data, chunk_size=chunk_size, trailers=trailers, signing=signing)
        assert len(wire) == len(probe)
    if tamper is not None:
        wire = tamper(wire)
    url = server.url + path
    if transfer_chunked:
        signed.pop("Content-Length", None)

        def pieces() -> Iterator[bytes]:
            for i in range(0, len(wire), 10_000):
                yield wire[i:i + 10_000]

        return httpx.put(url, headers=signed, content=pieces(), timeout=30)
    signed["Content-Length"] = str(len(wire))
    return httpx.put(url, headers=signed, content=wire, timeout=30)


MODES = [UNSIGNED_TRAILER, SIGNED_STREAM, SIGNED_STREAM_TRAILER]


@pytest.mark.parametrize("transfer_chunked", [False, True], ids=["content-length", "te-chunked"])
@pytest.mark.parametrize("mode", MODES)
def test_aws_chunked_put(gateway: GatewayProcess, s3: Any, bucket: str, mode: str,
                         transfer_chunked: bool) -> None:
    response = chunked_put(gateway, bucket, "chunked", mode, CHUNK_DATA,
                           transfer_chunked=transfer_chunked)
    assert response.status_code == 200, response.content
    assert response.headers["etag"] == '"' + hashlib.md5(CHUNK_DATA).hexdigest() + '"'
    head = s3.head_object(Bucket=bucket, Key="chunked", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(CHUNK_DATA)
    assert "aws-chunked" not in head.get("ContentEncoding", "")
    if mode != SIGNED_STREAM:
        assert head["ChecksumCRC32"] == ac.crc32_b64(CHUNK_DATA)
    assert get_body(s3, bucket, "chunked") == CHUNK_DATA


@pytest.mark.parametrize("mode", MODES)
def test_aws_chunked_small_and_empty_bodies(gateway: GatewayProcess, s3: Any, bucket: str,
                                            mode: str) -> None:
    for i, data in enumerate([b"", b"x", b"tiny body"]):
        response = chunked_put(gateway, bucket, f"small{i}", mode, data)
        assert response.status_code == 200, response.content
        assert get_body(s3, bucket, f"small{i}") == data


def checksum_b64(algorithm: str, data: bytes) -> str:
    raw = {
        "crc32": lambda: zlib.crc32(data).to_bytes(4, "big"),
        "crc32c": lambda: crt.crc32c(data).to_bytes(4, "big"),
        "crc64nvme": lambda: crt.crc64nvme(data).to_bytes(8, "big"),
        "sha1": lambda: hashlib.sha1(data).digest(),
        "sha256": lambda: hashlib.sha256(data).digest(),
    }[algorithm]()
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"])
@pytest.mark.parametrize("mode", [UNSIGNED_TRAILER, SIGNED_STREAM_TRAILER])
def test_aws_chunked_trailer_algorithms(gateway: GatewayProcess, s3: Any, bucket: str,
                                        mode: str, algorithm: str) -> None:
    path = obj_path(bucket, "trailer")
    data = CHUNK_DATA[:100_000]
    name = f"x-amz-checksum-{algorithm}"
    value = checksum_b64(algorithm, data)
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data)), "x-amz-trailer": name}
    if mode == UNSIGNED_TRAILER:
        signed = sign(gateway, "PUT", path, headers=headers, payload=mode)
        wire = ac.encode(data, trailers=[(name, value)])
    else:
        signed = sign(gateway, "PUT", path, headers=headers, payload=mode)
        signing = ac.Signing.from_authorization(signed["Authorization"],
                                                signed["X-Amz-Date"], gateway.secret_key)
        wire = ac.encode(data, trailers=[(name, value)], signing=signing)
    response = httpx.put(gateway.url + path, headers=signed, content=wire)
    assert response.status_code == 200, response.content
    head = s3.head_object(Bucket=bucket, Key="trailer", ChecksumMode="ENABLED")
    field = "Checksum" + {"crc32": "CRC32", "crc32c": "CRC32C", "crc64nvme": "CRC64NVME",
                          "sha1": "SHA1", "sha256": "SHA256"}[algorithm]
    assert head[field] == value
    assert get_body(s3, bucket, "trailer") == data


def test_aws_chunked_keeps_other_content_encoding(gateway: GatewayProcess, s3: Any,
                                                  bucket: str) -> None:
    path = obj_path(bucket, "gz")
    data = b"pretend gzip"
    headers = {"Content-Encoding": "aws-chunked,gzip",
               "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    signed = sign(gateway, "PUT", path, headers=headers, payload=UNSIGNED_TRAILER)
    wire = ac.encode(data, trailers=[("x-amz-checksum-crc32", ac.crc32_b64(data))])
    response = httpx.put(gateway.url + path, headers=signed, content=wire)
    assert response.status_code == 200, response.content
    head = s3.head_object(Bucket=bucket, Key="gz")
    assert head["ContentEncoding"] == "gzip"
    assert get_body(s3, bucket, "gz") == data


@pytest.mark.parametrize("mode", [UNSIGNED_TRAILER, SIGNED_STREAM_TRAILER])
def test_aws_chunked_wrong_trailer_checksum(gateway: GatewayProcess, s3: Any, bucket: str,
                                            mode: str) -> None:
    s3.put_object(Bucket=bucket, Key="chunked", Body=b"previous")
    response = chunked_put(gateway, bucket, "chunked", mode, CHUNK_DATA,
                           trailer_value=ac.crc32_b64(b"not the data"))
    assert_error(response, 400, "BadDigest")
    assert get_body(s3, bucket, "chunked") == b"previous"


@pytest.mark.parametrize("mode", [SIGNED_STREAM, SIGNED_STREAM_TRAILER])
def test_aws_chunked_tampered_chunk_signature(gateway: GatewayProcess, s3: Any, bucket: str,
                                              mode: str) -> None:
    def tamper(wire: bytes) -> bytes:
        marker = b"chunk-signature="
        at = wire.index(marker, wire.index(marker) + 1) + len(marker)  # the second chunk
        flipped = b"0" if wire[at:at + 1] != b"0" else b"1"
        return wire[:at] + flipped + wire[at + 1:]

    response = chunked_put(gateway, bucket, "tampered", mode, CHUNK_DATA, tamper=tamper)
    assert_error(response, 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "tampered")


@pytest.mark.parametrize("mode", [SIGNED_STREAM, SIGNED_STREAM_TRAILER])
def test_aws_chunked_tampered_chunk_data(gateway: GatewayProcess, s3: Any, bucket: str,
                                         mode: str) -> None:
    def tamper(wire: bytes) -> bytes:
        at = wire.index(b"\r\n") + 2 + 100  # a byte inside the first chunk's data
        return wire[:at] + bytes([wire[at] ^ 0xFF]) + wire[at + 1:]

    response = chunked_put(gateway, bucket, "tampered", mode, CHUNK_DATA, tamper=tamper)
    assert_error(response, 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "tampered")


def test_aws_chunked_tampered_trailer_signature(gateway: GatewayProcess, s3: Any,
                                                bucket: str) -> None:
    def tamper(wire: bytes) -> bytes:
        marker = b"x-amz-trailer-signature:"
        at = wire.index(marker) + len(marker)
        flipped = b"0" if wire[at:at + 1] != b"0" else b"1"
        return wire[:at] + flipped + wire[at + 1:]

    response = chunked_put(gateway, bucket, "tampered", SIGNED_STREAM_TRAILER, CHUNK_DATA,
                           tamper=tamper)
    assert_error(response, 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "tampered")


@pytest.mark.parametrize("mode", MODES)
def test_aws_chunked_body_cut_short(gateway: GatewayProcess, s3: Any, bucket: str,
                                    mode: str) -> None:
    """A body that ends before the final zero-length chunk is incomplete: no object."""
    def cut(wire: bytes) -> bytes:
        return wire[:wire.index(b"\r\n", 70_000)]  # inside the second chunk's data

    # Sent with Transfer-Encoding: chunked, so the HTTP message itself is complete.
    response = chunked_put(gateway, bucket, "cut", mode, CHUNK_DATA, tamper=cut,
                           transfer_chunked=True)
    assert response.status_code == 400, response.content
    assert absent(s3, bucket, "cut")


def test_aws_chunked_decoded_length_mismatch(gateway: GatewayProcess, s3: Any,
                                             bucket: str) -> None:
    path = obj_path(bucket, "short")
    data = b"0123456789" * 100
    headers = {"Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data) + 5),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    signed = sign(gateway, "PUT", path, headers=headers, payload=UNSIGNED_TRAILER)
    wire = ac.encode(data, trailers=[("x-amz-checksum-crc32", ac.crc32_b64(data))])
    response = httpx.put(gateway.url + path, headers=signed, content=wire)
    assert response.status_code in (400, 403), response.content
    assert absent(s3, bucket, "short")


def test_boto3_default_put_uses_checksum(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * 1024 * 1024)
    put = s3.put_object(Bucket=bucket, Key="boto", Body=data)
    assert put["ChecksumCRC32"] == ac.crc32_b64(data)
    assert get_body(s3, bucket, "boto") == data


# -- connection reuse after errors ---------------------------------------------------------------


def test_connection_usable_after_error_with_unread_body(gateway: GatewayProcess,
                                                        bucket: str) -> None:
    """An error answered before the request body was read must not poison the connection:
    the server either drains the body or closes the connection."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        missing = f"/no-such-bucket-{uuid.uuid4().hex[:8]}/k"
        body = b"z" * 5000
        conn.request("PUT", missing, body=body, headers=sign(gateway, "PUT", missing,
                                                             body=body))
        first = conn.getresponse()
        first_body = first.read()
        assert first.status == 404, first_body
        closing = first.getheader("connection", "").lower() == "close"
        if closing:
            conn.close()
        path = f"/{bucket}"
        conn.request("GET", path + "?list-type=2",
                     headers=sign(gateway, "GET", path, query="list-type=2"))
        second = conn.getresponse()
        second_body = second.read()
        assert second.status == 200, (second.status, second_body)
        assert b"ListBucketResult" in second_body
    finally:
        conn.close()


def test_truncated_body_creates_nothing(gateway: GatewayProcess, s3: Any,
                                        bucket: str) -> None:
    """A client that disconnects before sending all of Content-Length leaves no object and
    does not replace an existing one."""
    s3.put_object(Bucket=bucket, Key="existing", Body=b"previous")
    for key in ("fresh", "existing"):
        path = obj_path(bucket, key)
        data = os.urandom(200_000)
        headers = sign(gateway, "PUT", path, body=data, payload="UNSIGNED-PAYLOAD")
        headers["Content-Length"] = str(len(data))
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(raw_request("PUT", path, headers, port=gateway.port))
            sock.sendall(data[:50_000])
        time.sleep(0.5)
    assert absent(s3, bucket, "fresh")
    assert get_body(s3, bucket, "existing") == b"previous"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["existing"]


def test_boto3_keeps_working_after_rejected_puts(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="exists", Body=b"v1")
    for _ in range(3):
        code, _status = client_error(s3.put_object, Bucket=bucket, Key="exists",
                                     Body=b"v2" * 1000, IfNoneMatch="*")
        assert code == "PreconditionFailed"
        assert get_body(s3, bucket, "exists") == b"v1"
