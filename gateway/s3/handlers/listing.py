"""ListObjects (v1), ListObjectsV2 and ListObjectVersions."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote_plus

from starlette.responses import Response

from gateway import errors
from gateway.s3.handlers.common import owner_xml, xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import el, escape, iso8601
from gateway.service.listing import (
    MAX_KEYS,
    Listing,
    decode_continuation,
    encode_continuation,
    list_keys,
    list_versions,
)
from gateway.service.versions import check_version_id
from gateway.types import ListedObject

#: What quote_plus(…, safe="/") leaves unchanged.
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~/-]*")


def _max_keys(req: S3Request) -> int:
    raw = req.query.get("max-keys")
    if raw is None or raw == "":
        return MAX_KEYS
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgument("Provided max-keys not an integer or within integer "
                                     "range", name="max-keys", value=raw) from None
    if value < 0:
        raise errors.InvalidArgument("Argument maxKeys must be an integer between 0 and "
                                     "2147483647", name="max-keys", value=raw)
    return min(value, MAX_KEYS)


def _encoder(req: S3Request) -> tuple[str | None, Callable[[str], str]]:
    encoding = req.query.get("encoding-type")
    if encoding is None:
        return None, _identity
    if encoding.lower() != "url":
        raise errors.InvalidArgument("Invalid Encoding Method specified in Request",
                                     name="encoding-type", value=encoding)
    # botocore decodes these with unquote_plus: '+' for spaces, '/' left alone. Most keys
    # need no quoting at all (boto3 asks for this encoding on every listing).
    return "url", lambda s: s if _URL_SAFE.fullmatch(s) else quote_plus(s, safe="/")


def _contents(obj: ListedObject, enc: Callable[[str], str], owner: str | None) -> str:
    # One f-string per entry: a page renders up to 1,000 of them.
    checksum = (f"<ChecksumAlgorithm>{escape(obj.checksum_algorithm)}</ChecksumAlgorithm>"
                "<ChecksumType>FULL_OBJECT</ChecksumType>" if obj.checksum_algorithm else "")
    return (f"<Contents><Key>{escape(enc(obj.key))}</Key>"
            f"<LastModified>{iso8601(obj.last_modified)}</LastModified>"
            f"<ETag>&quot;{obj.etag}&quot;</ETag><Size>{obj.size}</Size>{owner or ''}"
            f"<StorageClass>{escape(obj.storage_class)}</StorageClass>{checksum}</Contents>")


def _body(listing: Listing, enc: Callable[[str], str], owner: str | None) -> list[str]:
    out = [_contents(o, enc, owner) for o in listing.objects]
    out.extend("<CommonPrefixes>" + el("Prefix", enc(p)) + "</CommonPrefixes>"
               for p in listing.common_prefixes)
    return out


async def _owner(req: S3Request, owner_id: int) -> str:
    return owner_xml(await req.gateway.accounts.owner(owner_id))


async def list_objects_v2(req: S3Request) -> Response:
    q = req.query
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    encoding, enc = _encoder(req)
    max_keys = _max_keys(req)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    token = q.get("continuation-token")
    start_after = q.get("start-after")
    after = start_after or None
    if token is not None:
        after = _decode_token(token)
    listing = await list_keys(req.gateway.ctx, bucket, prefix=prefix, delimiter=delimiter,
                              after=after, max_keys=max_keys)
    owner = await _owner(req, bucket.owner_id) if q.get("fetch-owner") == "true" else None
    e = enc
    children = [el("Name", bucket.name), el("Prefix", e(prefix))]
    if delimiter:
        children.append(el("Delimiter", e(delimiter)))
    children += [el("MaxKeys", max_keys),
                 el("KeyCount", len(listing.objects) + len(listing.common_prefixes)),
                 el("IsTruncated", listing.is_truncated)]
    if token is not None:
        children.append(el("ContinuationToken", token))
    if listing.is_truncated and listing.last is not None:
        children.append(el("NextContinuationToken", encode_continuation(listing.last)))
    if start_after is not None:
        children.append(el("StartAfter", e(start_after)))
    if encoding:
        children.append(el("EncodingType", encoding))
    children += _body(listing, enc, owner)
    return xml_response("ListBucketResult", children)


async def list_objects_v1(req: S3Request) -> Response:
    q = req.query
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    encoding, enc = _encoder(req)
    max_keys = _max_keys(req)
    prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
    listing = await list_keys(req.gateway.ctx, bucket, prefix=prefix, delimiter=delimiter,
                              after=marker or None, max_keys=max_keys)
    owner = await _owner(req, bucket.owner_id)
    e = enc
    children = [el("Name", bucket.name), el("Prefix", e(prefix)),
                el("Marker", e(marker)), el("MaxKeys", max_keys)]
    if delimiter:
        children.append(el("Delimiter", e(delimiter)))
    children.append(el("IsTruncated", listing.is_truncated))
    if listing.is_truncated and listing.last is not None:
        children.append(el("NextMarker", e(listing.last)))
    if encoding:
        children.append(el("EncodingType", encoding))
    children += _body(listing, enc, owner)
    return xml_response("ListBucketResult", children)


def _decode_token(token: str) -> str:
    try:
        return decode_continuation(token)
    except ValueError:
        raise errors.InvalidArgument("The continuation token provided is incorrect",
                                     name="continuation-token", value=token) from None


def _identity(value: str) -> str:
    return value


async def list_object_versions(req: S3Request) -> Response:
    q = req.query
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    encoding, enc = _encoder(req)
    max_keys = _max_keys(req)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, version_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise errors.InvalidArgument("A version-id marker cannot be specified without a key "
                                     "marker.", name="version-id-marker", value=version_marker)
    if version_marker:
        check_version_id(version_marker)
    listing = await list_versions(req.gateway.ctx, bucket, prefix=prefix, delimiter=delimiter,
                                  key_marker=key_marker or None,
                                  version_id_marker=version_marker or None, max_keys=max_keys)
    owner = await _owner(req, bucket.owner_id)
    e = enc
    children = [el("Name", bucket.name), el("Prefix", e(prefix)),
                el("KeyMarker", e(key_marker)), el("VersionIdMarker", version_marker),
                el("MaxKeys", max_keys)]
    if delimiter:
        children.append(el("Delimiter", e(delimiter)))
    children.append(el("IsTruncated", listing.is_truncated))
    if listing.is_truncated and listing.next_key_marker is not None:
        children.append(el("NextKeyMarker", e(listing.next_key_marker)))
        if listing.next_version_id_marker is not None:
            children.append(el("NextVersionIdMarker", listing.next_version_id_marker))
    if encoding:
        children.append(el("EncodingType", encoding))
    for v in listing.versions:
        common = [el("Key", enc(v.key)), el("VersionId", v.version_id),
                  el("IsLatest", v.is_latest), el("LastModified", iso8601(v.last_modified))]
        if v.is_delete_marker:
            children.append("<DeleteMarker>" + "".join(common) + owner + "</DeleteMarker>")
            continue
        parts = [*common, el("ETag", v.quoted_etag), el("Size", v.size),
                 el("StorageClass", v.storage_class), owner]
        if v.checksum_algorithm:
            parts.append(el("ChecksumAlgorithm", v.checksum_algorithm))
            parts.append(el("ChecksumType", "FULL_OBJECT"))
        children.append("<Version>" + "".join(parts) + "</Version>")
    children.extend("<CommonPrefixes>" + el("Prefix", enc(p)) + "</CommonPrefixes>"
                    for p in listing.common_prefixes)
    return xml_response("ListVersionsResult", children)
