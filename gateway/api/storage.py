"""The Storage API (``/api/v1/storage``), with the request and response shapes of the
Storage API reference.

Every operation calls the same service functions as the S3 handlers, with the caller's
principal, so tenant rules are identical. Object bodies stream both ways: an upload flows
from the socket through the digest into the backend; a download flows from the backend
reader to the socket.

Paths below ``/buckets/{bucket}/objects/`` hold a key that may contain ``/``. The rules:

- ``GET``/``HEAD``: the whole rest of the path is the key.
- ``POST``: a plain object takes no POST, so the last segment names the operation:
  ``{key}/copy``, ``{key}/presign``, ``{key}/multipart``,
  ``{key}/multipart/{uploadId}/complete``.
- ``PUT {key}/multipart/{uploadId}/{partNumber}`` and ``DELETE {key}/multipart/{uploadId}``
  are part uploads and aborts when ``uploadId`` has the shape of an upload id (64 URL-safe
  Base64 characters, as :meth:`MultipartService.create` makes them) and ``partNumber`` is a
  number. Such paths always mean the upload (404 when it does not exist): a part sent to an
  expired upload must not silently become an object. Keys of exactly that shape can be
  written through S3 only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.api.common import (
    gateway_of,
    get_caller,
    int_query,
    read_json,
    require,
    require_caller,
    set_resource,
)
from gateway.api.errors import ApiError, validation_error
from gateway.api.presign import MAX_PRESIGNED_EXPIRES, presign_url
from gateway.checksums import DigestingStream, checksum_request
from gateway.headers import (
    content_length,
    has_control_characters,
    object_attributes,
    object_headers,
    parse_range,
    read_conditions,
    write_conditions,
)
from gateway.metadata.models import NULL_VERSION
from gateway.service.listing import MAX_KEYS, decode_continuation, encode_continuation, list_keys
from gateway.service.multipart import MAX_LIST, MAX_PART_NUMBER, CompletedPart
from gateway.service.objects import ObjectRead
from gateway.types import ObjectAttributes, ObjectRecord

PREFIX = "/v1/storage"
_UPLOAD_ID = r"[A-Za-z0-9_-]{64}"
# DOTALL: a key may hold any character, line breaks included.
_PART_PATH = re.compile(rf"(?P<key>.+)/multipart/(?P<upload>{_UPLOAD_ID})/(?P<part>\d{{1,5}})",
                        re.DOTALL)
_UPLOAD_PATH = re.compile(rf"(?P<key>.+)/multipart/(?P<upload>{_UPLOAD_ID})", re.DOTALL)
_COMPLETE_PATH = re.compile(r"(?P<key>.+)/multipart/(?P<upload>[^/]+)/complete", re.DOTALL)
_PRESIGN_OPERATIONS = {"GET": False, "HEAD": False, "PUT": True, "DELETE": True}


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(request: Request, key: str) -> str:
    bucket: str = request.path_params["bucket"]
    set_resource(request, bucket, key or None)
    if not key:
        raise validation_error("An object key is required", field="key")
    return key


def _body_stream(request: Request) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    return chunks()


def _upload_body(request: Request, default_checksum: str | None = None
                 ) -> tuple[DigestingStream, int]:
    """The raw request body, digested (MD5 for the ETag; Content-MD5 and
    ``x-amz-checksum-*`` verified when sent) while it streams; Content-Length required."""
    size = content_length(request.headers)
    if size is None:
        raise errors.MissingContentLength()
    algorithm, expected, _trailer = checksum_request(request.headers)
    if default_checksum is not None and algorithm not in (None, default_checksum):
        raise errors.InvalidRequest(f"This upload uses the {default_checksum} checksum")
    return DigestingStream(_body_stream(request), expected_size=size,
                           content_md5=request.headers.get("content-md5"),
                           checksum_algorithm=algorithm or default_checksum,
                           expected_checksum=expected), size


def _str_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise validation_error(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise validation_error(f"{name} must be a string", field=name)
    return value


def _attributes(body: dict[str, Any]) -> ObjectAttributes | None:
    """``content_type`` and ``metadata`` from a JSON body; None when it names neither."""
    content_type = _str_field(body, "content_type")
    metadata = body.get("metadata")
    if content_type is None and metadata is None:
        return None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise validation_error("metadata must be an object of strings", field="metadata")
    headers = {f"x-amz-meta-{k.lower()}": v for k, v in metadata.items()}
    if content_type is not None:
        headers["content-type"] = content_type
    # Both become response headers: held to what S3 accepts in request headers, non-ASCII
    # metadata values stored RFC 2047-encoded (gateway.headers._text_fields).
    return object_attributes(headers, text=True)


# -- buckets ---------------------------------------------------------------------------------

async def list_buckets(request: Request) -> Response:
    caller = await require_caller(request, "storage:read")
    records = await gateway_of(request).buckets.list(caller.principal)
    return JSONResponse({"buckets": [
        {"name": b.name, "created": _iso(b.created_at), "size": b.used_bytes,
         "region": b.region} for b in records]})


async def create_bucket(request: Request) -> Response:
    caller = await require_caller(request, "storage:write")
    body = await read_json(request)
    name = _str_field(body, "name", required=True)
    assert name is not None
    set_resource(request, name)
    region = _str_field(body, "region")
    versioning = body.get("versioning", False)
    if not isinstance(versioning, bool):
        raise validation_error("versioning must be true or false", field="versioning")
    await gateway_of(request).buckets.create(caller.principal, name, region,
                                             versioning=versioning)
    return JSONResponse({"bucket": name, "created": True, "location": f"/{name}"},
                        status_code=201, headers={"Location": f"/{name}"})


async def delete_bucket(request: Request) -> Response:
    caller = await require_caller(request, "storage:write")
    name: str = request.path_params["bucket"]
    set_resource(request, name)
    await gateway_of(request).buckets.delete(caller.principal, name)
    return JSONResponse({"deleted": True, "bucket": name})


def _decode_token(token: str) -> str:
    try:
        return decode_continuation(token)
    except ValueError:
        raise validation_error("continuation_token is not valid",
                               field="continuation_token") from None


async def list_objects(request: Request) -> Response:
    caller = await require_caller(request, "storage:read")
    name: str = request.path_params["bucket"]
    set_resource(request, name)
    gw = gateway_of(request)
    q = request.query_params
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    max_keys = int_query(request, "max_keys", MAX_KEYS, minimum=0, maximum=MAX_KEYS)
    token = q.get("continuation_token") or None
    bucket = await gw.buckets.get(caller.principal, name)
    listing = await list_keys(gw.ctx, bucket, prefix=prefix, delimiter=delimiter,
                              after=_decode_token(token) if token else None,
                              max_keys=max_keys)
    out: dict[str, Any] = {"objects": [
        {"key": o.key, "size": o.size, "last_modified": _iso(o.last_modified),
         "etag": o.etag} for o in listing.objects]}
    if delimiter:
        out["common_prefixes"] = listing.common_prefixes
    out["is_truncated"] = listing.is_truncated
    out["continuation_token"] = (encode_continuation(listing.last)
                                 if listing.is_truncated and listing.last else None)
    return JSONResponse(out)


# -- objects ---------------------------------------------------------------------------------

def _read_headers(read: ObjectRead) -> dict[str, str]:
    rec = read.record
    headers = {
        "ETag": rec.quoted_etag,
        "Last-Modified": format_datetime(rec.last_modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    if rec.version_id != NULL_VERSION:
        headers["x-amz-version-id"] = rec.version_id
    headers.update(object_headers(rec, "application/octet-stream"))
    if read.byte_range is not None:
        r = read.byte_range
        headers["Content-Range"] = f"bytes {r.start}-{r.end - 1}/{rec.size}"
        headers["Content-Length"] = str(r.length)
    else:
        headers["Content-Length"] = str(rec.size)
    return headers


async def get_object(request: Request) -> Response:
    caller = await require_caller(request, "storage:read")
    key = _key(request, request.path_params["path"])
    head = request.method == "HEAD"
    read = await gateway_of(request).objects.open(
        caller.principal, request.path_params["bucket"], key,
        range_spec=parse_range(request.headers.get("range")),
        conditions=read_conditions(request.headers), head=head,
        version_id=request.query_params.get("version_id"))
    headers = _read_headers(read)
    status = 206 if read.byte_range is not None else 200
    if read.reader is None:
        return Response(status_code=status, headers=headers)
    return StreamingResponse(read.chunks(), status_code=status, headers=headers)


def _written(bucket: str, record: ObjectRecord) -> JSONResponse:
    version = None if record.version_id == NULL_VERSION else record.version_id
    return JSONResponse({"bucket": bucket, "key": record.key, "etag": record.etag,
                         "version_id": version}, headers={"ETag": record.quoted_etag})


async def put_object(request: Request) -> Response:
    caller = await require_caller(request, "storage:write")
    path: str = request.path_params["path"]
    part = _PART_PATH.fullmatch(path)
    if part is not None:
        return await _upload_part(request, part)
    key = _key(request, path)
    bucket: str = request.path_params["bucket"]
    attrs = object_attributes(request.headers)
    conditions = write_conditions(request.headers)
    body, size = _upload_body(request)
    record = await gateway_of(request).objects.put(caller.principal, bucket, key, body, attrs,
                                                   conditions=conditions, size_hint=size)
    return _written(bucket, record)


async def delete_object(request: Request) -> Response:
    caller = await require_caller(request, "storage:write")
    path: str = request.path_params["path"]
    bucket: str = request.path_params["bucket"]
    gw = gateway_of(request)
    upload = _UPLOAD_PATH.fullmatch(path)
    if upload is not None:
        key = _key(request, upload["key"])
        await gw.multipart.abort(caller.principal, bucket, key, upload["upload"])
        return JSONResponse({"aborted": True, "key": key, "upload_id": upload["upload"]})
    key = _key(request, path)
    outcome = await gw.objects.delete(caller.principal, bucket, key,
                                      request.query_params.get("version_id"))
    answer: dict[str, object] = {"deleted": True, "key": key}
    if outcome.result_version_id is not None:
        answer["version_id"] = outcome.result_version_id
        answer["delete_marker"] = outcome.delete_marker
    return JSONResponse(answer)


async def post_object(request: Request) -> Response:
    path: str = request.path_params["path"]
    complete = _COMPLETE_PATH.fullmatch(path)
    if complete is not None:
        return await _complete(request, _key(request, complete["key"]), complete["upload"])
    key, _, operation = path.rpartition("/")
    handler = _POST_OPERATIONS.get(operation)
    if handler is None:
        set_resource(request, request.path_params["bucket"], path)
        raise ApiError(404, "NOT_FOUND", "POST on an object takes one of /copy, /presign, "
                       "/multipart or /multipart/{uploadId}/complete")
    return await handler(request, _key(request, key))


async def _copy(request: Request, key: str) -> Response:
    """The path names the source; the body's ``source_bucket``/``source_key`` override it.
    ``destination_key`` is required; ``destination_bucket`` defaults to the source bucket.
    The copy keeps the source's content type and metadata unless the body gives
    ``content_type`` or ``metadata`` (then those replace them)."""
    caller = await require_caller(request, "storage:write")
    body = await read_json(request, allow_empty=True)
    src_bucket = _str_field(body, "source_bucket") or request.path_params["bucket"]
    src_key = _str_field(body, "source_key") or key
    dst_bucket = _str_field(body, "destination_bucket") or src_bucket
    dst_key = _str_field(body, "destination_key", required=True)
    assert dst_key is not None
    set_resource(request, src_bucket, src_key)
    attrs = _attributes(body)
    record = await gateway_of(request).objects.copy(
        caller.principal, src_bucket, src_key, None, dst_bucket, dst_key,
        replace_metadata=attrs is not None, attrs=attrs or ObjectAttributes())
    return JSONResponse({"copied": True, "source": f"{src_bucket}/{src_key}",
                         "destination": f"{dst_bucket}/{dst_key}", "etag": record.etag})


def _presign_operation(body: dict[str, Any]) -> str:
    """``operation`` (the reference's name) or ``method`` (the answer's), GET by default."""
    operation, method = body.get("operation"), body.get("method")
    for name, value in (("operation", operation), ("method", method)):
        if value is not None and not isinstance(value, str):
            raise validation_error(f"{name} must be a string", field=name)
    if operation and method and str(operation).upper() != str(method).upper():
        raise validation_error("operation and method differ; send one of them",
                               field="operation")
    chosen = str(operation or method or "GET").upper()
    if chosen not in _PRESIGN_OPERATIONS:
        raise validation_error(f"operation is one of {', '.join(_PRESIGN_OPERATIONS)}",
                               field="operation")
    return chosen


def _presign_part(body: dict[str, Any], operation: str) -> tuple[str, int] | None:
    """``upload_id`` and ``part_number`` of an UploadPart to presign; None for a plain
    object operation. Both or neither: half of a part address would sign a plain PUT that
    silently replaces the object instead of adding to the upload."""
    upload_id, number = body.get("upload_id"), body.get("part_number")
    if upload_id in (None, "") and number is None:
        return None
    if operation != "PUT":
        raise validation_error("upload_id and part_number presign a part upload: "
                               "operation PUT", field="operation")
    if not isinstance(upload_id, str) or not upload_id:
        raise validation_error("upload_id is required with part_number", field="upload_id")
    if isinstance(number, bool) or not isinstance(number, int) \
            or not 1 <= number <= MAX_PART_NUMBER:
        raise validation_error(f"part_number is 1 to {MAX_PART_NUMBER}", field="part_number")
    if body.get("content_type") not in (None, ""):
        raise validation_error("A part takes no content_type: the upload's is set when it "
                               "is initiated", field="content_type")
    return upload_id, number


async def _presign(request: Request, key: str) -> Response:
    """A SigV4 presigned S3 URL signed with one of the caller's enabled S3 keys; the caller
    must be allowed the operation now. ``content_type`` binds a PUT to that Content-Type
    (the client must send it) and sets a GET's response Content-Type.

    With ``upload_id`` and ``part_number`` (operation PUT), the URL is an UploadPart of that
    multipart upload: ``partNumber`` and ``uploadId`` are signed query parameters, and the
    upload must exist for this bucket and key, checked as the part endpoint checks it, so a
    URL is never handed out for someone else's upload."""
    caller = await get_caller(request)
    body = await read_json(request, allow_empty=True)
    operation = _presign_operation(body)
    write = _PRESIGN_OPERATIONS[operation]
    expires_in = body.get("expires_in", 3600)
    if (isinstance(expires_in, bool) or not isinstance(expires_in, int)
            or not 1 <= expires_in <= MAX_PRESIGNED_EXPIRES):
        raise validation_error(f"expires_in is 1 to {MAX_PRESIGNED_EXPIRES} seconds (7 days)",
                               field="expires_in")
    content_type = _str_field(body, "content_type")
    if content_type is not None and (has_control_characters(content_type)
                                     or not content_type.isascii()):
        raise validation_error("content_type must be US-ASCII text without control "
                               "characters", field="content_type")
    part = _presign_part(body, operation)
    require(caller, "storage:write" if write else "storage:read")
    gw = gateway_of(request)
    bucket: str = request.path_params["bucket"]
    params: dict[str, str] = {}
    if part is not None:
        upload = await gw.multipart.get_upload(caller.principal, bucket, key, part[0])
        params = {"partNumber": str(part[1]), "uploadId": upload.id}
    else:
        await gw.objects.bucket(caller.principal, bucket, write=write)
    creds = await gw.accounts.signing_credentials(caller.principal.user_id)
    if creds is None:
        raise ApiError(409, "CONFLICT", "You have no enabled S3 access key to sign the URL "
                       "with; create one first (gateway key create --user NAME)")
    headers: dict[str, str] = {}
    if content_type and operation == "PUT":
        headers["Content-Type"] = content_type
    elif content_type and operation == "GET":
        params["response-content-type"] = content_type
    url, expires_at = presign_url(
        method=operation, scheme=request.url.scheme,
        host=request.headers.get("host") or request.url.netloc, bucket=bucket, key=key,
        access_key=creds[0], secret_key=creds[1], region=gw.settings.region,
        expires_in=expires_in, headers=headers, params=params)
    return JSONResponse({"url": url, "expires_at": _iso(expires_at), "method": operation,
                         "headers": headers})


async def _initiate(request: Request, key: str) -> Response:
    """Optional JSON body: ``content_type`` and ``metadata`` of the object to be."""
    caller = await require_caller(request, "storage:write")
    body = await read_json(request, allow_empty=True)
    bucket: str = request.path_params["bucket"]
    upload = await gateway_of(request).multipart.create(
        caller.principal, bucket, key, _attributes(body) or ObjectAttributes())
    return JSONResponse({"upload_id": upload.id, "bucket": bucket, "key": key})


async def _upload_part(request: Request, match: re.Match[str]) -> Response:
    caller = await require_caller(request, "storage:write")
    key = _key(request, match["key"])
    gw = gateway_of(request)
    upload = await gw.multipart.get_upload(caller.principal, request.path_params["bucket"],
                                           key, match["upload"])
    number = int(match["part"])
    body, size = _upload_body(request, default_checksum=upload.checksum_algorithm)
    part = await gw.multipart.upload_part(upload, number, body, size_hint=size)
    return JSONResponse({"part_number": number, "etag": part.etag},
                        headers={"ETag": f'"{part.etag}"'})


def _requested_parts(body: dict[str, Any]) -> list[CompletedPart] | None:
    parts = body.get("parts")
    if parts is None:
        return None
    if not isinstance(parts, list):
        raise validation_error("parts must be a list", field="parts")
    out: list[CompletedPart] = []
    for item in parts:
        number = item.get("part_number") if isinstance(item, dict) else None
        etag = item.get("etag") if isinstance(item, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) \
                or not isinstance(etag, str):
            raise validation_error("each part is {\"part_number\": int, \"etag\": str}",
                                   field="parts")
        if not 1 <= number <= MAX_PART_NUMBER:
            raise validation_error(f"part_number is 1 to {MAX_PART_NUMBER}", field="parts")
        out.append(CompletedPart(number, etag.strip().strip('"')))
    return out or None


async def _complete(request: Request, key: str, upload_id: str) -> Response:
    """Without ``parts`` (or with an empty body), every uploaded part, in order."""
    caller = await require_caller(request, "storage:write")
    body = await read_json(request, allow_empty=True)
    bucket: str = request.path_params["bucket"]
    gw = gateway_of(request)
    parts = _requested_parts(body)
    if parts is None:
        parts, marker = [], 0
        while True:
            listing = await gw.multipart.list_parts(caller.principal, bucket, key, upload_id,
                                                    max_parts=MAX_LIST, marker=marker)
            parts += [CompletedPart(p.part_number, p.etag) for p in listing.parts]
            if not listing.is_truncated or listing.next_marker is None:
                break
            marker = listing.next_marker
    record = await gw.multipart.complete(caller.principal, bucket, key, upload_id, parts)
    return _written(bucket, record)


_POST_OPERATIONS = {"copy": _copy, "presign": _presign, "multipart": _initiate}


class KeyPathConvertor(Convertor[str]):
    """The rest of the path, whatever it holds: Starlette's ``path`` convertor (``.*``)
    stops at a line feed, which S3 keys may contain."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("keypath", KeyPathConvertor())

_OBJECT = PREFIX + "/buckets/{bucket}/objects/{path:keypath}"
routes: list[BaseRoute] = [
    Route(PREFIX + "/buckets", list_buckets, methods=["GET"]),
    Route(PREFIX + "/buckets", create_bucket, methods=["POST"]),
    Route(PREFIX + "/buckets/{bucket}", delete_bucket, methods=["DELETE"]),
    Route(PREFIX + "/buckets/{bucket}/objects", list_objects, methods=["GET"]),
    Route(_OBJECT, get_object, methods=["GET", "HEAD"]),
    Route(_OBJECT, put_object, methods=["PUT"]),
    Route(_OBJECT, delete_object, methods=["DELETE"]),
    Route(_OBJECT, post_object, methods=["POST"]),
]
