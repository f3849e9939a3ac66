"""SigV4 verification, with botocore's signer as the oracle."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.auth import sigv4
from gateway.auth.chunked import decode_aws_chunked
from gateway.auth.sigv4 import AuthContext, PayloadMode, RequestView, authenticate
from gateway.checksums import DigestingStream, checksum_request

AK, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:8080"
WHEN = datetime(2024, 3, 9, 17, 45, 12)  # naive UTC, as botocore uses it
NOW = WHEN.replace(tzinfo=UTC)


async def lookup(access_key: str) -> str | None:
    return {AK: SECRET, "OTHER": "other-secret"}.get(access_key)


class _FixedPayloadAuth(S3SigV4Auth):  # type: ignore[misc]
    """Signs with a literal x-amz-content-sha256 (UNSIGNED-PAYLOAD, STREAMING-*)."""

    def __init__(self, credentials: Credentials, region: str, payload: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload


def sign(method: str = "GET", path: str = "/bucket/key", *,
         params: Sequence[tuple[str, str]] = (), raw_query: str = "",
         headers: dict[str, str] | None = None, repeated: Sequence[tuple[str, str]] = (),
         body: bytes = b"", presign: int | None = None, payload: str | None = None,
         region: str = "us-east-1", access_key: str = AK, secret: str = SECRET,
         when: datetime = WHEN, service: str = "s3") -> RequestView:
    url = f"http://{HOST}{path}" + (f"?{raw_query}" if raw_query else "")
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body,
                         params=list(params))
    for name, value in repeated:
        request.headers[name] = value  # HTTPHeaders keeps repeats
    credentials = Credentials(access_key, secret)
    signer: SigV4Auth
    if presign is not None:
        signer = S3SigV4QueryAuth(credentials, service, region, expires=presign)
    elif payload is not None:
        signer = _FixedPayloadAuth(credentials, region, payload)
    else:
        signer = S3SigV4Auth(credentials, service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    return RequestView(method, parts.path, parts.query,
                       [("Host", HOST), *request.headers.items()])


async def check(view: RequestView, *, now: datetime = NOW) -> AuthContext:
    ctx = await authenticate(view, lookup, now=now)
    assert ctx is not None
    return ctx


def without(view: RequestView, name: str) -> RequestView:
    return dataclasses.replace(view, headers=[(n, v) for n, v in view.headers
                                              if n.lower() != name.lower()])


def replaced(view: RequestView, name: str, value: str) -> RequestView:
    return dataclasses.replace(view, headers=[*without(view, name).headers, (name, value)])


def header(view: RequestView, name: str) -> str:
    return next(v for n, v in view.headers if n.lower() == name.lower())


# -- the AWS documentation's examples ----------------------------------------------------
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


async def doc_lookup(access_key: str) -> str | None:
    return DOC_SECRET if access_key == "AKIAIOSFODNN7EXAMPLE" else None


async def test_aws_example_get_object() -> None:
    view = RequestView("GET", "/test.txt", "", [
        ("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256), ("x-amz-date", "20130524T000000Z"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
         "us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")])
    ctx = await authenticate(view, doc_lookup, now=datetime(2013, 5, 24, 0, 5, tzinfo=UTC))
    assert ctx == AuthContext("AKIAIOSFODNN7EXAMPLE", False, PayloadMode.SIGNED,
                              sigv4.EMPTY_SHA256, None)


async def test_aws_example_presigned() -> None:
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
             "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
             "&X-Amz-SignedHeaders=host&X-Amz-Signature="
             "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    view = RequestView("GET", "/test.txt", query, [("host", "examplebucket.s3.amazonaws.com")])
    ctx = await authenticate(view, doc_lookup, now=datetime(2013, 5, 24, 20, tzinfo=UTC))
    assert ctx == AuthContext("AKIAIOSFODNN7EXAMPLE", True, PayloadMode.UNSIGNED, None, None)
    with pytest.raises(errors.AccessDenied, match="expired"):
        await authenticate(view, doc_lookup, now=datetime(2013, 5, 25, 0, 0, 1, tzinfo=UTC))


# -- accepted ----------------------------------------------------------------------------
async def test_header_signed_request() -> None:
    body = b"hello world"
    ctx = await check(sign("PUT", "/bucket/a%20b", body=body, headers={"Content-Type": "a/b"}))
    assert ctx.access_key == AK and not ctx.presigned
    assert ctx.payload_mode is PayloadMode.SIGNED and not ctx.payload_mode.is_aws_chunked
    assert ctx.content_sha256 == hashlib.sha256(body).hexdigest()
    assert ctx.chunk_signer is None


async def test_presigned_request() -> None:
    ctx = await check(sign("GET", "/bucket/k", presign=3600,
                           params=[("response-content-type", "text/plain; x=1")]))
    assert ctx.presigned and ctx.payload_mode is PayloadMode.UNSIGNED
    assert ctx.content_sha256 is None


async def test_presigned_with_signed_payload_header() -> None:
    digest = hashlib.sha256(b"body").hexdigest()
    view = sign("PUT", "/bucket/k", presign=60, headers={"X-Amz-Content-SHA256": digest})
    ctx = await check(view)
    assert ctx.payload_mode is PayloadMode.SIGNED and ctx.content_sha256 == digest


@pytest.mark.parametrize("mode", [m for m in PayloadMode if m is not PayloadMode.SIGNED])
async def test_literal_payload_modes(mode: PayloadMode) -> None:
    ctx = await check(sign("PUT", "/bucket/k", payload=mode.value))
    assert ctx.payload_mode is mode
    assert ctx.content_sha256 is None
    signed_stream = mode in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)
    assert (ctx.chunk_signer is not None) == signed_stream
    assert mode.is_aws_chunked == mode.value.startswith("STREAMING-")
    if ctx.chunk_signer is not None:
        assert ctx.chunk_signer.expects_trailer == mode.value.endswith("-TRAILER")


async def test_uppercase_payload_hash() -> None:
    digest = hashlib.sha256(b"x").hexdigest().upper()
    ctx = await check(sign("PUT", payload=digest))
    assert ctx.content_sha256 == digest.lower()


async def test_any_region_is_accepted() -> None:
    await check(sign(region="moon-base-1"))


async def test_date_header_instead_of_x_amz_date() -> None:
    view = sign(headers={"Date": "placeholder"})
    assert not any(n.lower() == "x-amz-date" for n, _ in view.headers)
    await check(view)


async def test_repeated_headers_and_whitespace() -> None:
    view = sign(headers={"x-amz-meta-a": "  two   spaces\tand tab  "},
                repeated=[("x-amz-meta-r", "one"), ("x-amz-meta-r", " two ")])
    assert [v for n, v in view.headers if n == "x-amz-meta-r"] == ["one", " two "]
    await check(view)


async def test_anonymous() -> None:
    view = RequestView("GET", "/bucket/key", "list-type=2", [("Host", HOST)])
    assert await authenticate(view, lookup, now=NOW) is None


async def test_unsigned_extra_header_is_tolerated() -> None:
    view = sign()
    await check(dataclasses.replace(view, headers=[*view.headers, ("User-Agent", "x")]))


def test_signing_key_cache() -> None:
    first = sigv4.signing_key("s3cr3t", "20240101", "us-east-1")
    assert sigv4.signing_key("s3cr3t", "20240101", "us-east-1") is first
    assert sigv4.signing_key("s3cr3t", "20240102", "us-east-1") != first
    assert sigv4.signing_key("other", "20240101", "us-east-1") != first


# -- Hypothesis: every botocore-signed request verifies -----------------------------------
SPECIAL = ["a", "Z", "0", " ", "+", "%", "%2F", "..", ".", "/", "//", "~", "*", "'", "(", ")",
           "!", "=", "&", "?", "#", ";", ":", "@", "$", ",", "é", "日本", "\U0001f600", "\t"]
key_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=12).map("".join),
)
param_name = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda n: not n.lower().startswith("x-amz-") and n not in ("AWSAccessKeyId", "Signature"))
param_value = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
                        st.lists(st.sampled_from(SPECIAL), max_size=6).map("".join))
header_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    key = draw(key_text)
    trailing = draw(st.booleans())
    method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]))
    params = draw(st.lists(st.tuples(param_name, param_value), max_size=4))
    headers = {f"x-amz-meta-{n}": v for n, v in
               draw(st.lists(st.tuples(header_name, header_value), max_size=3))}
    presign = draw(st.one_of(st.none(), st.integers(1, 604800)))
    return {
        "method": method,
        "path": "/bucket/" + quote(key + ("/" if trailing else ""), safe="/~"),
        "params": params,
        "headers": headers,
        # botocore moves a presigned request's body into its query string
        "body": b"" if presign is not None else draw(st.binary(max_size=64)),
        "presign": presign,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests())
async def test_botocore_signed_requests_verify(spec: dict[str, object]) -> None:
    view = sign(**spec)  # type: ignore[arg-type]
    ctx = await check(view)
    assert ctx.presigned == (spec["presign"] is not None)
    if not ctx.presigned:
        assert ctx.content_sha256 == hashlib.sha256(spec["body"]).hexdigest()  # type: ignore[arg-type]


TAMPERS = ["method", "path", "query", "header", "payload", "drop-header", "signature"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests(), tamper=st.sampled_from(TAMPERS))
async def test_tampered_requests_are_rejected(spec: dict[str, object], tamper: str) -> None:
    spec["headers"] = {**spec["headers"], "x-amz-meta-fixed": "v"}  # type: ignore[dict-item]
    view = sign(**spec)  # type: ignore[arg-type]
    if tamper == "method":
        view = dataclasses.replace(view, method="PATCH")
    elif tamper == "path":
        view = dataclasses.replace(view, path=view.path + "x")
    elif tamper == "query":
        view = dataclasses.replace(view, query=(view.query + "&" if view.query else "") + "a=b")
    elif tamper == "header":
        view = replaced(view, "x-amz-meta-fixed", "w")
    elif tamper == "drop-header":
        view = without(view, "x-amz-meta-fixed")
    elif tamper == "payload":
        if spec["presign"] is not None:
            view = replaced(view, "x-amz-content-sha256", hashlib.sha256(b"x").hexdigest())
        else:
            view = replaced(view, "x-amz-content-sha256", hashlib.sha256(b"other").hexdigest())
    elif tamper == "signature":
        if spec["presign"] is not None:
            query = view.query.replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1]
            assert query != view.query
            view = dataclasses.replace(view, query=query)
        else:
            auth = header(view, "Authorization")
            view = replaced(view, "Authorization", auth[:-1] + ("0" if auth[-1] != "0" else "1"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate(view, lookup, now=NOW)


# -- rejected ----------------------------------------------------------------------------
async def test_error_fields_help_debugging() -> None:
    view = dataclasses.replace(sign(), method="PUT")
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        await authenticate(view, lookup, now=NOW)
    assert info.value.fields["AWSAccessKeyId"] == AK
    assert info.value.fields["CanonicalRequest"].startswith("PUT\n/bucket/key\n")


async def test_wrong_secret() -> None:
    with pytest.raises(errors.SignatureDoesNotMatch):
        await authenticate(sign(secret="not-the-secret"), lookup, now=NOW)


async def test_unknown_access_key() -> None:
    for view in (sign(access_key="NOBODY"), sign(access_key="NOBODY", presign=60)):
        with pytest.raises(errors.InvalidAccessKeyId):
            await authenticate(view, lookup, now=NOW)


@pytest.mark.parametrize("delta", [timedelta(minutes=16), -timedelta(minutes=16)])
async def test_skew(delta: timedelta) -> None:
    with pytest.raises(errors.RequestTimeTooSkewed):
        await authenticate(sign(), lookup, now=NOW + delta)
    await check(sign(), now=NOW + delta * 14 / 16)


async def test_presigned_expiry_and_future() -> None:
    view = sign(presign=600)
    await check(view, now=NOW + timedelta(seconds=600))
    with pytest.raises(errors.AccessDenied, match="expired"):
        await authenticate(view, lookup, now=NOW + timedelta(seconds=601))
    await check(view, now=NOW - timedelta(minutes=14))
    with pytest.raises(errors.AccessDenied, match="not valid yet"):
        await authenticate(view, lookup, now=NOW - timedelta(minutes=16))


@pytest.mark.parametrize("expires", ["604801", "0", "-5", "abc", ""])
async def test_presigned_bad_expires(expires: str) -> None:
    view = sign(presign=60)
    view = dataclasses.replace(view, query=view.query.replace("X-Amz-Expires=60",
                                                              f"X-Amz-Expires={expires}"))
    with pytest.raises(errors.AuthorizationQueryParametersError):
        await authenticate(view, lookup, now=NOW)


async def test_presigned_max_expires_accepted() -> None:
    await check(sign(presign=604800), now=NOW + timedelta(days=6))


@pytest.mark.parametrize(("old", "new"), [
    ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
    ("X-Amz-Date=20240309T174512Z", "X-Amz-Date=2024-03-09"),
    ("X-Amz-Date=20240309T174512Z", "X-Amz-Date=20240310T174512Z"),
    ("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date"),
    ("X-Amz-Credential=AKIDEXAMPLE%2F", "X-Amz-Credential=AKIDEXAMPLE%2Fx%2F"),
    ("&X-Amz-Signature=", "&X-Amz-Signature=zz&x="),
    ("X-Amz-SignedHeaders=", "X-Amz-Foo="),
])
async def test_presigned_malformed(old: str, new: str) -> None:
    view = sign(presign=60)
    assert old in view.query
    view = dataclasses.replace(view, query=view.query.replace(old, new))
    with pytest.raises(errors.AuthorizationQueryParametersError):
        await authenticate(view, lookup, now=NOW)


async def test_header_and_query_auth_together() -> None:
    presigned = sign(presign=60)
    view = dataclasses.replace(sign(), query=presigned.query)
    with pytest.raises(errors.InvalidArgument):
        await authenticate(view, lookup, now=NOW)


@pytest.mark.parametrize("value", [
    "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
    "AWS4-ECDSA-P256-SHA256 Credential=x",
    "Bearer abc",
])
async def test_unsupported_mechanisms(value: str) -> None:
    view = replaced(sign(), "Authorization", value)
    with pytest.raises(errors.InvalidRequest, match="AWS4-HMAC-SHA256"):
        await authenticate(view, lookup, now=NOW)


async def test_sigv2_presigned_goes_to_sigv2() -> None:
    """SigV2 query auth is verified (by ``sigv2``); an expired URL is AccessDenied, and
    SigV2 in the Authorization header stays refused."""
    view = RequestView("GET", "/b/k", "AWSAccessKeyId=AK&Expires=1&Signature=abc",
                       [("Host", HOST)])
    with pytest.raises(errors.AccessDenied, match="expired"):
        await authenticate(view, lookup, now=NOW)
    header_v2 = RequestView("GET", "/b/k", "", [("Host", HOST),
                                                ("Authorization", "AWS AK:c2lnbmF0dXJl")])
    with pytest.raises(errors.InvalidRequest, match="not supported"):
        await authenticate(header_v2, lookup, now=NOW)


def _auth(view: RequestView) -> str:
    return header(view, "Authorization")


@pytest.mark.parametrize("mutate", [
    lambda a: a.replace("Credential=", "Credentials="),
    lambda a: a.replace(", SignedHeaders=", ", SignedHeaders=;"),
    lambda a: a.replace("SignedHeaders=host;", "SignedHeaders="),
    lambda a: a.replace("Signature=", "Signature=00"),
    lambda a: a + ", Extra=1",
    lambda a: a.replace("/s3/", "/ec2/"),
    lambda a: a.replace("/aws4_request", "/aws5_request"),
    lambda a: a.replace("/20240309/", "/20240308/"),
    lambda a: a.replace("/20240309/", "/2024-03-09/"),
    lambda a: a.replace(f"Credential={AK}/", "Credential="),
    lambda a: a.split(",")[0],
])
async def test_malformed_authorization(mutate: object) -> None:
    view = sign()
    view = replaced(view, "Authorization", mutate(_auth(view)))  # type: ignore[operator]
    with pytest.raises(errors.AuthorizationHeaderMalformed):
        await authenticate(view, lookup, now=NOW)


async def test_whitespace_in_authorization_is_optional() -> None:
    view = sign()
    compact = _auth(view).replace(", ", ",")
    await check(replaced(view, "Authorization", compact))
    spaced = _auth(view).replace(", ", " ,  ")
    await check(replaced(view, "Authorization", spaced))


async def test_missing_content_sha256() -> None:
    with pytest.raises(errors.InvalidRequest, match="x-amz-content-sha256"):
        await authenticate(without(sign(), "X-Amz-Content-SHA256"), lookup, now=NOW)


async def test_invalid_content_sha256() -> None:
    view = replaced(sign(), "X-Amz-Content-SHA256", "not-a-hash")
    with pytest.raises(errors.InvalidArgument):
        await authenticate(view, lookup, now=NOW)


async def test_missing_or_bad_date() -> None:
    with pytest.raises(errors.AccessDenied):
        await authenticate(without(sign(), "X-Amz-Date"), lookup, now=NOW)
    with pytest.raises(errors.AccessDenied):
        await authenticate(replaced(sign(), "X-Amz-Date", "yesterday"), lookup, now=NOW)


async def test_signed_header_missing_from_request() -> None:
    view = sign(headers={"x-amz-meta-gone": "1"})
    with pytest.raises(errors.SignatureDoesNotMatch, match="x-amz-meta-gone"):
        await authenticate(without(view, "x-amz-meta-gone"), lookup, now=NOW)


# -- canonical forms ---------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "canonical"), [
    ("", "/"),
    ("/", "/"),
    ("/b/a%20b", "/b/a%20b"),
    ("/b/a b", "/b/a%20b"),
    ("/b/a+b", "/b/a%2Bb"),
    ("/b/%7e%7E~", "/b/~~~"),
    ("/b/a%2fb", "/b/a%2Fb"),
    ("/b/../x//y/./", "/b/../x//y/./"),
    ("/b/%C3%A9", "/b/%C3%A9"),
    ("/b/\xc3\xa9", "/b/%C3%A9"),  # raw UTF-8 bytes, latin-1 decoded by the ASGI server
    ("/b/%25", "/b/%25"),
])
def test_canonical_uri(raw: str, canonical: str) -> None:
    assert sigv4.canonical_uri(raw) == canonical


@pytest.mark.parametrize(("raw", "canonical"), [
    ("", ""),
    ("acl", "acl="),
    ("b=2&a=1&a=0", "a=0&a=1&b=2"),
    ("q=a+b&r=a%20b&s=a%2Bb", "q=a%20b&r=a%20b&s=a%2Bb"),
    ("k=%7e~&x=*", "k=~~&x=%2A"),
    ("&&a=1&", "a=1"),
])
def test_canonical_query(raw: str, canonical: str) -> None:
    assert sigv4.canonical_query(raw) == canonical


# -- real boto3 clients (requests captured before they are sent) --------------------------
class _Captured(Exception):
    def __init__(self, request: AWSRequest) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: AWSRequest, **_: object) -> None:
    raise _Captured(request)


def _client(scheme: str) -> object:
    client = boto3.client("s3", endpoint_url=f"{scheme}://{HOST}", region_name="us-east-1",
                          aws_access_key_id=AK, aws_secret_access_key=SECRET)
    client.meta.events.register("before-send.s3", _capture)
    return client


_CLIENTS: dict[str, object] = {}


def captured(scheme: str, operation: str, **kwargs: object) -> tuple[RequestView, object]:
    client = _CLIENTS.setdefault(scheme, _client(scheme))
    with pytest.raises(_Captured) as info:
        getattr(client, operation)(**kwargs)
    request = info.value.request
    parts = urlsplit(request.url)
    headers = [(name, value.decode("latin-1") if isinstance(value, bytes) else value)
               for name, value in request.headers.items()]
    return RequestView(request.method, parts.path, parts.query, headers), request.body


def _signed_now(view: RequestView) -> datetime:
    return datetime.strptime(header(view, "X-Amz-Date"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=key_text, prefix=key_text, scheme=st.sampled_from(["http", "https"]),
       body=st.binary(max_size=100),
       metadata=st.dictionaries(header_name, header_value.map(str.strip), max_size=2))
async def test_boto3_requests_verify(key: str, prefix: str, scheme: str, body: bytes,
                                     metadata: dict[str, str]) -> None:
    view, _ = captured(scheme, "list_objects_v2", Bucket="bucket", Prefix=prefix,
                       Delimiter="/", StartAfter=key)
    assert (await check(view, now=_signed_now(view))).payload_mode is PayloadMode.SIGNED
    view, _ = captured(scheme, "get_object", Bucket="bucket", Key=key, Range="bytes=0-9")
    await check(view, now=_signed_now(view))

    view, raw_body = captured(scheme, "put_object", Bucket="bucket", Key=key, Body=body,
                              Metadata=metadata)
    ctx = await check(view, now=_signed_now(view))
    wire = raw_body if isinstance(raw_body, bytes) else raw_body.read()  # type: ignore[attr-defined]
    lower = {name.lower(): value for name, value in view.headers}
    algorithm, expected, trailer = checksum_request(lower)
    trailers: dict[str, str] = {}

    async def source() -> AsyncIterator[bytes]:
        yield wire

    stream: AsyncIterator[bytes] = source()
    if ctx.payload_mode.is_aws_chunked:
        stream = decode_aws_chunked(stream, chunk_signer=ctx.chunk_signer, trailers=trailers)
    digesting = DigestingStream(
        stream, expected_size=int(lower.get("x-amz-decoded-content-length", len(body))),
        content_sha256=ctx.content_sha256, checksum_algorithm=algorithm,
        expected_checksum=expected, trailers=trailers if trailer else None)
    assert b"".join([chunk async for chunk in digesting]) == body
    assert digesting.checksum_algorithm == "CRC32"


async def test_boto3_presigned_urls_verify() -> None:
    client = boto3.client("s3", endpoint_url=f"http://{HOST}", region_name="eu-west-3",
                          aws_access_key_id=AK, aws_secret_access_key=SECRET)
    for method, params in (("get_object", {"ResponseContentDisposition": "attachment; x=\"y z\""}),
                           ("put_object", {"ContentType": "text/plain"})):
        url = client.generate_presigned_url(method, Params={"Bucket": "b", "Key": "k é+~ x",
                                                             **params}, ExpiresIn=300)
        parts = urlsplit(url)
        headers = [("Host", HOST)]
        if method == "put_object":
            headers.append(("Content-Type", "text/plain"))
        view = RequestView("GET" if method == "get_object" else "PUT", parts.path, parts.query,
                           headers)
        ctx = await authenticate(view, lookup)
        assert ctx is not None and ctx.presigned
