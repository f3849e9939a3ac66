"""PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from starlette.responses import Response, StreamingResponse

from gateway import errors
from gateway.checksums import checksum_request
from gateway.headers import (
    has_control_characters,
    header_value,
    metadata_directive,
    object_attributes,
    object_headers,
    parse_copy_source,
    parse_range,
    read_conditions,
    write_conditions,
)
from gateway.metadata.models import NULL_VERSION
from gateway.s3.handlers.common import http_date, xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import children, el, iso8601, local, parse
from gateway.service.encryption import (
    H_SSE,
    customer_key_from_headers,
    response_headers,
    write_encryption_from_headers,
)
from gateway.service.objects import ObjectRead
from gateway.service.tagging import parse_tagging_header, tagging_directive
from gateway.types import ObjectRecord

#: Bodies up to this size are read whole and sent in one message: fewer ASGI round trips.
SMALL_BODY = 256 * 1024
MAX_DELETE_KEYS = 1000

_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def checksum_type(value: str) -> str:
    """A multipart COMPOSITE checksum carries its part count: ``<base64>-<N>``."""
    return "COMPOSITE" if "-" in value else "FULL_OBJECT"


def _checksum_headers(record: ObjectRecord) -> dict[str, str]:
    if not record.checksum_algorithm or not record.checksum_value:
        return {}
    return {f"x-amz-checksum-{record.checksum_algorithm.lower()}": record.checksum_value,
            "x-amz-checksum-type": checksum_type(record.checksum_value)}


def version_header(record: ObjectRecord) -> dict[str, str]:
    """``x-amz-version-id`` for a version a versioning bucket made (the ``null`` version of
    a never-versioned bucket goes without)."""
    if record.version_id == NULL_VERSION:
        return {}
    return {"x-amz-version-id": record.version_id}


def _write_headers(record: ObjectRecord) -> dict[str, str]:
    headers = {"ETag": record.quoted_etag}
    headers.update(_checksum_headers(record))
    headers.update(version_header(record))
    headers.update(response_headers(record.encryption))
    return headers


async def put_object(req: S3Request) -> Response:
    attrs = dataclasses.replace(object_attributes(req.headers),
                                tags=parse_tagging_header(req.headers.get("x-amz-tagging")))
    conditions = write_conditions(req.headers)
    encryption = write_encryption_from_headers(req.headers)
    body, size = req.body()
    record = await req.gateway.objects.put(req.principal, req.bucket, req.key, body, attrs,
                                           conditions=conditions, size_hint=size,
                                           encryption=encryption)
    return Response(status_code=200, headers=_write_headers(record))


def _read_headers(req: S3Request, read: ObjectRead) -> dict[str, str]:
    rec = read.record
    headers = {
        "ETag": rec.quoted_etag,
        "Last-Modified": http_date(rec.last_modified),
        "Accept-Ranges": "bytes",
    }
    headers.update(version_header(rec))
    headers.update(object_headers(rec, "binary/octet-stream"))
    if rec.storage_class != "STANDARD":
        headers["x-amz-storage-class"] = rec.storage_class
    if rec.tags:
        headers["x-amz-tagging-count"] = str(len(rec.tags))
    headers.update(response_headers(rec.encryption))
    if rec.parts_count and "partNumber" in req.query:
        headers["x-amz-mp-parts-count"] = str(rec.parts_count)
    if (read.byte_range is None and req.headers.get("x-amz-checksum-mode", "").upper()
            == "ENABLED"):
        headers.update(_checksum_headers(rec))
    for param, header in _OVERRIDES.items():
        if param in req.query:
            value = req.query[param]
            if has_control_characters(value):
                raise errors.InvalidArgument(f"{param} must not contain control characters",
                                             name=param)
            headers[header] = header_value(value)
    if read.byte_range is not None:
        r = read.byte_range
        headers["Content-Range"] = f"bytes {r.start}-{r.end - 1}/{rec.size}"
        headers["Content-Length"] = str(r.length)
    elif read.empty_part:
        headers["Content-Length"] = "0"
    else:
        headers["Content-Length"] = str(rec.size)
    return headers


def int_param(req: S3Request, name: str, default: int | None = None) -> int | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidArgument(f"{name} must be an integer", name=name,
                                     value=raw) from None


async def _open(req: S3Request, *, head: bool) -> ObjectRead:
    part_number = int_param(req, "partNumber")
    if part_number is not None and not 1 <= part_number <= 10_000:
        raise errors.InvalidArgument("Part number must be an integer between 1 and 10000, "
                                     "inclusive", name="partNumber", value=str(part_number))
    if H_SSE in req.headers:  # a read names no encryption: the object's is known (as S3)
        raise errors.InvalidArgument(
            "x-amz-server-side-encryption header is not supported for this operation.",
            name=H_SSE, value=req.headers[H_SSE])
    customer = customer_key_from_headers(req.headers)
    return await req.gateway.objects.open(
        req.principal, req.bucket, req.key,
        version_id=req.query.get("versionId"),
        range_spec=parse_range(req.headers.get("range")),
        conditions=read_conditions(req.headers),
        head=head,
        part_number=part_number,
        customer=customer,
    )


def _status(read: ObjectRead) -> int:
    return 206 if read.byte_range is not None or read.empty_part else 200


async def head_object(req: S3Request) -> Response:
    read = await _open(req, head=True)
    status = _status(read)
    return Response(status_code=status, headers=_read_headers(req, read))


async def get_object(req: S3Request) -> Response:
    read = await _open(req, head=False)
    headers = _read_headers(req, read)
    status = _status(read)
    if read.reader is None:
        return Response(b"", status_code=status, headers=headers)
    reader = read.reader
    if reader.content_length <= SMALL_BODY:
        try:
            data = b"".join([chunk async for chunk in reader])
        finally:
            await reader.aclose()
        return Response(data, status_code=status, headers=headers)
    return StreamingResponse(read.chunks(), status_code=status, headers=headers)


async def delete_object(req: S3Request) -> Response:
    outcome = await req.gateway.objects.delete(req.principal, req.bucket, req.key,
                                               req.query.get("versionId"))
    headers = {}
    if outcome.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    if outcome.result_version_id is not None:
        headers["x-amz-version-id"] = outcome.result_version_id
    return Response(status_code=204, headers=headers)


async def delete_objects(req: S3Request) -> Response:
    body = await req.small_body()
    md5 = req.headers.get("content-md5")
    if md5 is None and checksum_request(req.headers)[0] is None:
        raise errors.InvalidRequest("Missing required header for this request: Content-MD5")
    if md5 is not None and base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
        raise errors.BadDigest()
    root = parse(body)
    if local(root.tag) != "Delete":
        raise errors.MalformedXML()
    quiet = (next((c.text for c in root if local(c.tag) == "Quiet"), "") or "").strip() == "true"
    items: list[tuple[str, str | None]] = []
    for node in children(root, "Object"):
        key = next((c.text for c in node if local(c.tag) == "Key"), None)
        version = next((c.text for c in node if local(c.tag) == "VersionId"), None)
        if not key:
            raise errors.MalformedXML()
        items.append((key, version))
    if not items or len(items) > MAX_DELETE_KEYS:
        raise errors.MalformedXML()
    outcomes = await req.gateway.objects.delete_many(req.principal, req.bucket, items)
    out: list[str] = []
    for o in outcomes:
        if o.error is not None:
            out.append("<Error>" + el("Key", o.key) + el("VersionId", o.version_id)
                       + el("Code", o.error.code) + el("Message", o.error.message) + "</Error>")
        elif not quiet:
            deleted = [el("Key", o.key), el("VersionId", o.version_id)]
            if o.delete_marker:
                deleted.append(el("DeleteMarker", True))
                deleted.append(el("DeleteMarkerVersionId", o.result_version_id))
            out.append("<Deleted>" + "".join(deleted) + "</Deleted>")
    return xml_response("DeleteResult", out)


async def copy_object(req: S3Request) -> Response:
    src_bucket, src_key, src_version = parse_copy_source(req.headers["x-amz-copy-source"])
    replace = metadata_directive(req.headers) == "REPLACE"
    replace_tags = tagging_directive(req.headers.get("x-amz-tagging-directive")) == "REPLACE"
    attrs = object_attributes(req.headers)
    if replace_tags:
        attrs = dataclasses.replace(
            attrs, tags=parse_tagging_header(req.headers.get("x-amz-tagging")))
    encryption = write_encryption_from_headers(req.headers)
    source_customer = customer_key_from_headers(req.headers, copy_source=True)
    async for chunk in req.request.stream():
        if chunk:
            raise errors.UnexpectedContent()  # a copy carries no body
    record = await req.gateway.objects.copy(
        req.principal, src_bucket, src_key, src_version, req.bucket, req.key,
        replace_metadata=replace, attrs=attrs, replace_tags=replace_tags,
        source_conditions=read_conditions(req.headers, prefix="x-amz-copy-source-"),
        conditions=write_conditions(req.headers),
        source_customer=source_customer, encryption=encryption,
    )
    result = [el("ETag", record.quoted_etag), el("LastModified", iso8601(record.last_modified))]
    if record.checksum_algorithm and record.checksum_value:
        result.append(el(f"Checksum{record.checksum_algorithm}", record.checksum_value))
    headers = version_header(record)
    headers.update(response_headers(record.encryption))
    if src_version is not None:
        headers["x-amz-copy-source-version-id"] = src_version
    return xml_response("CopyObjectResult", result, headers=headers)
