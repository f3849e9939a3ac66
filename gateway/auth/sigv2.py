"""AWS Signature Version 2 query-string authentication (presigned ``?AWSAccessKeyId=...``).

boto3's ``generate_presigned_url`` produces these by default (botocore presigns S3 with
SigV2 unless told otherwise), so browsers and bots hand them to us. Only the query-string
form is accepted; SigV2 in the ``Authorization: AWS AK:sig`` header stays refused by
``sigv4``.

StringToSign = METHOD \\n Content-MD5 \\n Content-Type \\n Expires \\n
CanonicalizedAmzHeaders CanonicalizedResource, signed with HMAC-SHA1 and base64.

Content-MD5, Content-Type and ``x-amz-*`` come from the request headers; botocore moves them
into the query string of a presigned URL (``content-type=...&x-amz-acl=...``), so a query
parameter of that name stands in for a missing header. :func:`query_signed_headers` gives
those values to the caller, which must then treat them as the request's headers.

Only the sub-resources below are covered by the signature: the other query parameters
(``prefix``, ``max-keys``, ``list-type``...) are not signed in SigV2, exactly as on AWS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from gateway.auth.sigv4 import (
    MAX_PRESIGNED_EXPIRES,
    AuthContext,
    PayloadMode,
    RequestView,
    SecretLookup,
    _decode_component,
    _raw,
    _utc,
)
from gateway.errors import AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch

#: Query parameters that make a request SigV2 query-authenticated.
V2_QUERY_PARAMS = ("AWSAccessKeyId", "Signature", "Expires")

#: Clock skew tolerated on the upper bound of ``Expires`` (botocore sets now + ExpiresIn).
EXPIRES_SKEW_SECONDS = 900

#: Query parameters that are part of the CanonicalizedResource (case-sensitive names).
#: The AWS list and botocore's (``HmacV1Auth.QSAOfInterest``), plus every word the router
#: treats as a sub-resource, so that no unsigned parameter can turn a presigned request into
#: a different operation.
SUBRESOURCES = frozenset({
    # AWS documentation and botocore
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory",
    "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "partNumber", "policy", "replication", "requestPayment", "restore", "select",
    "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId",
    "versioning", "versions", "website",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
    # also routed as sub-resources by gateway.s3.routing
    "attributes", "encryption", "intelligent-tiering", "legal-hold", "metadataTable",
    "ownershipControls", "policyStatus", "publicAccessBlock", "retention",
})

_MISSING_PARAMS = ("Query-string authentication requires the Signature, Expires and "
                   "AWSAccessKeyId parameters")


def _split_query(raw_query: str) -> list[tuple[str, str, bool]]:
    """(decoded name, decoded value, had '=') for each parameter, in order."""
    result = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        result.append((_decode_component(name), _decode_component(value), bool(sep)))
    return result


def query_signed_headers(raw_query: str) -> list[tuple[str, str]]:
    """The ``content-md5``, ``content-type`` and ``x-amz-*`` query parameters of a SigV2
    presigned URL (names lower-cased), which the signature covers as if they were headers.
    The first occurrence of a name wins."""
    seen: dict[str, str] = {}
    for name, value, _ in _split_query(raw_query):
        lname = name.lower()
        if (lname in ("content-md5", "content-type") or lname.startswith("x-amz-")) \
                and lname not in seen:
            seen[lname] = value
    return list(seen.items())


def _resource_paths(raw_path: str, virtual_host_bucket: str | None) -> list[bytes]:
    """``/bucket/key`` as sent; for a bucket-level request both ``/bucket`` and ``/bucket/``
    (botocore signs ``/bucket/`` for a URL path ``/bucket``; both name the same resource)."""
    path = _raw(raw_path)
    if virtual_host_bucket is not None:
        if not path.startswith(b"/"):
            path = b"/" + path
        path = b"/" + virtual_host_bucket.encode() + path
    elif not path:
        path = b"/"
    trimmed = path[1:]
    if trimmed and b"/" not in trimmed:  # "/bucket"
        return [path, path + b"/"]
    if trimmed.endswith(b"/") and b"/" not in trimmed[:-1]:  # "/bucket/"
        return [path, path[:-1]]
    return [path]


def _subresources(raw_query: str) -> bytes:
    """``?name=value&...`` of the sub-resources present, sorted by name, values decoded."""
    found = [(name, value, has_value) for name, value, has_value
             in _split_query(raw_query) if name in SUBRESOURCES]
    if not found:
        return b""
    found.sort(key=lambda item: item[0])
    rendered = [name + "=" + value if has_value else name for name, value, has_value in found]
    return b"?" + "&".join(rendered).encode("utf-8")


def canonical_resource(raw_path: str, raw_query: str, *,
                       virtual_host_bucket: str | None = None) -> bytes:
    """``/bucket/key`` as sent, plus the sub-resources present, sorted, values decoded."""
    return (_resource_paths(raw_path, virtual_host_bucket)[0] + _subresources(raw_query))


def _amz_headers(headers: Sequence[tuple[str, str]],
                 query_headers: Sequence[tuple[str, str]]) -> dict[str, bytes]:
    collected: dict[str, list[bytes]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname.startswith("x-amz-"):
            collected.setdefault(lname, []).append(_raw(value).strip())
    from_headers = set(collected)
    for name, value in query_headers:
        if name.startswith("x-amz-") and name not in from_headers:
            collected.setdefault(name, []).append(value.strip().encode("utf-8"))
    return {name: b",".join(values) for name, values in collected.items()}


def strings_to_sign(request: RequestView, expires: str, *,
                    virtual_host_bucket: str | None = None) -> list[bytes]:
    """The StringToSign, and the alternative spellings of a bucket-level resource."""
    query_headers = query_signed_headers(request.query)
    standard: dict[str, bytes] = {}
    for name, value in request.headers:
        lname = name.lower()
        if lname in ("content-md5", "content-type") and lname not in standard:
            standard[lname] = _raw(value).strip()
    for name, value in query_headers:
        if name in ("content-md5", "content-type") and name not in standard:
            standard[name] = value.strip().encode("utf-8")
    amz = _amz_headers(request.headers, query_headers)
    lines = [
        request.method.upper().encode(),
        standard.get("content-md5", b""),
        standard.get("content-type", b""),
        expires.encode(),
    ]
    lines.extend(name.encode() + b":" + amz[name] for name in sorted(amz))
    head = b"\n".join(lines) + b"\n"
    subresources = _subresources(request.query)
    return [head + path + subresources
            for path in _resource_paths(request.path, virtual_host_bucket)]


def sign(secret: str, sts: bytes) -> str:
    """Base64 HMAC-SHA1 of the StringToSign."""
    return base64.b64encode(hmac.new(secret.encode(), sts, hashlib.sha1).digest()).decode()


async def authenticate_v2_query(request: RequestView, lookup_secret: SecretLookup, *,
                                now: datetime | None = None,
                                virtual_host_bucket: str | None = None) -> AuthContext:
    """Verify a SigV2 presigned (query-string) request; raise a GatewayError if it fails."""
    params: dict[str, str] = {}
    for name, value, _ in _split_query(request.query):
        params.setdefault(name, value)
    if any(name not in params for name in V2_QUERY_PARAMS):
        raise AccessDenied(_MISSING_PARAMS)
    access_key = params["AWSAccessKeyId"]
    # A '+' the client left unencoded arrives as a space; base64 never contains one.
    signature = params["Signature"].replace(" ", "+")
    raw_expires = params["Expires"]
    if not raw_expires.isascii() or not raw_expires.isdigit() or len(raw_expires) > 20:
        raise AccessDenied(
            f"Invalid date (should be seconds since epoch): {raw_expires[:64]}")
    current = _utc(now)
    # compare as numbers first: a huge Expires is no valid datetime
    too_far = int(raw_expires) > current.timestamp() + MAX_PRESIGNED_EXPIRES + 86400
    expires_at = (current + timedelta(days=8) if too_far
                  else datetime.fromtimestamp(int(raw_expires), UTC))
    if current > expires_at:
        raise AccessDenied("Request has expired", fields={
            "Expires": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ServerTime": current.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
    if too_far or expires_at - current > timedelta(
            seconds=MAX_PRESIGNED_EXPIRES + EXPIRES_SKEW_SECONDS):
        raise AccessDenied("Request expiration must be at most a week (604800 seconds) from "
                           "now", fields={
                               "Expires": raw_expires,
                               "ServerTime": current.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           })

    secret = await lookup_secret(access_key)
    if secret is None:
        raise InvalidAccessKeyId(fields={"AWSAccessKeyId": access_key})
    candidates = strings_to_sign(request, raw_expires,
                                 virtual_host_bucket=virtual_host_bucket)
    provided = signature.encode("utf-8", "replace")
    matched = False
    for candidate in candidates:  # every one computed: no timing hint of which matched
        matched |= hmac.compare_digest(sign(secret, candidate).encode(), provided)
    if not matched:
        sts = candidates[0]
        raise SignatureDoesNotMatch(fields={
            "AWSAccessKeyId": access_key,
            "StringToSign": sts.decode("utf-8", "replace"),
            "SignatureProvided": signature,
            "StringToSignBytes": " ".join(f"{b:02x}" for b in sts),
        })
    return AuthContext(access_key=access_key, presigned=True,
                       payload_mode=PayloadMode.UNSIGNED, content_sha256=None,
                       chunk_signer=None)
