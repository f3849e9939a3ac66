"""CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload, ListParts, ListMultipartUploads."""

from __future__ import annotations

import dataclasses
import html
from urllib.parse import quote_plus

from starlette.responses import Response

from gateway import errors
from gateway.checksums import ALGORITHMS, header_for, normalize_algorithm
from gateway.headers import (
    object_attributes,
    parse_copy_source,
    parse_range,
    read_conditions,
    write_conditions,
)
from gateway.s3.handlers.common import owner_xml, xml_response
from gateway.s3.handlers.objects import checksum_type, int_param, version_header
from gateway.s3.request import S3Request
from gateway.s3.xml import children, el, iso8601, local, parse
from gateway.service.encryption import (
    customer_key_from_headers,
    response_headers,
    write_encryption_from_headers,
)
from gateway.service.multipart import MAX_LIST, CompletedPart
from gateway.service.tagging import parse_tagging_header
from gateway.types import PartRecord, RangeKind, UploadRecord


def _algorithm(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalize_algorithm(value)
    except Exception:
        raise errors.InvalidRequest(f"Unsupported checksum algorithm {value!r}") from None


def _part_number(req: S3Request) -> int:
    number = int_param(req, "partNumber")
    assert number is not None  # routing only sends requests that have one
    return number


def _checksum_el(algorithm: str | None, value: str | None) -> str:
    if not algorithm or not value:
        return ""
    return el(f"Checksum{algorithm}", value)


async def create_multipart_upload(req: S3Request) -> Response:
    algorithm = _algorithm(req.headers.get("x-amz-checksum-algorithm")
                           or req.headers.get("x-amz-sdk-checksum-algorithm"))
    attrs = dataclasses.replace(object_attributes(req.headers),
                                tags=parse_tagging_header(req.headers.get("x-amz-tagging")))
    upload = await req.gateway.multipart.create(
        req.principal, req.bucket, req.key, attrs,
        checksum_algorithm=algorithm, checksum_type=req.headers.get("x-amz-checksum-type"),
        encryption=write_encryption_from_headers(req.headers))
    headers = response_headers(upload.encryption)
    if upload.checksum_algorithm and upload.checksum_type:
        headers.update({"x-amz-checksum-algorithm": upload.checksum_algorithm,
                        "x-amz-checksum-type": upload.checksum_type})
    return xml_response("InitiateMultipartUploadResult", [
        el("Bucket", req.bucket), el("Key", req.key), el("UploadId", upload.id)],
        headers=headers)


def _part_headers(upload: UploadRecord, part: PartRecord) -> dict[str, str]:
    headers = {"ETag": f'"{part.etag}"', **response_headers(upload.encryption)}
    if upload.checksum_algorithm and part.checksum_value:
        headers[header_for(upload.checksum_algorithm)] = part.checksum_value
    return headers


async def upload_part(req: S3Request) -> Response:
    number = _part_number(req)
    customer = customer_key_from_headers(req.headers)
    upload = await req.gateway.multipart.get_upload(req.principal, req.bucket, req.key,
                                                    req.query["uploadId"])
    body, size = req.body(default_checksum=upload.checksum_algorithm)
    part = await req.gateway.multipart.upload_part(upload, number, body, size_hint=size,
                                                   customer=customer)
    return Response(status_code=200, headers=_part_headers(upload, part))


async def upload_part_copy(req: S3Request) -> Response:
    number = _part_number(req)
    customer = customer_key_from_headers(req.headers)
    source_customer = customer_key_from_headers(req.headers, copy_source=True)
    upload = await req.gateway.multipart.get_upload(req.principal, req.bucket, req.key,
                                                    req.query["uploadId"])
    src_bucket, src_key, src_version = parse_copy_source(req.headers["x-amz-copy-source"])
    raw_range = req.headers.get("x-amz-copy-source-range")
    src_range = parse_range(raw_range) if raw_range else None
    if raw_range and (src_range is None or src_range.kind is not RangeKind.BOUNDED):
        raise errors.InvalidArgument("The x-amz-copy-source-range value must be of the form "
                                     "bytes=first-last where first and last are the "
                                     "zero-based offsets of the first and last bytes to copy",
                                     name="x-amz-copy-source-range", value=raw_range)
    try:
        part = await req.gateway.multipart.upload_part_copy(
            req.principal, upload, number, src_bucket=src_bucket, src_key=src_key,
            src_version=src_version, src_range=src_range,
            conditions=read_conditions(req.headers, prefix="x-amz-copy-source-"),
            customer=customer, source_customer=source_customer)
    except errors.InvalidRange as exc:
        raise errors.InvalidArgument(
            "Range specified is not valid for source object of size: "
            f"{exc.fields.get('ActualObjectSize', '?')}",
            name="x-amz-copy-source-range", value=raw_range or "") from None
    result = [el("ETag", f'"{part.etag}"'), el("LastModified", iso8601(part.last_modified)),
              _checksum_el(upload.checksum_algorithm, part.checksum_value)]
    return xml_response("CopyPartResult", result, headers=response_headers(upload.encryption))


def _completed_parts(body: bytes) -> list[CompletedPart]:
    root = parse(body)
    if local(root.tag) != "CompleteMultipartUpload":
        raise errors.MalformedXML()
    parts: list[CompletedPart] = []
    for node in children(root, "Part"):
        number_text = etag = None
        sums: dict[str, str] = {}
        for child in node:
            name, text = local(child.tag), (child.text or "").strip()
            if name == "PartNumber":
                number_text = text
            elif name == "ETag":
                etag = text
            elif name.startswith("Checksum") and name[8:] in ALGORITHMS:
                sums[name[8:]] = text
        if number_text is None or etag is None:
            raise errors.MalformedXML()
        try:
            number = int(number_text)
        except ValueError:
            raise errors.MalformedXML() from None
        # ETags arrive quoted, unquoted or XML-escaped (s3cmd, rclone): compare the hex.
        etag = html.unescape(etag).strip().strip('"').strip()
        parts.append(CompletedPart(number, etag, sums))
    return parts


async def complete_multipart_upload(req: S3Request) -> Response:
    customer = customer_key_from_headers(req.headers)
    parts = _completed_parts(await req.small_body())
    expected = None
    for algorithm in ALGORITHMS:
        value = req.headers.get(header_for(algorithm))
        if value:
            expected = (algorithm, value)
    record = await req.gateway.multipart.complete(
        req.principal, req.bucket, req.key, req.query["uploadId"], parts,
        conditions=write_conditions(req.headers), expected_checksum=expected,
        customer=customer)
    result = [el("Location", f"/{req.bucket}/{req.key}"), el("Bucket", req.bucket),
              el("Key", req.key), el("ETag", record.quoted_etag)]
    if record.checksum_algorithm and record.checksum_value:
        result.append(_checksum_el(record.checksum_algorithm, record.checksum_value))
        result.append(el("ChecksumType", checksum_type(record.checksum_value)))
    return xml_response("CompleteMultipartUploadResult", result,
                        headers={**version_header(record),
                                 **response_headers(record.encryption)})


async def abort_multipart_upload(req: S3Request) -> Response:
    await req.gateway.multipart.abort(req.principal, req.bucket, req.key,
                                      req.query["uploadId"])
    return Response(status_code=204)


async def list_parts(req: S3Request) -> Response:
    max_parts = int_param(req, "max-parts", MAX_LIST)
    marker = int_param(req, "part-number-marker", 0)
    assert max_parts is not None and marker is not None
    if max_parts < 0 or marker < 0:
        raise errors.InvalidArgument("max-parts and part-number-marker must not be negative")
    listing = await req.gateway.multipart.list_parts(
        req.principal, req.bucket, req.key, req.query["uploadId"], max_parts=max_parts,
        marker=marker)
    upload = listing.upload
    initiator = await req.gateway.accounts.owner(upload.owner_id)
    out = [el("Bucket", req.bucket), el("Key", req.key), el("UploadId", upload.id),
           el("PartNumberMarker", marker)]
    if listing.next_marker is not None:
        out.append(el("NextPartNumberMarker", listing.next_marker))
    out += [el("MaxParts", min(max_parts, MAX_LIST)), el("IsTruncated", listing.is_truncated),
            owner_xml(initiator, "Initiator"), owner_xml(initiator),
            el("StorageClass", upload.storage_class)]
    if upload.checksum_algorithm:
        out += [el("ChecksumAlgorithm", upload.checksum_algorithm),
                el("ChecksumType", upload.checksum_type)]
    for p in listing.parts:
        out.append("<Part>" + el("PartNumber", p.part_number)
                   + el("LastModified", iso8601(p.last_modified)) + el("ETag", f'"{p.etag}"')
                   + el("Size", p.size)
                   + _checksum_el(upload.checksum_algorithm, p.checksum_value) + "</Part>")
    return xml_response("ListPartsResult", out)


async def list_multipart_uploads(req: S3Request) -> Response:
    q = req.query
    max_uploads = int_param(req, "max-uploads", MAX_LIST)
    assert max_uploads is not None
    if max_uploads < 0:
        raise errors.InvalidArgument("max-uploads must not be negative", name="max-uploads")
    encoding = q.get("encoding-type")
    if encoding is not None and encoding.lower() != "url":
        raise errors.InvalidArgument("Invalid Encoding Method specified in Request",
                                     name="encoding-type", value=encoding)

    def enc(value: str) -> str:
        return quote_plus(value, safe="/") if encoding else value

    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    listing = await req.gateway.multipart.list_uploads(
        req.principal, req.bucket, prefix=prefix, delimiter=delimiter,
        key_marker=key_marker or None, upload_id_marker=id_marker or None,
        max_uploads=max_uploads)
    out = [el("Bucket", req.bucket), el("KeyMarker", enc(key_marker)),
           el("UploadIdMarker", id_marker)]
    if listing.is_truncated:
        out += [el("NextKeyMarker", enc(listing.next_key_marker or "")),
                el("NextUploadIdMarker", listing.next_upload_id_marker or "")]
    out += [el("Prefix", enc(prefix))]
    if delimiter:
        out.append(el("Delimiter", enc(delimiter)))
    out += [el("MaxUploads", min(max_uploads, MAX_LIST)),
            el("IsTruncated", listing.is_truncated)]
    if encoding:
        out.append(el("EncodingType", "url"))
    for u in listing.uploads:
        initiator = await req.gateway.accounts.owner(u.owner_id)
        out.append("<Upload>" + el("Key", enc(u.key)) + el("UploadId", u.id)
                   + owner_xml(initiator, "Initiator") + owner_xml(initiator)
                   + el("StorageClass", u.storage_class)
                   + el("Initiated", iso8601(u.initiated_at))
                   + (el("ChecksumAlgorithm", u.checksum_algorithm)
                      if u.checksum_algorithm else "") + "</Upload>")
    out.extend("<CommonPrefixes>" + el("Prefix", enc(p)) + "</CommonPrefixes>"
               for p in listing.common_prefixes)
    return xml_response("ListMultipartUploadsResult", out)
