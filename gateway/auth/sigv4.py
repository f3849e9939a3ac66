"""AWS Signature Version 4 verification for S3 requests.

Covers the ``Authorization: AWS4-HMAC-SHA256 ...`` header, presigned URLs (``X-Amz-*`` query
parameters) and the seed of the streaming (aws-chunked) chunk-signature chain. Pure protocol
code: it sees a :class:`RequestView` and an async secret lookup, nothing of the web framework.

Header values and the raw path are expected as the ASGI server delivers them, decoded as
latin-1, so that re-encoding them as latin-1 gives back the exact bytes the client signed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from gateway.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    GatewayError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGNED_EXPIRES = 604800
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")
# Already canonical: only unreserved characters (and '/' in paths).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~/]*")
_PLAIN_COMPONENT = re.compile(r"[A-Za-z0-9\-._~]*")
_UNSUPPORTED_MECHANISM = (
    "The authorization mechanism you have provided is not supported. "
    "Please use AWS4-HMAC-SHA256."
)
_PRESIGNED_REQUIRED = (
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
    "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires",
)


class PayloadMode(enum.Enum):
    SIGNED = "signed"  # x-amz-content-sha256 is the hex SHA-256 of the body
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def is_aws_chunked(self) -> bool:
        return self in _AWS_CHUNKED

    @property
    def has_trailer(self) -> bool:
        return self in (PayloadMode.STREAMING_SIGNED_TRAILER,
                        PayloadMode.STREAMING_UNSIGNED_TRAILER)


_AWS_CHUNKED = frozenset({
    PayloadMode.STREAMING_SIGNED,
    PayloadMode.STREAMING_SIGNED_TRAILER,
    PayloadMode.STREAMING_UNSIGNED_TRAILER,
})
_LITERAL_MODES = {m.value: m for m in PayloadMode if m is not PayloadMode.SIGNED}


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    path: str  # raw request path exactly as sent, still percent-encoded
    query: str  # raw query string as sent, without '?'
    headers: Sequence[tuple[str, str]]  # as received; names in any case; repeats possible


@dataclass(frozen=True, slots=True)
class AuthContext:
    access_key: str
    presigned: bool
    payload_mode: PayloadMode
    content_sha256: str | None  # expected lower-case hex digest when payload_mode is SIGNED
    chunk_signer: ChunkSigner | None  # set for STREAMING_SIGNED and STREAMING_SIGNED_TRAILER


SecretLookup = Callable[[str], Awaitable[str | None]]


# -- signing keys ------------------------------------------------------------------------
def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class _SigningKeyCache:
    """LRU of derived signing keys: four HMACs saved on every request after the first of
    the day. Keyed by a hash of the secret so a rotated secret never hits a stale key."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._maxsize = maxsize
        self._data: OrderedDict[tuple[bytes, str, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()  # cheap, and safe if called from worker threads

    def get(self, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (hashlib.sha256(secret.encode()).digest(), date, region, service)
        with self._lock:
            key = self._data.get(cache_key)
            if key is not None:
                self._data.move_to_end(cache_key)
                return key
        key = _hmac(("AWS4" + secret).encode(), date.encode())
        for part in (region, service, "aws4_request"):
            key = _hmac(key, part.encode())
        with self._lock:
            self._data[cache_key] = key
            if len(self._data) > self._maxsize:
                self._data.popitem(last=False)
        return key

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_signing_keys = _SigningKeyCache()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key for ``date`` (yyyymmdd), cached."""
    return _signing_keys.get(secret, date, region, service)


# -- canonical request pieces ------------------------------------------------------------
def _raw(text: str) -> bytes:
    """The bytes a latin-1-decoded ASGI string came from (UTF-8 if it cannot be latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def canonical_uri(raw_path: str) -> str:
    """S3 canonical URI: each segment decoded once and re-encoded with the AWS rules.

    No dot-segment or slash normalisation: keys may legitimately contain ``..`` and ``//``.
    Splitting before decoding keeps an encoded ``%2F`` inside a segment encoded.
    """
    if not raw_path:
        return "/"
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path
    return "/".join(quote(unquote_to_bytes(seg), safe="~")
                    for seg in _raw(raw_path).split(b"/"))


def _query_component(text: str) -> str:
    if _PLAIN_COMPONENT.fullmatch(text):
        return text
    return quote(unquote_to_bytes(_raw(text).replace(b"+", b" ")), safe="-_.~")


def canonical_query(raw_query: str, *, exclude: str | None = None) -> str:
    pairs: list[tuple[str, str]] = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if exclude is not None and name == exclude:
            continue
        pairs.append((_query_component(name), _query_component(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def parse_query(raw_query: str) -> dict[str, str]:
    """Decoded query parameters; the first occurrence of a repeated name wins."""
    params: dict[str, str] = {}
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        key = _decode_component(name)
        if key not in params:
            params[key] = _decode_component(value)
    return params


def _decode_component(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    return unquote_to_bytes(_raw(text).replace(b"+", b" ")).decode("utf-8", "replace")


def _header_map(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in headers:
        result.setdefault(name.lower(), []).append(value)
    return result


def _canonical_headers(header_map: dict[str, list[str]], signed: Sequence[str]) -> bytes:
    lines = []
    for name in signed:
        values = header_map.get(name)
        if values is None:
            raise SignatureDoesNotMatch(
                f"The header '{name}' is listed in SignedHeaders but is missing from the "
                "request.")
        joined = b",".join(b" ".join(_raw(v).split()) for v in values)
        lines.append(name.encode() + b":" + joined + b"\n")
    return b"".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical_request: bytes) -> str:
    return "\n".join((ALGORITHM, amz_date, scope,
                      hashlib.sha256(canonical_request).hexdigest()))


# -- chunk signatures --------------------------------------------------------------------
class ChunkSigner:
    """Verifies the chain of chunk signatures of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body.

    Each chunk's signature covers the previous one, starting from the request (seed)
    signature, so chunks cannot be dropped, reordered or replayed from another request.
    """

    __slots__ = ("_key", "_prefix", "expects_trailer", "previous_signature")

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str, *,
                 expects_trailer: bool = False) -> None:
        self._key = key
        self._prefix = f"{amz_date}\n{scope}\n"
        self.previous_signature = seed_signature.lower()
        #: True for STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER (a signed trailer follows).
        self.expects_trailer = expects_trailer

    def _check(self, sts: str, signature: str) -> None:
        expected = hmac.new(self._key, sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise SignatureDoesNotMatch(
                "The chunk signature we calculated does not match the signature you "
                "provided.")
        self.previous_signature = expected

    def verify_chunk(self, chunk_hash: str | bytes, signature: str) -> None:
        """``chunk_hash``: SHA-256 of the chunk data, as hex text or the 32 raw bytes."""
        hex_hash = chunk_hash.hex() if isinstance(chunk_hash, bytes) else chunk_hash.lower()
        self._check("AWS4-HMAC-SHA256-PAYLOAD\n" + self._prefix + self.previous_signature
                    + "\n" + EMPTY_SHA256 + "\n" + hex_hash, signature)

    def verify_trailer(self, canonical_trailer: bytes, signature: str) -> None:
        """``canonical_trailer``: the trailer headers, each as ``name:value\\n``."""
        self._check("AWS4-HMAC-SHA256-TRAILER\n" + self._prefix + self.previous_signature
                    + "\n" + hashlib.sha256(canonical_trailer).hexdigest(), signature)


# -- parsing -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Credential:
    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _parse_credential(value: str, error: type[GatewayError]) -> _Credential:
    parts = value.split("/")
    if len(parts) != 5 or not parts[0]:
        raise error(f"Error parsing the Credential parameter: '{value[:200]}' is not of the "
                    "form <access-key>/<date>/<region>/<service>/aws4_request.")
    access_key, date, region, service, terminal = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise error(f"Invalid credential date '{date}': it must be in the form yyyyMMdd.")
    if not region:
        raise error("The credential scope has an empty region.")
    if service != SERVICE:
        raise error(f"The credential scope has the wrong service '{service}'; "
                    f"expecting '{SERVICE}'.")
    if terminal != "aws4_request":
        raise error(f"The credential scope has the wrong terminator '{terminal}'; "
                    "expecting 'aws4_request'.")
    return _Credential(access_key, date, region, service)


def _parse_signed_headers(value: str, error: type[GatewayError]) -> list[str]:
    names = [name.strip().lower() for name in value.split(";")]
    if not value or not all(names):
        raise error("The SignedHeaders list is empty or malformed.")
    if "host" not in names:
        raise error("The host header must be signed (it is missing from SignedHeaders).")
    return sorted(set(names))


def _parse_signature(value: str, error: type[GatewayError]) -> str:
    if not _HEX64.fullmatch(value):
        raise error("The Signature must be 64 hexadecimal characters.")
    return value.lower()


def _parse_amz_date(value: str) -> datetime | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:  # strptime is ten times slower, and this runs on every request
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def _parse_authorization(value: str) -> tuple[_Credential, list[str], str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        if scheme == "AWS":
            raise InvalidRequest(_UNSUPPORTED_MECHANISM
                                 + " Signature Version 2 (AWS AK:signature) is not supported.")
        raise InvalidRequest(_UNSUPPORTED_MECHANISM)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field_value = part.strip().partition("=")
        if not sep or name in fields:
            raise AuthorizationHeaderMalformed(
                f"The authorization header is malformed near '{part.strip()[:64]}'.")
        fields[name] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing or len(fields) != 3:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; it must contain exactly Credential, "
            "SignedHeaders and Signature.")
    return (_parse_credential(fields["Credential"], AuthorizationHeaderMalformed),
            _parse_signed_headers(fields["SignedHeaders"], AuthorizationHeaderMalformed),
            _parse_signature(fields["Signature"], AuthorizationHeaderMalformed))


def _payload_mode(value: str) -> PayloadMode:
    mode = _LITERAL_MODES.get(value)
    if mode is not None:
        return mode
    if _HEX64.fullmatch(value):
        return PayloadMode.SIGNED
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or "
        "a valid sha256 value.", name="x-amz-content-sha256", value=value[:128])


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# -- verification ------------------------------------------------------------------------
async def authenticate(request: RequestView, lookup_secret: SecretLookup, *,
                       now: datetime | None = None,
                       max_skew_seconds: int = 900) -> AuthContext | None:
    """Verify the request's SigV4 signature (Authorization header or presigned URL).

    SigV2 presigned URLs (``AWSAccessKeyId``/``Signature``/``Expires``) are verified by
    :mod:`gateway.auth.sigv2` as path-style requests; SigV2 in the Authorization header is
    refused. Mixing mechanisms is an InvalidArgument. Returns None when the request carries
    no credentials at all (anonymous); raises a :class:`GatewayError` for anything else that
    does not verify.
    """
    header_map = _header_map(request.headers)
    params = parse_query(request.query) if request.query else {}
    query_auth = has_v4_query(params)
    sigv2_query = has_v2_query(params)
    authorization = header_map.get("authorization")
    if authorization is not None:
        if query_auth or sigv2_query:
            raise InvalidArgument(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be "
                "specified.", name="Authorization", value=authorization[0][:128])
        return await _authenticate_header(request, header_map, authorization[0],
                                          lookup_secret, _utc(now), max_skew_seconds)
    if sigv2_query:
        if query_auth:
            raise InvalidArgument(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
                "or the Signature query string parameter should be specified.",
                name="X-Amz-Algorithm", value=params.get("X-Amz-Algorithm", "")[:128])
        # SigV2 presigned URLs (boto3's default): verified by sigv2. Callers that know a
        # virtual-host bucket go through gateway.auth.authenticate_request instead.
        from gateway.auth.sigv2 import authenticate_v2_query  # here: sigv2 imports this module
        return await authenticate_v2_query(request, lookup_secret, now=now)
    if query_auth:
        return await _authenticate_presigned(request, header_map, params, lookup_secret,
                                             _utc(now), max_skew_seconds)
    return None


def has_v4_query(params: Mapping[str, str]) -> bool:
    """True when the decoded query carries SigV4 presigned-URL credentials."""
    return any(n in params for n in ("X-Amz-Algorithm", "X-Amz-Credential",
                                     "X-Amz-Signature"))


def has_v2_query(params: Mapping[str, str]) -> bool:
    """True when the decoded query carries SigV2 query-string credentials."""
    return "AWSAccessKeyId" in params or "Signature" in params


def _request_date(header_map: dict[str, list[str]]) -> tuple[str, str, datetime]:
    """(header value, yyyymmddThhmmssZ, time) from x-amz-date, else the Date header."""
    if "x-amz-date" in header_map:
        raw = header_map["x-amz-date"][0].strip()
        parsed = _parse_amz_date(raw)
        if parsed is not None:
            return raw, raw, parsed
    elif "date" in header_map:
        raw = header_map["date"][0].strip()
        try:
            parsed = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            parsed = (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None
                      else parsed.astimezone(UTC))
            return raw, parsed.strftime(AMZ_DATE_FORMAT), parsed
    raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")


async def _authenticate_header(request: RequestView, header_map: dict[str, list[str]],
                               authorization: str, lookup_secret: SecretLookup,
                               now: datetime, max_skew: int) -> AuthContext:
    credential, signed_headers, signature = _parse_authorization(authorization)

    raw_date, amz_date, request_time = _request_date(header_map)
    if credential.date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            f"Invalid credential date '{credential.date}'. Date is not the same as "
            f"X-Amz-Date: '{amz_date[:8]}'.")
    if abs((now - request_time).total_seconds()) > max_skew:
        raise RequestTimeTooSkewed(fields={
            "RequestTime": raw_date,
            "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "MaxAllowedSkewMilliseconds": str(max_skew * 1000),
        })

    content_sha256 = header_map.get("x-amz-content-sha256")
    if content_sha256 is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    payload_hash = content_sha256[0].strip()
    mode = _payload_mode(payload_hash)

    return await _verify(request, header_map, credential, signed_headers, signature,
                         amz_date, payload_hash, mode, lookup_secret, presigned=False,
                         exclude_query=None)


async def _authenticate_presigned(request: RequestView, header_map: dict[str, list[str]],
                                  params: dict[str, str], lookup_secret: SecretLookup,
                                  now: datetime, max_skew: int) -> AuthContext:
    error = AuthorizationQueryParametersError
    if any(name not in params for name in _PRESIGNED_REQUIRED):
        raise error("Query-string authentication version 4 requires the X-Amz-Algorithm, "
                    "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                    "and X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    credential = _parse_credential(params["X-Amz-Credential"], error)
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], error)
    signature = _parse_signature(params["X-Amz-Signature"], error)
    amz_date = params["X-Amz-Date"]
    request_time = _parse_amz_date(amz_date)
    if request_time is None:
        raise error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if credential.date != amz_date[:8]:
        raise error(f"Invalid credential date '{credential.date}'. Date is not the same as "
                    f"X-Amz-Date: '{amz_date[:8]}'.")
    raw_expires = params["X-Amz-Expires"]
    if not raw_expires.isascii() or not raw_expires.isdigit():
        raise error("X-Amz-Expires should be a number")
    expires = int(raw_expires)
    if expires < 1:
        raise error("X-Amz-Expires must be a positive number of seconds")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise error("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    if (request_time - now).total_seconds() > max_skew:
        raise AccessDenied("Request is not valid yet")
    if now > request_time + timedelta(seconds=expires):
        raise AccessDenied("Request has expired", fields={
            "X-Amz-Expires": raw_expires,
            "Expires": (request_time + timedelta(seconds=expires)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })

    if "x-amz-content-sha256" in header_map:
        payload_hash = header_map["x-amz-content-sha256"][0].strip()
    else:
        payload_hash = next((v for k, v in params.items()
                             if k.lower() == "x-amz-content-sha256"), "UNSIGNED-PAYLOAD")
    mode = _payload_mode(payload_hash)

    return await _verify(request, header_map, credential, signed_headers, signature,
                         amz_date, payload_hash, mode, lookup_secret, presigned=True,
                         exclude_query="X-Amz-Signature")


async def _verify(request: RequestView, header_map: dict[str, list[str]],
                  credential: _Credential, signed_headers: list[str], signature: str,
                  amz_date: str, payload_hash: str, mode: PayloadMode,
                  lookup_secret: SecretLookup, *, presigned: bool,
                  exclude_query: str | None) -> AuthContext:
    secret = await lookup_secret(credential.access_key)
    if secret is None:
        raise InvalidAccessKeyId(fields={"AWSAccessKeyId": credential.access_key})

    canonical_request = b"\n".join((
        request.method.upper().encode(),
        canonical_uri(request.path).encode(),
        canonical_query(request.query, exclude=exclude_query).encode(),
        _canonical_headers(header_map, signed_headers),
        ";".join(signed_headers).encode(),
        _raw(payload_hash),
    ))
    sts = string_to_sign(amz_date, credential.scope, canonical_request)
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureDoesNotMatch(fields={
            "AWSAccessKeyId": credential.access_key,
            "StringToSign": sts,
            "SignatureProvided": signature,
            "CanonicalRequest": canonical_request.decode("utf-8", "replace"),
        })

    chunk_signer = None
    if mode in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER):
        chunk_signer = ChunkSigner(
            key, amz_date, credential.scope, signature,
            expects_trailer=mode is PayloadMode.STREAMING_SIGNED_TRAILER)
    return AuthContext(
        access_key=credential.access_key,
        presigned=presigned,
        payload_mode=mode,
        content_sha256=payload_hash.lower() if mode is PayloadMode.SIGNED else None,
        chunk_signer=chunk_signer,
    )
