"""The JSON API described: the OpenAPI 3.1 document (``GET /api/v1/openapi.json``) and a
docs page rendering it (``GET /api/docs``, Swagger UI vendored under ``static/``: no CDN).

The document is a Python dict built by the small helpers below, next to nothing else, so
that a route's shapes are written once (shared schemas in ``components``, the two error
shapes as reusable responses) and mypy and ruff read it like any code. It describes what
the route modules do, not what the references wish; ``tests/test_openapi.py`` checks that
every route in ``ROUTE_MODULES`` is documented and the reverse, and runs Schemathesis
against a real gateway to check that the answers match it.

Two error shapes (see :mod:`gateway.api.errors`): below ``/v1/storage`` the Storage API
reference's flat ``{"error", "message", …}``; everywhere else the overview's envelope
``{"success": false, "error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.api.changes import MAX_WAIT
from gateway.api.errors import STATUS_CODES, ApiError
from gateway.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from gateway.api.presign import MAX_PRESIGNED_EXPIRES
from gateway.service.bots import (
    ADMIN_BOTS,
    BOT_STATUSES,
    BOT_USERS,
    BOTS,
    PACKAGE_LAYOUT,
    STATE_NAMES,
)
from gateway.service.changes import EVENTS
from gateway.service.conversations import CONVERSATIONS, MEMBER_ROLES
from gateway.service.listing import MAX_KEYS
from gateway.service.multipart import MAX_PART_NUMBER
from gateway.service.package_archive import MODES
from gateway.service.query import (
    BRANCH_PREDICATES,
    DEFAULT_PAGE,
    LEAF_PREDICATES,
    MAX_PAGE,
    OBJECTS,
    Entity,
)
from gateway.service.tokens import PERMISSIONS
from gateway.static_files import (
    IMMUTABLE,
    REVALIDATE,
    StaticFile,
    fill_versions,
    packaged,
    serve,
    static_file,
)

Schema = dict[str, Any]
SWAGGER_UI_VERSION = "5.35.0"

# -- schema helpers ------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], *optional: str, closed: bool = True,
        description: str | None = None) -> Schema:
    """An object; every property is required except ``optional``. ``closed``: no other
    properties (answers: the code returns exactly these; request bodies stay open where
    the code ignores unknown fields)."""
    schema: Schema = {"type": "object", "properties": properties}
    required = [name for name in properties if name not in optional]
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def s(description: str | None = None, **extra: Any) -> Schema:
    """A string."""
    return {"type": "string", **({"description": description} if description else {}), **extra}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (a reference: either of the two, with the reference's
    description kept beside them)."""
    if "type" not in schema:
        inner = {k: v for k, v in schema.items() if k != "description"}
        outer = {k: v for k, v in schema.items() if k == "description"}
        return {"anyOf": [inner, {"type": "null"}], **outer}
    return {**schema, "type": [schema["type"], "null"]}


INT: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
BOOL: Schema = {"type": "boolean"}
TRUE: Schema = {"const": True}
WHEN: Schema = {"type": "string", "format": "date-time"}
BINARY: Schema = {"type": "string", "format": "binary"}
STRINGS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}


# -- components ----------------------------------------------------------------------------

_TOKEN_FIELDS: dict[str, Schema] = {
    "id": s(), "user": s(), "name": s(), "permissions": array(ref("Permission")),
    "prefix": s("The token's first characters, to recognise it"), "created_at": WHEN,
    "expires_at": nullable(WHEN), "revoked_at": nullable(WHEN)}
_ATTRIBUTES: dict[str, Schema] = {
    "content_type": s("The object's Content-Type"),
    "metadata": {**STRINGS, "description": "User metadata (the S3 x-amz-meta-* headers)"}}
_LIMIT: Schema = {"anyOf": [COUNT, {"type": "null"}, {"const": "default"}],
                  "description": "A limit: bytes or objects; null: unlimited; "
                                 "\"default\": follow the gateway's settings again"}
_USAGE_LIMIT: Schema = {"type": ["integer", "null"], "description": "null: unlimited"}
_PERCENT: Schema = {"type": ["number", "null"], "description": "null: no limit"}

SCHEMAS: dict[str, Schema] = {
    # errors
    "ErrorEnvelope": obj({
        "success": {"const": False},
        "error": obj({"code": s("VALIDATION_ERROR, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, …"),
                      "message": s(), "details": {"type": "object"}}),
        "request_id": s("Also in the X-Request-Id header")},
        description="The API overview's error envelope"),
    "StorageError": obj({
        "error": s("The envelope's code, lower-cased: not_found, conflict, …"),
        "message": s(), "resource": s("bucket or bucket/key the error is about"),
        "bucket": s("On 409: the bucket"), "quota": {**COUNT, "description": "On 507"},
        "used": {**COUNT, "description": "On 507"},
        "code": s("The precise cause (S3's error code, e.g. NoSuchKey)"),
        "request_id": s()}, "resource", "bucket", "quota", "used",
        description="The Storage API reference's flat error shape"),
    # storage
    "Bucket": obj({"name": s(), "created": WHEN, "size": {**COUNT, "description": "bytes"},
                   "region": s()}),
    "BucketList": obj({"buckets": array(ref("Bucket"))}),
    "CreateBucket": obj({"name": s(example="newbot.gbai"), "region": s(example="us-east-1"),
                         "versioning": {**BOOL, "default": False,
                                        "description": "Keep every version of every "
                                                       "object (S3 versioning Enabled)"}},
                        "region", "versioning", closed=False),
    "BucketCreated": obj({"bucket": s(), "created": TRUE, "location": s()}),
    "BucketDeleted": obj({"deleted": TRUE, "bucket": s()}),
    "ObjectSummary": obj({"key": s(), "size": COUNT, "last_modified": WHEN, "etag": s()}),
    "ObjectList": obj({
        "objects": array(ref("ObjectSummary")),
        "common_prefixes": {**array(s()), "description": "Only when a delimiter is given"},
        "is_truncated": BOOL,
        "continuation_token": nullable(s("Pass it back for the next page"))},
        "common_prefixes"),
    "ObjectWritten": obj({"bucket": s(), "key": s(), "etag": s(),
                          "version_id": nullable(s("null in a bucket never versioned"))}),
    "ObjectDeleted": obj({"deleted": TRUE, "key": s(),
                          "version_id": nullable(s("The version removed, or the delete "
                                                   "marker made")),
                          "delete_marker": BOOL}, "version_id", "delete_marker"),
    "CopyObject": obj({
        "source_bucket": s("Default: the path's bucket"),
        "source_key": s("Default: the path's key"),
        "destination_bucket": s("Default: the source bucket"),
        "destination_key": s(example="copied-file.pdf"), **_ATTRIBUTES},
        "source_bucket", "source_key", "destination_bucket", "content_type", "metadata",
        closed=False, description="content_type or metadata replace the source's; "
                                  "without them the copy keeps the source's"),
    "ObjectCopied": obj({"copied": TRUE, "source": s(), "destination": s(), "etag": s()}),
    "Presign": obj({
        "operation": s("Case-insensitive", enum=list(("GET", "HEAD", "PUT", "DELETE")),
                       default="GET"),
        "method": s("Another name for operation (the answer's name); when both are sent "
                    "they must agree"),
        "expires_in": {"type": "integer", "minimum": 1, "maximum": MAX_PRESIGNED_EXPIRES,
                       "default": 3600},
        "content_type": s("PUT: the Content-Type the upload must send; GET: the answer's. "
                          "Not with a part"),
        "upload_id": s("With part_number and operation PUT: presign an UploadPart of this "
                       "multipart upload of the path's bucket and key (404 when there is "
                       "no such upload)"),
        "part_number": {"type": "integer", "minimum": 1, "maximum": MAX_PART_NUMBER,
                        "description": "With upload_id: the part the URL uploads; "
                                       "partNumber and uploadId are signed query "
                                       "parameters of the URL"}},
        "operation", "method", "expires_in", "content_type", "upload_id", "part_number",
        closed=False),
    "PresignedUrl": obj({"url": s(format="uri"), "expires_at": WHEN, "method": s(),
                         "headers": {**STRINGS, "description": "Headers the request must send"}}),
    "InitiateMultipart": obj(dict(_ATTRIBUTES), *_ATTRIBUTES, closed=False),
    "MultipartUpload": obj({"upload_id": s(), "bucket": s(), "key": s()}),
    "PartUploaded": obj({"part_number": INT, "etag": s()}),
    "CompleteMultipart": obj({"parts": {
        **array(obj({"part_number": INT, "etag": s()}, closed=False)),
        "description": "Default: every uploaded part, in order"}}, "parts", closed=False),
    "UploadAborted": obj({"aborted": TRUE, "key": s(), "upload_id": s()}),
    # auth and tokens
    "Permission": s(enum=list(PERMISSIONS)),
    "Role": s(enum=["admin", "member"]),
    "Login": {**obj({"username": s(), "password": s(format="password"),
                     "access_key": s(), "secret_key": s(format="password")},
                    "username", "password", "access_key", "secret_key", closed=False),
              "description": "A user name and password, or an S3 key pair"},
    "Session": obj({"token": s(), "token_type": {"const": "Bearer"}, "expires_at": WHEN}),
    "LoggedOut": obj({"logged_out": TRUE}),
    "Me": obj({"id": INT, "username": s(), "role": ref("Role"), "groups": array(s()),
               "permissions": array(ref("Permission")),
               "auth": s("How the caller authenticated", enum=["session", "token"])}),
    "Token": obj(dict(_TOKEN_FIELDS)),
    "NewToken": obj({**_TOKEN_FIELDS, "token": s("The secret, shown this once")}),
    "CreateToken": obj({
        "name": s(example="kb-sync"), "permissions": array(ref("Permission")),
        "user": s("Admins: the owner (default: the caller)"),
        "expires_at": nullable({**WHEN, "description": "Default: in 90 days; null: never"})},
        "user", "expires_at", closed=False),
    "TokenRevoked": obj({"id": s(), "revoked": TRUE}),
    # admin
    "User": obj({"name": s(), "role": ref("Role"), "display_name": nullable(s()),
                 "email": nullable(s()),
                 "canonical_id": nullable(s("null: derived from the user's id")),
                 "disabled": BOOL,
                 "created_at": WHEN}),
    "CreateUser": obj({"name": s(minLength=1, maxLength=128, example="alice"),
                       "role": {**ref("Role"), "default": "member"},
                       "display_name": s(), "email": s(), "canonical_id": s(),
                       "password": s(format="password")},
                      "role", "display_name", "email", "canonical_id", "password",
                      closed=False),
    "UpdateUser": obj({"disabled": BOOL, "enabled": {**BOOL, "description": "= not disabled"},
                       "role": ref("Role"),
                       "password": nullable(s("null removes it; open sessions end"))},
                      "disabled", "enabled", "role", "password", closed=False),
    "AccessKey": obj({"access_key": s(), "user": s(), "enabled": BOOL, "created_at": WHEN}),
    "NewAccessKey": obj({"user": s(), "access_key": s(),
                         "secret_key": s("Shown this once"), "enabled": TRUE}),
    "CreateAccessKey": obj({"access_key": s("Import a known key (default: generated)"),
                            "secret_key": s()}, "access_key", "secret_key", closed=False),
    "UpdateAccessKey": obj({"enabled": BOOL}, closed=False),
    "AccessKeyState": obj({"access_key": s(), "enabled": BOOL}),
    "Group": obj({"name": s(), "members": array(s()), "created_at": WHEN}),
    "CreateGroup": obj({"name": s(example="editors")}, closed=False),
    "GroupDeleted": obj({"name": s(), "deleted": TRUE}),
    "GranteeType": s(enum=["user", "group"]),
    "GrantPermission": s(enum=["read", "write", "full"]),
    "Grant": obj({"bucket": s(), "grantee_type": ref("GranteeType"), "grantee": s(),
                  "permission": ref("GrantPermission"), "created_at": WHEN}),
    "GrantSaved": obj({"bucket": s(), "grantee_type": ref("GranteeType"), "grantee": s(),
                       "permission": ref("GrantPermission")}),
    "PutGrant": obj({"grantee_type": ref("GranteeType"), "grantee": s(example="alice"),
                     "permission": ref("GrantPermission")}, closed=False),
    "Grantee": obj({"grantee_type": ref("GranteeType"), "grantee": s()},
                   "grantee_type", "grantee", closed=False,
                   description="Or as the grantee_type and grantee query parameters"),
    "GrantRevoked": obj({"bucket": s(), "grantee_type": ref("GranteeType"), "grantee": s(),
                         "revoked": TRUE}),
    # quotas
    "QuotaUsage": obj({
        "bucket": s(), "owner": s(), "used_bytes": COUNT, "used_objects": COUNT,
        "reserved_bytes": COUNT, "reserved_objects": COUNT, "max_bytes": _USAGE_LIMIT,
        "max_objects": _USAGE_LIMIT, "max_object_size": _USAGE_LIMIT,
        "percent_bytes": _PERCENT, "percent_objects": _PERCENT,
        "overrides": {**array(s(enum=["max_bytes", "max_objects", "max_object_size"])),
                      "description": "The limits the bucket sets itself"}}),
    "QuotaPage": obj({"buckets": array(ref("QuotaUsage")), "total": COUNT, "limit": INT,
                      "offset": COUNT}),
    "PutQuota": obj({"max_bytes": _LIMIT, "max_objects": _LIMIT, "max_object_size": _LIMIT},
                    "max_bytes", "max_objects", "max_object_size",
                    description="Limits not given stay as they are"),
    "UserUsage": obj({"user": s(), "buckets": COUNT, "used_bytes": COUNT,
                      "used_objects": COUNT}),
    "UsageReport": obj({"users": array(ref("UserUsage"))}),
    # change feed and search
    "Change": obj({
        "sequence": {"type": "integer", "minimum": 1,
                     "description": "The change's place in the log (commit order)"},
        "event": s(enum=list(EVENTS)), "bucket": s(), "key": s(),
        "size": nullable({**COUNT, "description": "null for a delete"}),
        "etag": nullable(s("Quoted, as S3 sends it; null for a delete")),
        "version_id": nullable(s()), "time": WHEN},
        description="One change to an object (the event webhooks and /ws deliver too)"),
    "ChangePage": obj({
        "changes": array(ref("Change")),
        "cursor": s("Pass it back as since to resume after this page"),
        "has_more": {**BOOL, "description": "The page is full: ask again at once"}}),
    "SearchItem": obj({"key": s(), "size": COUNT, "last_modified": WHEN,
                       "etag": s("Without quotes"), "content_type": nullable(s()),
                       "metadata": {**STRINGS, "description": "User metadata"}}),
    "PageInfo": obj({
        "hasNextPage": BOOL, "hasPreviousPage": BOOL,
        "startCursor": nullable(s("The first item's cursor; null on an empty page")),
        "endCursor": nullable(s("The last item's cursor; null on an empty page")),
        "total": {"type": "integer", "minimum": -1,
                  "description": "Items matching where, over every page; -1 unless "
                                 "total=true"}}),
    "SearchPage": obj({"items": array(ref("SearchItem")), "pageInfo": ref("PageInfo")}),
    # the bot platform
    "Rejection": obj({
        "id": {"type": "integer"}, "bucket": s(), "key": s(),
        "reason": s(enum=["type", "size", "infected", "unscannable"]),
        "detail": nullable(s()), "principal": nullable(s()), "createdAt": s(format="date-time"),
    }, description="An upload that was refused; nothing of it was stored"),
    "Pagination": obj({"limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                       "offset": COUNT, "total": COUNT, "sort": s(),
                       "order": s(enum=["asc", "desc"])}),
    "Customer": obj({
        "id": s(), "name": nullable(s()), "email": nullable(s()),
        "externalId": nullable(s()), "facebookId": nullable(s("= externalId")),
        "bots": {**array(s()), "description": "The ids of the customer's bots"},
        "createdAt": WHEN}, closed=False,
        description="Attributes the customer was given besides these fields are answered "
                    "flat, as they were sent"),
    "CustomerFields": obj({
        "name": nullable(s(maxLength=256, example="Acme")),
        "email": nullable(s(maxLength=320, example="bots@acme.example")),
        "externalId": {"type": ["string", "integer", "null"],
                       "description": "At most 128 characters"},
        "facebookId": {"type": ["string", "integer", "null"],
                       "description": "An alias of externalId"}},
        "name", "email", "externalId", "facebookId", closed=False,
        description="Other members are kept as attributes (null removes one); id, bots "
                    "and createdAt may be sent back unchanged"),
    "BotState": s("The bot's global state", enum=list(STATE_NAMES.values())),
    "BotQuota": obj({
        "bytes": _USAGE_LIMIT, "objects": _USAGE_LIMIT, "maxObjectSize": _USAGE_LIMIT,
        "usedBytes": COUNT, "usedObjects": COUNT},
        description="The package bucket's limits (null: unlimited) and usage"),
    "Bot": obj({
        "id": s(), "customerId": s("The owner"), "name": s(),
        "description": nullable(s()), "url": nullable(s("The webhook URL")),
        "bucket": nullable(s("The package bucket, <name>.gbai")),
        "inviteCode": nullable(s("Lets another customer join as an admin")),
        "admins": {**array(s()), "description": "Customer ids"},
        "users": {**array(s()), "description": "Chat user ids"},
        "state": ref("BotState"),
        "quota": nullable({**ref("BotQuota"), "description": "null: the bucket is gone"}),
        "createdAt": WHEN}, closed=False,
        description="Attributes the bot was given besides these fields are answered flat, "
                    "as they were sent"),
    "BotSecrets": obj({
        "secret": s("The webhook secret (signs deliveries), shown this once"),
        "s3Key": obj({"accessKey": s(), "secretKey": s()},
                     description="An S3 key for the package bucket only, shown this once")},
        "secret", "s3Key", closed=False),
    "BotQuotaChange": obj({"bytes": _LIMIT, "objects": _LIMIT, "maxObjectSize": _LIMIT,
                           "usedBytes": {"description": "Ignored"},
                           "usedObjects": {"description": "Ignored"}},
                          "bytes", "objects", "maxObjectSize", "usedBytes", "usedObjects",
                          description=f"objects holds at least {len(PACKAGE_LAYOUT)} (the "
                                      "package layout); only administrators go above the "
                                      "gateway's defaults"),
    "BotStateValue": {"anyOf": [s(enum=list(STATE_NAMES.values())),
                                {"type": "integer", "enum": sorted(STATE_NAMES)}],
                      "description": "A name (case-insensitive) or its number: "
                                     + ", ".join(f"{n} = {v}" for n, v in STATE_NAMES.items())},
    "CreateBot": obj({
        "name": s("Also names the package bucket, <name>.gbai; it cannot change later",
                  pattern=r"^[a-z0-9](?:[a-z0-9-]{0,56}[a-z0-9])?$", example="supportbot"),
        "description": nullable(s(maxLength=4096)),
        "url": nullable(s("The webhook URL, http or https", format="uri", maxLength=2048)),
        "state": {**ref("BotStateValue"), "default": "enabled"},
        "quota": nullable(ref("BotQuotaChange")),
        "s3Key": {**BOOL, "default": False,
                  "description": "Also mint an S3 key for the package bucket"},
        "customerId": s("Administrators: another customer (default: the caller's, created "
                        "when missing)")},
        "description", "url", "state", "quota", "s3Key", "customerId", closed=False,
        description="Other members are kept as attributes"),
    "UpdateBot": obj({
        "description": nullable(s(maxLength=4096)),
        "url": nullable(s("A new URL also ends the error streak", format="uri",
                          maxLength=2048)),
        "state": ref("BotStateValue"),
        "quota": nullable(ref("BotQuotaChange")),
        "inviteCode": s("\"new\": a fresh code; with admins \"me\": the bot's code"),
        "secret": s("\"new\": a fresh webhook secret, answered once", enum=["new"]),
        "s3Key": {**BOOL, "description": "true: mint an S3 key for the package (owner or "
                                         "administrator)"},
        "admins": {"description": "\"me\", with inviteCode and customerId (the owner's), "
                                  "joins the bot as an admin; otherwise sent back unchanged"},
        "customerId": s("With admins \"me\": the bot owner's id")},
        "description", "url", "state", "quota", "inviteCode", "secret", "s3Key", "admins",
        "customerId", closed=False,
        description="Members not given stay as they are; other members are attributes "
                    "(null removes one). id, name, bucket, users and createdAt may be sent "
                    "back unchanged"),
    "BotDeleted": obj({"id": s(), "deleted": TRUE,
                       "bucket": nullable(s("The package bucket, which remains"))}),
    "BotUser": obj({
        "botId": s(), "id": s(), "customerId": nullable(s()),
        "externalId": nullable(s("The user's id on the chat channel")),
        "facebookId": nullable(s("= externalId")),
        "botStatus": s(enum=list(BOT_STATUSES)),
        "attributes": {"type": "object", "description": "Free-form"},
        "createdAt": WHEN}),
    "BotUserFields": obj({
        "customerId": s("When given, the bot owner's"),
        "externalId": {"type": ["string", "integer", "null"],
                       "description": "At most 128 characters"},
        "facebookId": {"type": ["string", "integer", "null"],
                       "description": "An alias of externalId"},
        "botStatus": s(enum=list(BOT_STATUSES)),
        "attributes": {"type": "object", "description": "Merged into the attributes"}},
        *("customerId", "externalId", "facebookId", "botStatus", "attributes"),
        closed=False, description="Other members are attributes too (null removes one)"),
    "CreateBotUser": {"allOf": [ref("BotUserFields"), obj(
        {"botId": s(minLength=1)}, closed=False)],
        "description": "An existing user with the same externalId is answered as it is "
                       "(200)"},
    "UpdateBotUser": {"allOf": [ref("BotUserFields"), obj(
        {"botId": s(minLength=1)}, closed=False)]},
    "UpdateBotUsers": obj({
        "botId": s(minLength=1),
        "ids": {**array(s()), "minItems": 1, "maxItems": 1000},
        "update": ref("BotUserFields")}, closed=False,
        description="The same change to several users: all of them or none"),
    "MemberRole": s(enum=["owner", *MEMBER_ROLES]),
    "Participant": obj({"user": s(), "role": ref("MemberRole")}),
    "Conversation": obj({
        "id": s(), "token": s("= id"), "name": s(), "owner": s("The owner's user name"),
        "role": {**ref("MemberRole"), "description": "The caller's"},
        "createdAt": WHEN, "participants": array(ref("Participant")),
        "bots": {**array(s()), "description": "The ids of the bots enabled in it"}}),
    "NewParticipant": obj({"user": s("A gateway user name", minLength=1, example="alice"),
                           "role": s(enum=list(MEMBER_ROLES), default="user")},
                          "role", closed=False),
    "CreateConversation": obj({
        "name": s(minLength=1, maxLength=256, example="support"),
        "participants": {**array(ref("NewParticipant")), "maxItems": 1000,
                         "description": "Besides the caller, its owner"}},
        "participants", closed=False),
    "TalkBot": obj({
        "id": s(), "name": s(), "description": nullable(s()), "url": nullable(s()),
        "url_hash": nullable(s("bot- and the SHA-1 of the URL")),
        "state": {"type": "integer", "enum": sorted(STATE_NAMES),
                  "description": ", ".join(f"{n} = {v}" for n, v in STATE_NAMES.items())},
        "error_count": COUNT,
        "last_error_date": nullable({**INT, "description": "Unix time"}),
        "last_error_message": nullable(s())},
        description="A bot as the Talk reference's bot/admin lists it"),
    "ConversationBot": obj({
        "id": s(), "name": s(), "description": nullable(s()),
        "state": {"type": "integer", "enum": [0, 1],
                  "description": "1: enabled in this conversation"}}),
    "PackageImported": obj({
        "bucket": s(), "imported": {**COUNT, "description": "Objects written"},
        "deleted": {**COUNT, "description": "Objects the archive lacked (replace)"},
        "bytes": COUNT}),
}

# -- responses -----------------------------------------------------------------------------

_REQUEST_ID = {"$ref": "#/components/headers/RequestId"}
#: Sent on every answer while rate limits are on (GATEWAY_RATE_LIMITS), absent otherwise.
_RATE_HEADERS = {name: {"$ref": f"#/components/headers/{name.replace('-', '')}"}
                 for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining",
                              "X-RateLimit-Reset")}
_MEANINGS = {
    400: "Invalid input", 401: "Missing or invalid credentials", 403: "Not allowed",
    404: "Not found", 405: "Not allowed on this resource (a delete marker)",
    409: "Conflict", 411: "Content-Length is required",
    412: "A precondition did not hold", 413: "The body is too large",
    415: "The body must be application/json, or a file type a bot package's folder does "
         "not accept", 416: "The range is not satisfiable",
    422: "Refused by the malware scanner",
    429: "Rate limit exceeded (see Retry-After)",
    500: "Internal error (logged with the request id)", 501: "Not implemented",
    503: "The gateway is starting or unavailable", 507: "Storage quota exceeded",
}
ERROR_STATUSES = tuple(_MEANINGS)


def _error_headers(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": _REQUEST_ID, **_RATE_HEADERS}
    if status == 429:
        headers["Retry-After"] = {"schema": s("Seconds"), "required": True}
    if status == 401:
        headers["WWW-Authenticate"] = {"schema": s(example="Bearer")}
    if status == 416:
        headers["Content-Range"] = {"schema": s(example="bytes */1024")}
    return headers


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, meaning in _MEANINGS.items():
        code = STATUS_CODES.get(status, "SERVER_ERROR")
        headers = _error_headers(status)
        out[f"Error{status}"] = {"description": f"{meaning} ({code})", "headers": headers,
                                 "content": {"application/json": {
                                     "schema": ref("ErrorEnvelope")}}}
        out[f"StorageError{status}"] = {
            "description": f"{meaning} (\"{code.lower()}\")", "headers": headers,
            "content": {"application/json": {"schema": ref("StorageError")}}}
        out[f"HeadError{status}"] = {"description": f"{meaning} (no body: HEAD)",
                                     "headers": headers}
    return out


def _headers(**named: Schema) -> dict[str, Any]:
    return {"X-Request-Id": _REQUEST_ID, **_RATE_HEADERS, **{
        name.replace("_", "-"): {"schema": schema, "required": True}
        for name, schema in named.items()}}


def json_answer(schema: Schema, description: str = "OK", **headers: Schema) -> Schema:
    return {"description": description, "headers": _headers(**headers),
            "content": {"application/json": {"schema": schema}}}


def envelope(data: Schema, description: str = "OK", *, message: bool = False,
             **headers: Schema) -> Schema:
    """The success envelope ``{"success": true, "data": …, "message"?}``."""
    props: dict[str, Schema] = {"success": TRUE, "data": data, "message": s()}
    return json_answer(obj(props, *(() if message else ("message",))), description,
                       **headers)


def page_of(item: Schema, *, keyset: bool = False) -> Schema:
    """A list's envelope (:mod:`gateway.api.pagination`): an offset page (the items as
    ``data``, the paging state as ``pagination``, the total also in ``X-Total-Count``);
    ``keyset``: or, when asked with a keyset parameter, ``data`` holds ``items`` and
    ``pageInfo`` (no ``X-Total-Count`` then)."""
    offset = obj({"success": TRUE, "data": array(item), "pagination": ref("Pagination")},
                 description="An offset page (limit, offset, sort, order, filter)")
    total = s("How many match, over every page")
    if not keyset:
        return json_answer(offset, X_Total_Count=total)
    by_key = obj({"success": TRUE, "data": obj({"items": array(item),
                                                 "pageInfo": ref("PageInfo")})},
                 description="A keyset page (cursor, where, order_by, total)")
    return may_send(json_answer({"anyOf": [offset, by_key]}),
                    X_Total_Count={**total, "description": "Offset pages"})


def may_send(answer: Schema, **headers: Schema) -> Schema:
    """``answer`` with headers that are sent only sometimes."""
    extra = {name.replace("_", "-"): {"schema": schema} for name, schema in headers.items()}
    return {**answer, "headers": {**answer["headers"], **extra}}


# -- operations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Which error responses an operation answers with."""

    prefix: str


ENVELOPE, STORAGE, HEAD = Style("Error"), Style("StorageError"), Style("HeadError")
_JSON_BODY_ERRORS = (400, 413, 415)


def param(where: str, name: str, schema: Schema, description: str | None = None, *,
          required: bool = False, example: Any = None, **extra: Any) -> Schema:
    """A parameter; ``extra``: more of its fields (``style``, ``explode``)."""
    p: Schema = {"name": name, "in": where, "schema": schema,
                 "required": required or where == "path", **extra}
    if description:
        p["description"] = description
    if example is not None:
        p["example"] = example
    return p


def op(operation_id: str, tag: str, summary: str, answers: dict[int, Schema], *,
       errors: tuple[int, ...] = (), style: Style = ENVELOPE, params: tuple[Schema, ...] = (),
       body: str | None = None, body_required: bool = True, public: bool = False,
       description: str | None = None) -> Schema:
    """One operation. ``body``: the name of its JSON body schema (adds 400/413/415);
    ``public``: no credentials (otherwise 401 is added); 429, 500 and 503 always."""
    statuses = set(errors) | {429, 500, 503}
    if not public:
        statuses.add(401)
    if body is not None:
        statuses |= set(_JSON_BODY_ERRORS)
    responses: dict[str, Any] = {str(code): answer for code, answer in answers.items()}
    for code in sorted(statuses):
        responses[str(code)] = {"$ref": f"#/components/responses/{style.prefix}{code}"}
    out: Schema = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = {"required": body_required, "content": {
            "application/json": {"schema": ref(body)}}}
    out["responses"] = responses
    if public:
        out["security"] = []
    return out


BUCKET = param("path", "bucket", s(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
               example="mybot.gbai")
KEY = param("path", "key", s(minLength=1), "The object key; it may contain '/'",
            example="docs/manual.pdf")
VERSION_ID = param("query", "version_id", s(), "One version of the object (a versioned "
                   "bucket's, or null)")
UPLOAD_ID = param("path", "uploadId", s(pattern="^[A-Za-z0-9_-]{64}$"),
                  "As returned when the upload was initiated")
PART_NUMBER = param("path", "partNumber", {"type": "integer", "minimum": 1,
                                           "maximum": MAX_PART_NUMBER})
NAME = param("path", "name", s(minLength=1), example="alice")
GROUP = param("path", "name", s(minLength=1), example="editors")
_READ_HEADERS = (
    param("header", "Range", s("One range, bytes=START-END (others: the whole object)"),
          example="bytes=0-1023"),
    param("header", "If-Match", s()), param("header", "If-None-Match", s()),
    param("header", "If-Modified-Since", s()), param("header", "If-Unmodified-Since", s()))
_WRITE_HEADERS = (
    param("header", "Content-MD5", s("Base64 MD5 of the body, verified")),
    param("header", "If-None-Match", s("'*': only if no such object exists")),
    param("header", "If-Match", s("Only if the current object has this ETag")))
_OBJECT_HEADERS = {"ETag": s(), "Last-Modified": s(), "Content-Length": s()}
_BINARY_ANY = {"*/*": {"schema": BINARY}}
_OBJECT_PATH = "/v1/storage/buckets/{bucket}/objects/{key}"
_STORAGE_READ = (400, 403, 404)
#: Writes: 415 when a bot package's folder refuses the file's type, 422 when the malware
#: scanner (if one is configured) refuses the bytes.
_STORAGE_WRITE = (400, 403, 404, 413, 415, 422, 507)


def _object_read(head: bool) -> Schema:
    verb = "head" if head else "get"
    content: dict[str, Any] = {} if head else {"content": _BINARY_ANY}
    full = {"description": "The object" + (" (headers only)" if head else ""),
            "headers": _headers(**_OBJECT_HEADERS), **content}
    part = {"description": "The requested range",
            "headers": _headers(**_OBJECT_HEADERS, Content_Range=s()), **content}
    return op(f"{verb}Object", "storage", "Object metadata" if head else "Download an object",
              {200: full, 206: part, 304: {"description": "Not modified (If-None-Match, "
                                                          "If-Modified-Since)",
                                           "headers": _headers()}},
              errors=(*_STORAGE_READ, 405, 412, 416), style=HEAD if head else STORAGE,
              params=(BUCKET, KEY, VERSION_ID, *_READ_HEADERS),
              description="The body streams as stored, with its Content-Type, ETag, "
                          "Last-Modified and x-amz-meta-* headers.")


_OVERLOADED = (
    "The path shares its shape with an object's: only when uploadId is 64 URL-safe Base64 "
    "characters (partNumber a number) does it mean the upload (404 when there is no such "
    "upload). Otherwise it names the object whose key is the whole rest of the path, and "
    "the request is {op}.")


def _either(*names: str) -> Schema:
    return {"anyOf": [ref(name) for name in names]}


def storage_paths() -> dict[str, Schema]:
    obj_path = _OBJECT_PATH
    return {
        "/v1/storage/buckets": {
            "get": op("listBuckets", "storage", "List buckets",
                      {200: json_answer(ref("BucketList"))}, errors=(403,), style=STORAGE),
            "post": op("createBucket", "storage", "Create a bucket",
                       {201: json_answer(ref("BucketCreated"), "Created", Location=s())},
                       errors=(403, 409, 501), style=STORAGE, body="CreateBucket")},
        "/v1/storage/buckets/{bucket}": {
            "delete": op("deleteBucket", "storage", "Delete an empty bucket",
                         {200: json_answer(ref("BucketDeleted"))}, errors=(403, 404, 409),
                         style=STORAGE, params=(BUCKET,))},
        "/v1/storage/buckets/{bucket}/objects": {
            "get": op("listObjects", "storage", "List objects",
                      {200: json_answer(ref("ObjectList"))}, errors=_STORAGE_READ,
                      style=STORAGE, params=(
                          BUCKET, param("query", "prefix", s(), example="docs/"),
                          param("query", "delimiter", s(), example="/"),
                          param("query", "max_keys", {**COUNT, "default": MAX_KEYS},
                                f"Values above {MAX_KEYS} count as {MAX_KEYS}"),
                          param("query", "continuation_token", s(),
                                "From the previous page")))},
        obj_path: {
            "get": _object_read(head=False),
            "head": _object_read(head=True),
            "put": {**op("putObject", "storage", "Upload an object",
                         {200: json_answer(ref("ObjectWritten"), ETag=s())},
                         errors=(*_STORAGE_WRITE, 409, 411, 412), style=STORAGE,
                         params=(BUCKET, KEY, *_WRITE_HEADERS),
                         description="The body is the object, streamed; Content-Length is "
                                     "required, Content-Type is stored, x-amz-meta-* "
                                     "headers become metadata, x-amz-checksum-* are "
                                     "verified."),
                     "requestBody": {"required": True, "content": _BINARY_ANY}},
            "delete": op("deleteObject", "storage", "Delete an object (idempotent)",
                         {200: json_answer(ref("ObjectDeleted"))}, errors=_STORAGE_READ,
                         style=STORAGE, params=(BUCKET, KEY, VERSION_ID),
                         description="In a versioned bucket, without version_id a delete "
                                     "marker hides the object; with it, that version is "
                                     "removed for good.")},
        obj_path + "/copy": {
            "post": op("copyObject", "storage", "Copy an object",
                       {200: json_answer(ref("ObjectCopied"))}, errors=_STORAGE_WRITE,
                       style=STORAGE, params=(BUCKET, KEY), body="CopyObject",
                       description="The path names the source unless the body does.")},
        obj_path + "/presign": {
            "post": op("presignObject", "storage", "Presign an S3 URL for the object",
                       {200: json_answer(ref("PresignedUrl"))},
                       errors=(403, 404, 409), style=STORAGE, params=(BUCKET, KEY),
                       body="Presign", body_required=False,
                       description="A SigV4 URL of the S3 endpoint, signed with the "
                                   "caller's oldest enabled S3 key (409 without one). "
                                   "With upload_id and part_number, a URL that uploads "
                                   "one part of that multipart upload (its answer's ETag "
                                   "goes to the complete call).")},
        obj_path + "/multipart": {
            "post": op("createMultipartUpload", "storage", "Initiate a multipart upload",
                       {200: json_answer(ref("MultipartUpload"))}, errors=_STORAGE_READ,
                       style=STORAGE, params=(BUCKET, KEY), body="InitiateMultipart",
                       body_required=False)},
        obj_path + "/multipart/{uploadId}": {
            "delete": op("abortMultipartUpload", "storage", "Abort a multipart upload",
                         {200: json_answer(_either("UploadAborted", "ObjectDeleted"))},
                         errors=_STORAGE_READ, style=STORAGE, params=(BUCKET, KEY, UPLOAD_ID),
                         description=_OVERLOADED.format(op="deleteObject"))},
        obj_path + "/multipart/{uploadId}/{partNumber}": {
            "put": {**op("uploadPart", "storage", "Upload a part",
                         {200: json_answer(_either("PartUploaded", "ObjectWritten"), ETag=s())},
                         errors=(*_STORAGE_WRITE, 409, 411, 412, 416), style=STORAGE,
                         params=(BUCKET, KEY, UPLOAD_ID, PART_NUMBER, *_WRITE_HEADERS),
                         description=_OVERLOADED.format(op="putObject")),
                    "requestBody": {"required": True, "content": _BINARY_ANY}}},
        obj_path + "/multipart/{uploadId}/complete": {
            "post": op("completeMultipartUpload", "storage", "Complete a multipart upload",
                       {200: json_answer(ref("ObjectWritten"))}, errors=_STORAGE_WRITE,
                       style=STORAGE, params=(BUCKET, KEY, param(
                           "path", "uploadId", s(), "As returned when it was initiated")),
                       body="CompleteMultipart", body_required=False)},
    }


def account_paths() -> dict[str, Schema]:
    return {
        "/v1/auth/login": {
            "post": op("login", "auth", "Log in for a session token",
                       {200: envelope(ref("Session"), Cache_Control=s())}, public=True,
                       errors=(401,),
                       body="Login", body_required=False,
                       description="401 for wrong or missing credentials. Send the token "
                                   "as 'Authorization: Bearer …'.")},
        "/v1/auth/logout": {
            "post": op("logout", "auth", "End this login session",
                       {200: envelope(ref("LoggedOut"), message=True)}, errors=(400,),
                       description="Only a session logs out (400 for an API token).")},
        "/v1/auth/me": {
            "get": op("me", "auth", "Who is calling", {200: envelope(ref("Me"))})},
        "/v1/tokens": {
            "get": op("listTokens", "tokens", "List API tokens",
                      {200: envelope(array(ref("Token")))}, errors=(403,),
                      params=(param("query", "user", s(), "Admins: whose (default: yours)"),)),
            "post": op("createToken", "tokens", "Create an API token",
                       {201: envelope(ref("NewToken"), "Created", message=True,
                                      Cache_Control=s())}, errors=(403,), body="CreateToken",
                       description="The token is shown once. It may not hold permissions "
                                   "its creator lacks.")},
        "/v1/tokens/{token_id}": {
            "delete": op("revokeToken", "tokens", "Revoke an API token",
                         {200: envelope(ref("TokenRevoked"), message=True)}, errors=(404,),
                         params=(param("path", "token_id", s()),))},
    }


def admin_paths() -> dict[str, Schema]:
    a = "admin"
    grants_errors = (403, 404)
    return {
        "/v1/admin/rejections": {
            "get": op("listRejections", a,
                      "Uploads refused by a package rule or the malware scanner",
                      {200: page_of(ref("Rejection"))}, errors=(400, 403),
                      params=_list_params(("createdAt",), "createdAt",
                                          ("bucket", "reason", "principal")))},
        "/v1/admin/users": {
            "get": op("listUsers", a, "List users", {200: envelope(array(ref("User")))},
                      errors=(403,)),
            "post": op("createUser", a, "Create a user",
                       {201: envelope(ref("User"), "Created", message=True)},
                       errors=(403, 409), body="CreateUser")},
        "/v1/admin/users/{name}": {
            "patch": op("updateUser", a, "Change a user's role, password or state",
                        {200: envelope(ref("User"), message=True)}, errors=(403, 404),
                        params=(NAME,), body="UpdateUser")},
        "/v1/admin/users/{name}/keys": {
            "get": op("listAccessKeys", a, "List a user's S3 keys",
                      {200: envelope(array(ref("AccessKey")))}, errors=(403, 404),
                      params=(NAME,)),
            "post": op("createAccessKey", a, "Create or import an S3 key",
                       {201: envelope(ref("NewAccessKey"), "Created", message=True,
                                      Cache_Control=s())}, errors=(403, 404, 409),
                       params=(NAME,), body="CreateAccessKey", body_required=False)},
        "/v1/admin/keys/{access_key}": {
            "patch": op("updateAccessKey", a, "Enable or disable an S3 key",
                        {200: envelope(ref("AccessKeyState"))}, errors=(403, 404),
                        params=(param("path", "access_key", s()),), body="UpdateAccessKey")},
        "/v1/admin/groups": {
            "get": op("listGroups", a, "List groups", {200: envelope(array(ref("Group")))},
                      errors=(403,)),
            "post": op("createGroup", a, "Create a group",
                       {201: envelope(ref("Group"), "Created", message=True)},
                       errors=(403, 409), body="CreateGroup")},
        "/v1/admin/groups/{name}": {
            "delete": op("deleteGroup", a, "Delete a group",
                         {200: envelope(ref("GroupDeleted"), message=True)}, errors=(403, 404),
                         params=(GROUP,))},
        "/v1/admin/groups/{name}/members/{user}": {
            "put": op("addGroupMember", a, "Add a member", {200: envelope(ref("Group"))},
                      errors=(403, 404), params=(GROUP, param("path", "user", s()))),
            "delete": op("removeGroupMember", a, "Remove a member",
                         {200: envelope(ref("Group"))}, errors=(403, 404),
                         params=(GROUP, param("path", "user", s())))},
        "/v1/admin/buckets/{bucket}/grants": {
            "get": op("listGrants", a, "List a bucket's grants",
                      {200: envelope(array(ref("Grant")))}, errors=grants_errors,
                      params=(BUCKET,),
                      description="Admins, the bucket's owner and holders of a full grant."),
            "put": op("putGrant", a, "Grant a user or group access to a bucket",
                      {200: envelope(ref("GrantSaved"), message=True)}, errors=grants_errors,
                      params=(BUCKET,), body="PutGrant"),
            "delete": op("deleteGrant", a, "Revoke a grant",
                         {200: envelope(ref("GrantRevoked"), message=True)},
                         errors=grants_errors, body="Grantee", body_required=False,
                         params=(BUCKET, param("query", "grantee_type", ref("GranteeType")),
                                 param("query", "grantee", s())))},
        "/v1/admin/quotas": {
            "get": op("listQuotas", "quotas", "Every bucket's quota and usage",
                      {200: envelope(ref("QuotaPage"))}, errors=(400, 403), params=(
                          param("query", "limit", {"type": "integer", "minimum": 1,
                                                   "default": 20},
                                "Values above 100 count as 100"),
                          param("query", "offset", {**COUNT, "default": 0})))},
        "/v1/admin/buckets/{bucket}/quota": {
            "get": op("getQuota", "quotas", "A bucket's quota and usage",
                      {200: envelope(ref("QuotaUsage"))}, errors=(403, 404),
                      params=(BUCKET,),
                      description="Admins, and whoever may read the bucket."),
            "put": op("putQuota", "quotas", "Set a bucket's limits",
                      {200: envelope(ref("QuotaUsage"), message=True)}, errors=(403, 404),
                      params=(BUCKET,), body="PutQuota")},
        "/v1/admin/usage": {
            "get": op("usageByUser", "quotas", "Storage used per user",
                      {200: envelope(ref("UsageReport"))}, errors=(403,))},
    }


def feed_paths() -> dict[str, Schema]:
    """The change feed and object search: below ``/v1/storage``, so flat errors."""
    return {
        "/v1/storage/changes": {
            "get": op("listChanges", "change feed", "Changes to objects, in commit order",
                      {200: json_answer(ref("ChangePage"))}, errors=_STORAGE_READ,
                      style=STORAGE, params=(
                          param("query", "bucket", s(), "Required, except for "
                                "administrators (then: every bucket)", example="mybot.gbai"),
                          param("query", "prefix", s(), "Only keys that start with it",
                                example="docs/"),
                          param("query", "since", s(), (
                              "A cursor from an earlier answer: the changes after it; "
                              "\"now\": from the head of the log on; absent: from the oldest "
                              "change kept")),
                          param("query", "limit", {"type": "integer", "minimum": 1,
                                                   "default": 100},
                                "Values above 1000 count as 1000"),
                          param("query", "wait", {**COUNT, "default": 0},
                                f"Seconds to hold the request while nothing is new (long "
                                f"polling); values above {MAX_WAIT} count as {MAX_WAIT}")),
                      description="Whoever may read the bucket. The answer's cursor resumes "
                                  "after its last change, or at the head of the log when "
                                  "the page is not full.")},
        "/v1/storage/buckets/{bucket}/search": {
            "get": op("searchObjects", "search", "Search a bucket's objects",
                      {200: envelope(ref("SearchPage"))}, errors=_STORAGE_READ,
                      style=STORAGE, params=(BUCKET, *_keyset_params(OBJECTS, {
                          "fieldPath": "key", "predicate": "starts_with", "value": "docs/"})),
                      description="Whoever may list the bucket: its latest, live objects. "
                                  "The answer is the envelope; errors are flat, as everywhere "
                                  "below /v1/storage.")},
    }


def _keyset_params(entity: Entity, where: dict[str, Any]) -> tuple[Schema, ...]:
    """The pagination reference's keyset parameters over ``entity``'s fieldPaths
    (:mod:`gateway.service.query`); ``where``: an example condition."""
    fields = sorted(entity.fields) + (["metadata.<name>"] if entity.dynamic else [])
    sortable = sorted(name for name, f in entity.fields.items() if f.sortable)
    first = entity.default_order[0].field

    def compact(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    return (
        param("query", "where", s(), (
            f"JSON (URI-encoded): a condition, a leaf {{fieldPath, predicate, value}} "
            f"({', '.join(LEAF_PREDICATES)}) or a branch {{predicate, operands}} "
            f"({', '.join(BRANCH_PREDICATES)}). fieldPaths: {', '.join(fields)}"),
              example=compact(where)),
        param("query", "order_by", s(), (
            "JSON (URI-encoded): {fieldPath, direction: ASC|DESC} or a list of them "
            f"(default: {first}; ties broken by {entity.tiebreak}). Sortable: "
            f"{', '.join(sortable)}"),
              example=compact([{"fieldPath": first, "direction": "DESC"}])),
        param("query", "cursor", s(), (
            f"JSON (URI-encoded): {{first|last: 1 to {MAX_PAGE} (default {DEFAULT_PAGE}), "
            "after|before: a cursor from pageInfo}; a cursor holds only for the order it "
            "was made with"), example=compact({"first": 10})),
        param("query", "total", {**BOOL, "default": False},
              "Count the matches (pageInfo.total)"))


def _list_params(sortable: tuple[str, ...], default: str, filterable: tuple[str, ...],
                 keyset: tuple[Entity, dict[str, Any]] | None = None) -> tuple[Schema, ...]:
    """The overview's list parameters (:mod:`gateway.api.pagination`); ``keyset``: the
    list also answers keyset pages over this entity (with this example condition)."""
    apart = " Not with cursor, where, order_by or total (400)." if keyset else ""
    offset = (
        param("query", "limit", {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT},
              f"Values above {MAX_LIMIT} count as {MAX_LIMIT}.{apart}"),
        param("query", "offset", {**COUNT, "default": 0}, apart.strip() or None),
        param("query", "sort", s(enum=sorted(sortable), default=default)),
        param("query", "order", s("Case-insensitive", enum=["asc", "desc"], default="asc")),
        param("query", "filter", obj({name: s() for name in filterable}, *filterable),
              "filter[<field>]=<value>: an exact match; several combine with AND; other "
              "fields are a 400", style="deepObject", explode=True))
    return offset + (_keyset_params(*keyset) if keyset else ())


_TWO_WAYS = ("An offset page (limit, offset, sort, order, filter[…]), or, when any of cursor, "
             "where, order_by or total is given, a keyset page: the two do not mix (400).")


def bot_paths() -> dict[str, Schema]:
    """The bot platform (:mod:`gateway.api.bots`, :mod:`gateway.api.bot_package`)."""
    customer_id = param("path", "customer_id", s(), "The customer's id (a UUID)")
    bot_id = param("path", "bot_id", s(), "The bot's id (a UUID)")
    user_id = param("path", "user_id", s(), "The chat user's id (a UUID)")
    conversation = param("path", "conversation", s(pattern="^[a-z0-9]{12}$"),
                         "The conversation's id (its token)")
    of_bot = param("query", "botId", s(minLength=1), "The bot the users are of",
                   required=True)
    owner_check = param("query", "customerId", s(),
                        "When given, it must be the bot owner's (400 otherwise)")
    secrets_inside = {"allOf": [ref("Bot"), ref("BotSecrets")]}
    no_store = s("no-store: the answer holds a secret", enum=["no-store"])
    package_types = {"application/x-tar": {"schema": BINARY},
                     "application/gzip": {"schema": BINARY}}
    package_description = (
        "The bot's owner, its admins and administrators; bots:read. In key order; content "
        "types, metadata and headers in PAX records.")
    package_params = (bot_id, param("query", "format", s(enum=["tar", "tar.gz"],
                                                          default="tar")))
    package_headers = {"Content_Disposition": s(example='attachment; filename="mybot.gbai.tar"')}
    created = {"allOf": [secrets_inside, {"required": ["secret"]}]}
    c, b, u, v, t = ("customers", "bots", "bot users", "conversations",
                     "bot administration")
    return {
        "/v1/customers": {
            "post": op("createCustomer", c, "The caller's customer, created when missing",
                       {200: envelope(ref("Customer"), "It exists (the body is ignored)",
                                      message=True),
                        201: envelope(ref("Customer"), "Created", message=True)},
                       errors=(403,), body="CustomerFields", body_required=False,
                       description="Created from the body and the user's profile (name, "
                                   "email); bots:write.")},
        "/v1/customers/{customer_id}": {
            "get": op("getCustomer", c, "A customer", {200: envelope(ref("Customer"))},
                      errors=(403, 404), params=(customer_id,),
                      description="Its own user and administrators (403 for others)."),
            "put": op("updateCustomer", c, "Change a customer",
                      {200: envelope(ref("Customer"), message=True)},
                      errors=(403, 404), params=(customer_id,), body="CustomerFields")},
        "/v1/bots": {
            "post": op("createBot", b, "Create a bot and its package bucket",
                       {201: envelope(created, "Created", message=True, Cache_Control=no_store)},
                       errors=(403, 404, 409, 507), body="CreateBot",
                       description="Makes the bucket <name>.gbai (owned by the customer's "
                                   "user) with the package layout, then the bot; the webhook "
                                   "secret (and an S3 key when asked for) is shown this "
                                   "once. 404: no such customerId; 409: the name or bucket "
                                   "is taken."),
            "get": op("listBots", b, "The bots the caller owns or administers",
                      {200: page_of(ref("Bot"), keyset=True)}, errors=(400, 403),
                      params=_list_params(("id", "name", "createdAt", "state", "customerId"),
                                          "createdAt", ("id", "name", "state", "customerId",
                                                        "bucket", "url"),
                                          (BOTS, {"fieldPath": "state", "predicate": "eq",
                                                  "value": "enabled"})),
                      description="Administrators: every bot. " + _TWO_WAYS)},
        "/v1/bots/{bot_id}": {
            "get": op("getBot", b, "A bot", {200: envelope(ref("Bot"))},
                      errors=(400, 403, 404), params=(bot_id, owner_check),
                      description="Its owner, its admins and administrators."),
            "put": op("updateBot", b, "Change a bot, join it, or renew its secrets",
                      {200: may_send(envelope(secrets_inside, message=True),
                                     Cache_Control=no_store)},
                      errors=(403, 404), params=(bot_id,), body="UpdateBot",
                      description="Its owner, its admins and administrators; anyone with "
                                  "its invite code may join (admins: \"me\"). secret and "
                                  "s3Key appear only when renewed or minted."),
            "delete": op("deleteBot", b, "Delete a bot (its package bucket remains)",
                         {200: envelope(ref("BotDeleted"), message=True)},
                         errors=(403, 404), params=(bot_id,),
                         description="Its owner and administrators.")},
        "/v1/bots/{bot_id}/package": {
            "get": op("exportPackage", b, "The bot's package as a tar (or tar.gz)",
                      {200: {"description": "The archive, streamed",
                             "headers": _headers(**package_headers),
                             "content": package_types}},
                      errors=(400, 403, 404), params=package_params,
                      description=package_description),
            "head": op("headPackage", b, "The export's headers",
                       {200: {"description": "The archive's headers (no body)",
                              "headers": _headers(**package_headers)}},
                       errors=(400, 403, 404), style=HEAD, params=package_params),
            "post": {**op("importPackage", b, "Replace or merge the package from an archive",
                          {200: envelope(ref("PackageImported"), message=True)},
                          errors=(400, 403, 404, 409, 413, 415, 422, 507), params=(
                              bot_id, param("query", "mode", s(
                                  "replace: remove the keys the archive lacks; merge: keep "
                                  "them", enum=list(MODES), default="replace"))),
                          description="All or nothing: every member passes the package "
                                      "rules an upload would (415, 422), then the package "
                                      "changes in one transaction. Tar or tar.gz, told "
                                      "apart by the first bytes (the Content-Type is not "
                                      "looked at). The owner, its admins and "
                                      "administrators; bots:write and storage:write."),
                     "requestBody": {"required": True, "content": {
                         **package_types, "application/octet-stream": {"schema": BINARY}}}}},
        "/v1/users": {
            "post": op("createBotUser", u, "Add a chat user to a bot",
                       {200: envelope(ref("BotUser"), "One with this externalId exists",
                                      message=True),
                        201: envelope(ref("BotUser"), "Created", message=True)},
                       errors=(403, 404), body="CreateBotUser"),
            "get": op("listBotUsers", u, "A bot's chat users",
                      {200: page_of(ref("BotUser"), keyset=True)},
                      errors=(400, 403, 404), params=(
                          of_bot, owner_check,
                          param("query", "botStatus", s(enum=list(BOT_STATUSES)),
                                "= filter[botStatus]"),
                          param("query", "externalId", s(), "= filter[externalId]"),
                          param("query", "facebookId", s(), "= filter[externalId]"),
                          *_list_params(("id", "createdAt", "externalId", "botStatus"),
                                        "createdAt",
                                        ("id", "externalId", "botStatus", "customerId"),
                                        (BOT_USERS, {"fieldPath": "botStatus",
                                                     "predicate": "eq", "value": "active"}))),
                      description=_TWO_WAYS + " botStatus, externalId and facebookId are "
                                              "offset filters too."),
            "put": op("updateBotUsers", u, "Change several of a bot's users at once",
                      {200: envelope(array(ref("BotUser")), message=True)},
                      errors=(403, 404), body="UpdateBotUsers",
                      description="404 names the ids that are not the bot's users.")},
        "/v1/users/{user_id}": {
            "get": op("getBotUser", u, "A bot's chat user", {200: envelope(ref("BotUser"))},
                      errors=(400, 403, 404), params=(user_id, of_bot, owner_check)),
            "put": op("updateBotUser", u, "Change a bot's chat user",
                      {200: envelope(ref("BotUser"), message=True)},
                      errors=(403, 404), params=(user_id,), body="UpdateBotUser")},
        "/v1/conversations": {
            "post": op("createConversation", v, "Start a conversation (the caller owns it)",
                       {201: envelope(ref("Conversation"), "Created", message=True)},
                       errors=(403,), body="CreateConversation"),
            "get": op("listConversations", v, "The conversations the caller takes part in",
                      {200: page_of(ref("Conversation"), keyset=True)}, errors=(400, 403),
                      params=_list_params(("id", "name", "createdAt", "role", "owner"),
                                          "createdAt", ("id", "name", "role", "owner"),
                                          (CONVERSATIONS, {
                                              "fieldPath": "role", "predicate": "in",
                                              "value": ["owner", "moderator"]})),
                      description=_TWO_WAYS)},
        "/v1/conversations/{conversation}": {
            "get": op("getConversation", v, "A conversation",
                      {200: envelope(ref("Conversation"))}, errors=(403, 404),
                      params=(conversation,),
                      description="404 unless the caller takes part in it.")},
        "/v1/conversations/{conversation}/participants": {
            "post": op("addParticipant", v, "Add a participant, or change their role",
                       {200: envelope(ref("Conversation"), "The role changed", message=True),
                        201: envelope(ref("Conversation"), "Added", message=True)},
                       errors=(403, 404), params=(conversation,), body="NewParticipant",
                       description="The owner and moderators.")},
        "/v1/conversations/{conversation}/participants/{user}": {
            "delete": op("removeParticipant", v, "Remove a participant, or leave",
                         {200: envelope(nullable({**ref("Conversation"),
                                                  "description": "null: the caller left"}),
                                        message=True)},
                         errors=(400, 403, 404), params=(
                             conversation, param("path", "user", s(), "A user name")),
                         description="The owner and moderators remove others; anyone may "
                                     "leave; the owner stays (400).")},
        "/v1/bot/admin": {
            "get": op("listAllBots", t, "Every bot, with its webhook health",
                      {200: page_of(ref("TalkBot"), keyset=True)}, errors=(400, 403),
                      params=_list_params(("id", "name", "state", "error_count"), "name",
                                          ("id", "name", "state", "url_hash"),
                                          (ADMIN_BOTS, {"fieldPath": "error_count",
                                                        "predicate": "gt", "value": 0})),
                      description="Administrators. " + _TWO_WAYS)},
        "/v1/bot/{conversation}": {
            "get": op("listConversationBots", t, "The bots a conversation may enable",
                      {200: page_of(ref("ConversationBot"))}, errors=(400, 403, 404),
                      params=(conversation, *_list_params(("id", "name", "state"), "name",
                                                          ("id", "name", "state"))),
                      description="Its owner and moderators: every bot but the no-setup "
                                  "ones, state 1 where enabled here.")},
        "/v1/bot/{conversation}/{bot_id}": {
            "post": op("enableBot", t, "Enable a bot in a conversation",
                       {200: envelope(ref("ConversationBot"), "It was enabled already",
                                      message=True),
                        201: envelope(ref("ConversationBot"), "Enabled", message=True)},
                       errors=(400, 403, 404), params=(conversation, bot_id),
                       description="The owner and moderators; the bot must be enabled on "
                                   "the server (400 otherwise, or for an unknown bot)."),
            "delete": op("disableBot", t, "Disable a bot in a conversation",
                         {200: envelope(ref("ConversationBot"), message=True)},
                         errors=(400, 403, 404), params=(conversation, bot_id))},
    }


def docs_paths() -> dict[str, Schema]:
    page = {"description": "OK", "headers": _headers(Cache_Control=s(), ETag=s())}
    same = {"description": "Not modified (If-None-Match)", "headers": _headers()}
    return {
        "/v1/openapi.json": {"get": op(
            "openapi", "docs", "This document",
            {200: {**page, "content": {"application/json": {"schema": {"type": "object"}}}},
             304: same},
            public=True)},
        "/docs": {"get": op("docs", "docs", "This documentation, as a web page",
                            {200: {**page, "content": {"text/html": {"schema": s()}}},
                             304: same},
                            public=True)},
        "/docs/{asset}": {"get": op(
            "docsAsset", "docs", "The docs page's scripts and styles",
            {200: {**page, "content": {"text/javascript": {"schema": s()},
                                       "text/css": {"schema": s()},
                                       "text/plain": {"schema": s()}}},
             304: same},
            errors=(404,), public=True,
            params=(param("path", "asset", s(enum=sorted(ASSETS))),))},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document of every route in ``gateway.api.ROUTE_MODULES``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gateway JSON API", "version": __version__,
            "description": (
                "The gateway's management API. Storage below /v1/storage answers errors in "
                "the Storage API reference's flat shape ({\"error\", \"message\", …}); "
                "every other endpoint uses the envelope {\"success\", \"data\"|\"error\"}. "
                "Every answer carries X-Request-Id. The S3 protocol itself is served at "
                "the server root and is not described here."),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": "/api"}],
        "security": [{"bearerAuth": []}, {"apiKey": []}],
        "tags": [{"name": n, "description": d} for n, d in (
            ("storage", "Buckets and objects (the Storage API reference)"),
            ("auth", "Login sessions"), ("tokens", "API tokens"),
            ("admin", "Users, S3 keys, groups and bucket grants"),
            ("quotas", "Bucket quotas and usage"),
            ("change feed", "Every object change, paged by cursor, with long polling"),
            ("search", "Object search (the query language of the pagination reference)"),
            ("customers", "The bot platform's customers: they own bots"),
            ("bots", "Bots, their package buckets, and packages as archives"),
            ("bot users", "A bot's chat users"),
            ("conversations", "Conversations and their participants"),
            ("bot administration", "Bots across the server and in conversations"),
            ("docs", "This documentation"))],
        "paths": {**storage_paths(), **feed_paths(), **account_paths(), **admin_paths(),
                  **bot_paths(), **docs_paths()},
        "components": {
            "schemas": SCHEMAS,
            "responses": _responses(),
            "headers": {
                "RequestId": {"description": "The request's id (also in error bodies)",
                              "required": True, "schema": s()},
                "XRateLimitLimit": {"description": "Requests allowed per hour",
                                    "schema": s()},
                "XRateLimitRemaining": {"description": "Requests left this hour",
                                        "schema": s()},
                "XRateLimitReset": {"description": "When the budget refills (epoch s)",
                                    "schema": s()}},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A login session token (POST /v1/auth/login) "
                                              "or an API token (gwt_…)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                           "description": "Base64 of an API token"}}},
    }


# -- serving -------------------------------------------------------------------------------

#: Packaged files the docs page uses: served name → (path below ``static/``, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css"),
    "docs.js": ("docs.js", "text/javascript"),
    "LICENSE": ("swagger-ui/LICENSE", "text/plain"),
    "NOTICE": ("swagger-ui/NOTICE", "text/plain"),
    "swagger-ui-bundle.js.LICENSE.txt": ("swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
                                         "text/plain"),
}
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@cache
def _asset(name: str) -> StaticFile:
    path, media_type = ASSETS[name]
    return packaged("gateway.api", "static/" + path, media_type)


@cache
def _page() -> StaticFile:
    html = resources.files("gateway.api").joinpath("static", "docs.html").read_text("utf-8")
    html = fill_versions(html, ((name, _asset(name)) for name in ASSETS))
    return static_file(html.encode(), "text/html; charset=utf-8")


@cache
def _openapi() -> StaticFile:
    return static_file(json.dumps(document(), separators=(",", ":")).encode(),
                       "application/json")


async def openapi_json(request: Request) -> Response:
    return serve(request, _openapi(), REVALIDATE)


async def docs_page(request: Request) -> Response:
    return serve(request, _page(), REVALIDATE,
                 {"Content-Security-Policy": _PAGE_CSP, "X-Frame-Options": "DENY",
                  "Referrer-Policy": "no-referrer"})


async def docs_asset(request: Request) -> Response:
    name: str = request.path_params["asset"]
    if name not in ASSETS:
        raise ApiError(404, "NOT_FOUND", f"No docs asset {name!r}")
    return serve(request, _asset(name), IMMUTABLE)


routes: list[BaseRoute] = [
    Route("/v1/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/{asset}", docs_asset, methods=["GET"]),
]
