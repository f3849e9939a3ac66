"""POST Object (browser form upload): the form's signature and its policy document.

Both flavours boto3's ``generate_presigned_post`` produces are accepted:

- SigV4: ``x-amz-algorithm`` (AWS4-HMAC-SHA256), ``x-amz-credential``, ``x-amz-date`` and
  ``x-amz-signature`` = hex HMAC-SHA256(signing key, the base64 ``policy`` field);
- SigV2: ``AWSAccessKeyId`` and ``signature`` = base64 HMAC-SHA1(secret, ``policy``).

Anonymous form uploads are refused. The policy is a base64 JSON document with an
``expiration`` and ``conditions``; every condition must hold, and every form field (except
``policy``, the signature fields, ``file`` and ``x-ignore-*``) must be covered by one. Field
names, in the form and in conditions, are matched case-insensitively as S3 does.

The caller parses the multipart body (the text fields precede the file part), calls
:func:`verify_post_form`, then enforces :attr:`VerifiedPost.content_length_range` with
:func:`check_content_length` while it streams the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.auth.sigv4 import (
    ALGORITHM,
    SecretLookup,
    _parse_amz_date,
    _parse_credential,
    _utc,
    signing_key,
)
from gateway.errors import (
    AccessDenied,
    EntityTooLarge,
    EntityTooSmall,
    GatewayError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidPolicyDocument,
    KeyTooLongError,
    SignatureDoesNotMatch,
)

MAX_KEY_BYTES = 1024
#: Form fields no policy condition needs to cover (lower case); plus every ``x-ignore-*``.
EXEMPT_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid",
                           "file"})
_V4_REQUIRED = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature",
                "policy")
_V2_REQUIRED = ("awsaccesskeyid", "signature", "policy")
_FIELD_SPELLING = {"awsaccesskeyid": "AWSAccessKeyId"}
_POLICY_FAILED = "Invalid according to Policy: "


@dataclass(frozen=True)
class VerifiedPost:
    access_key: str
    key: str  # the object key, with ${filename} substituted
    content_length_range: tuple[int, int] | None
    fields: dict[str, str]  # lower-cased form field names -> values (excluding the file)


@dataclass(frozen=True, slots=True)
class _Condition:
    op: str  # "eq" or "starts-with"
    field: str  # lower case, without the '$'
    value: str
    text: str  # as S3 shows it: ["eq", "$key", "value"]


def _missing(name: str) -> GatewayError:
    spelled = _FIELD_SPELLING.get(name, name)
    return InvalidArgument(
        f"Bucket POST must contain a field named '{spelled}'.  If it is specified, please "
        "check the order of the fields.", name=spelled, value="")


def _lower_fields(fields: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    for name, value in fields.items():
        lname = name.lower()
        if lname in lowered:
            raise InvalidArgument(f"The form field '{name}' is given more than once.",
                                  name=name, value=value[:128])
        lowered[lname] = value
    return lowered


def _basename(filename: str | None) -> str:
    if not filename:
        return ""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


# -- signatures ----------------------------------------------------------------------------
async def _verify_v4(form: dict[str, str], lookup_secret: SecretLookup) -> str:
    algorithm = form["x-amz-algorithm"]
    if algorithm != ALGORITHM:
        raise InvalidArgument(f'The x-amz-algorithm field only supports "{ALGORITHM}".',
                              name="x-amz-algorithm", value=algorithm[:128])
    credential = _parse_credential(form["x-amz-credential"], InvalidArgument)
    amz_date = form["x-amz-date"]
    if _parse_amz_date(amz_date) is None:
        raise InvalidArgument(
            "The x-amz-date field must be in the ISO8601 Long Format "
            "\"yyyyMMdd'T'HHmmss'Z'\".", name="x-amz-date", value=amz_date[:128])
    if credential.date != amz_date[:8]:
        raise InvalidArgument(
            f"Invalid credential date '{credential.date}'. Date is not the same as "
            f"x-amz-date: '{amz_date[:8]}'.", name="x-amz-credential",
            value=form["x-amz-credential"][:128])
    secret = await lookup_secret(credential.access_key)
    if secret is None:
        raise InvalidAccessKeyId(fields={"AWSAccessKeyId": credential.access_key})
    policy = form["policy"]
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    provided = form["x-amz-signature"].strip()
    if not hmac.compare_digest(expected.encode(), provided.lower().encode("utf-8", "replace")):
        raise SignatureDoesNotMatch(fields={
            "AWSAccessKeyId": credential.access_key,
            "StringToSign": policy,
            "SignatureProvided": provided,
        })
    return credential.access_key


async def _verify_v2(form: dict[str, str], lookup_secret: SecretLookup) -> str:
    access_key = form["awsaccesskeyid"]
    secret = await lookup_secret(access_key)
    if secret is None:
        raise InvalidAccessKeyId(fields={"AWSAccessKeyId": access_key})
    policy = form["policy"]
    expected = base64.b64encode(
        hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    provided = form["signature"].strip()
    if not hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace")):
        raise SignatureDoesNotMatch(fields={
            "AWSAccessKeyId": access_key,
            "StringToSign": policy,
            "SignatureProvided": provided,
        })
    return access_key


# -- the policy document -------------------------------------------------------------------
def _invalid(message: str) -> GatewayError:
    return InvalidPolicyDocument("Invalid Policy: " + message)


def _decode_policy(text: str) -> dict[str, object]:
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Invalid Base64 encoding.") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
        raise _invalid("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid("The policy must be a JSON object.")
    return document


def _parse_expiration(value: object) -> datetime:
    if not isinstance(value, str):
        raise _invalid("Policy missing expiration." if value is None
                       else "Invalid 'expiration' value.")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        # An offset can carry a time at the edge of the calendar past it.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(f"Invalid 'expiration' value: '{value[:64]}'") from None


def _scalar(value: object, condition: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _invalid(f"Invalid Condition: {json.dumps(condition)[:200]}")


def _length(value: object, condition: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.strip().isdigit():
        number = int(value)
    else:
        raise _invalid(f"Invalid content-length-range condition: "
                       f"{json.dumps(condition)[:200]}")
    if number < 0:
        raise _invalid(f"Invalid content-length-range condition: "
                       f"{json.dumps(condition)[:200]}")
    return number


def _parse_conditions(value: object) -> tuple[list[_Condition], tuple[int, int] | None]:
    if not isinstance(value, list):
        raise _invalid("Policy missing conditions." if value is None
                       else "The 'conditions' element must be a list.")
    conditions: list[_Condition] = []
    length_range: tuple[int, int] | None = None
    for item in value:
        if isinstance(item, dict):
            for name, expected in item.items():
                text = _scalar(expected, item)
                conditions.append(_Condition("eq", name.lower(), text,
                                             json.dumps(["eq", "$" + name, text])))
            continue
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise _invalid(f"Invalid Condition: {json.dumps(item)[:200]}")
        op = item[0].lower()
        if op == "content-length-range":
            if len(item) != 3:
                raise _invalid("Invalid content-length-range condition: "
                               f"{json.dumps(item)[:200]}")
            low, high = _length(item[1], item), _length(item[2], item)
            if low > high:
                raise _invalid("Invalid content-length-range condition: the minimum is "
                               f"larger than the maximum: {json.dumps(item)[:200]}")
            if length_range is not None:  # several: all must hold
                low, high = max(low, length_range[0]), min(high, length_range[1])
            length_range = (low, high)
            continue
        if op not in ("eq", "starts-with"):
            raise _invalid(f"Invalid Condition: unknown operation '{item[0][:64]}'.")
        if len(item) != 3 or not isinstance(item[1], str) or not item[1].startswith("$") \
                or len(item[1]) < 2:
            raise _invalid(f"Invalid Condition: {json.dumps(item)[:200]}")
        conditions.append(_Condition(op, item[1][1:].lower(), _scalar(item[2], item),
                                     json.dumps(item)))
    return conditions, length_range


def _holds(condition: _Condition, actual: str) -> bool:
    if condition.op == "eq":
        return actual == condition.value
    if condition.field == "content-type":  # a list: each entry must carry the prefix
        return all(part.strip().startswith(condition.value) for part in actual.split(","))
    return actual.startswith(condition.value)


# -- entry points --------------------------------------------------------------------------
async def verify_post_form(fields: Mapping[str, str], *, bucket: str, filename: str | None,
                           lookup_secret: SecretLookup,
                           now: datetime | None = None) -> VerifiedPost:
    """Authenticate a POST Object form and check it against its policy.

    ``fields``: the form's text fields (names as sent), all of which precede the file part.
    ``filename``: the file part's filename, substituted for ``${filename}`` in ``key``.
    Raises AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, InvalidArgument or
    InvalidPolicyDocument.
    """
    form = _lower_fields(fields)
    is_v4 = "x-amz-signature" in form or "x-amz-credential" in form
    is_v2 = "awsaccesskeyid" in form or "signature" in form
    if is_v4 and is_v2:
        raise InvalidArgument(
            "Only one auth mechanism allowed; the form carries both Signature Version 4 "
            "(x-amz-signature, x-amz-credential) and Version 2 (AWSAccessKeyId, signature) "
            "fields.", name="x-amz-signature", value=form.get("x-amz-signature", "")[:128])
    if not is_v4 and not is_v2:
        raise AccessDenied("Anonymous form uploads are not allowed: the form must be signed "
                           "(x-amz-signature, or AWSAccessKeyId and signature).")
    for name in _V4_REQUIRED if is_v4 else _V2_REQUIRED:
        if name not in form:
            raise _missing(name)
    if "key" not in form:
        raise _missing("key")

    if is_v4:
        access_key = await _verify_v4(form, lookup_secret)
    else:
        access_key = await _verify_v2(form, lookup_secret)

    document = _decode_policy(form["policy"])
    expiration = _parse_expiration(document.get("expiration"))
    conditions, length_range = _parse_conditions(document.get("conditions"))
    current = _utc(now)
    if current > expiration:
        raise AccessDenied(_POLICY_FAILED + "Policy expired.", fields={
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ServerTime": current.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })

    raw_key = form["key"]
    key = raw_key.replace("${filename}", _basename(filename))

    for condition in conditions:
        if condition.field == "bucket":
            ok = _holds(condition, bucket)
        elif condition.field == "key":
            # The policy may speak of the key as sent ("user/${filename}") or as stored.
            ok = _holds(condition, key) or _holds(condition, raw_key)
        else:
            ok = _holds(condition, form.get(condition.field, ""))
        if not ok:
            raise AccessDenied(_POLICY_FAILED + "Policy Condition failed: " + condition.text)

    covered = {condition.field for condition in conditions}
    extra = [name for name in fields
             if name.lower() not in EXEMPT_FIELDS and name.lower() not in covered
             and not name.lower().startswith("x-ignore-")]
    if extra:
        raise AccessDenied(_POLICY_FAILED + "Extra input fields: " + ", ".join(extra))

    if not key:
        raise InvalidArgument("User key must have a length greater than 0.", name="key",
                              value=raw_key[:128])
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLongError(fields={"Size": str(len(key.encode("utf-8", "surrogatepass"))),
                                      "MaxSizeAllowed": str(MAX_KEY_BYTES)})

    return VerifiedPost(
        access_key=access_key,
        key=key,
        content_length_range=length_range,
        fields={name: value for name, value in form.items() if name != "file"},
    )


def check_content_length(range_: tuple[int, int] | None, size: int) -> None:
    """Enforce a policy's content-length-range on the (so far) received file size.

    Call it with the final size; calling it with a running total while streaming stops an
    oversized upload early (EntityTooLarge) — EntityTooSmall only makes sense at the end.
    """
    if range_ is None:
        return
    low, high = range_
    if size < low:
        raise EntityTooSmall(fields={"ProposedSize": str(size), "MinSizeAllowed": str(low)})
    if size > high:
        raise EntityTooLarge(fields={"ProposedSize": str(size), "MaxSizeAllowed": str(high)})
