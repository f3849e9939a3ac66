"""Routing as a pure function: request line + host -> :class:`Operation`.

Decided by method, then bucket/key presence, then the query's sub-resource words, then
headers (``PUT`` with ``partNumber`` and ``x-amz-copy-source`` is UploadPartCopy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote


class Op(Enum):
    LIST_BUCKETS = "ListBuckets"
    # bucket
    CREATE_BUCKET = "CreateBucket"
    DELETE_BUCKET = "DeleteBucket"
    HEAD_BUCKET = "HeadBucket"
    LIST_OBJECTS = "ListObjects"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    LIST_OBJECT_VERSIONS = "ListObjectVersions"
    GET_BUCKET_LOCATION = "GetBucketLocation"
    GET_BUCKET_VERSIONING = "GetBucketVersioning"
    PUT_BUCKET_VERSIONING = "PutBucketVersioning"
    DELETE_OBJECTS = "DeleteObjects"
    LIST_MULTIPART_UPLOADS = "ListMultipartUploads"
    POST_OBJECT = "PostObject"
    GET_BUCKET_CORS = "GetBucketCors"
    PUT_BUCKET_CORS = "PutBucketCors"
    DELETE_BUCKET_CORS = "DeleteBucketCors"
    GET_BUCKET_ACL = "GetBucketAcl"
    PUT_BUCKET_ACL = "PutBucketAcl"
    GET_BUCKET_TAGGING = "GetBucketTagging"
    PUT_BUCKET_TAGGING = "PutBucketTagging"
    DELETE_BUCKET_TAGGING = "DeleteBucketTagging"
    GET_BUCKET_LIFECYCLE = "GetBucketLifecycleConfiguration"
    PUT_BUCKET_LIFECYCLE = "PutBucketLifecycleConfiguration"
    DELETE_BUCKET_LIFECYCLE = "DeleteBucketLifecycle"
    GET_BUCKET_ENCRYPTION = "GetBucketEncryption"
    PUT_BUCKET_ENCRYPTION = "PutBucketEncryption"
    DELETE_BUCKET_ENCRYPTION = "DeleteBucketEncryption"
    BUCKET_SUBRESOURCE = "BucketSubresource"  # any other ?word on a bucket
    # object
    PUT_OBJECT = "PutObject"
    COPY_OBJECT = "CopyObject"
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"
    DELETE_OBJECT = "DeleteObject"
    CREATE_MULTIPART_UPLOAD = "CreateMultipartUpload"
    UPLOAD_PART = "UploadPart"
    UPLOAD_PART_COPY = "UploadPartCopy"
    COMPLETE_MULTIPART_UPLOAD = "CompleteMultipartUpload"
    ABORT_MULTIPART_UPLOAD = "AbortMultipartUpload"
    LIST_PARTS = "ListParts"
    GET_OBJECT_ACL = "GetObjectAcl"
    PUT_OBJECT_ACL = "PutObjectAcl"
    GET_OBJECT_TAGGING = "GetObjectTagging"
    PUT_OBJECT_TAGGING = "PutObjectTagging"
    DELETE_OBJECT_TAGGING = "DeleteObjectTagging"
    OBJECT_SUBRESOURCE = "ObjectSubresource"
    # any path
    CORS_PREFLIGHT = "CorsPreflight"
    # neither
    METHOD_NOT_ALLOWED = "MethodNotAllowed"


#: Query words that name a sub-resource (and so a different operation) rather than a filter.
BUCKET_SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering",
    "inventory", "lifecycle", "logging", "metadataTable", "metrics", "notification",
    "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
    "replication", "requestPayment", "tagging", "website",
})
OBJECT_SUBRESOURCES = frozenset({
    "acl", "attributes", "legal-hold", "restore", "retention", "select", "tagging", "torrent",
})


_BUCKET_NAMED = {
    ("GET", "cors"): Op.GET_BUCKET_CORS,
    ("PUT", "cors"): Op.PUT_BUCKET_CORS,
    ("DELETE", "cors"): Op.DELETE_BUCKET_CORS,
    ("GET", "acl"): Op.GET_BUCKET_ACL,
    ("PUT", "acl"): Op.PUT_BUCKET_ACL,
    ("GET", "tagging"): Op.GET_BUCKET_TAGGING,
    ("PUT", "tagging"): Op.PUT_BUCKET_TAGGING,
    ("DELETE", "tagging"): Op.DELETE_BUCKET_TAGGING,
    ("GET", "lifecycle"): Op.GET_BUCKET_LIFECYCLE,
    ("PUT", "lifecycle"): Op.PUT_BUCKET_LIFECYCLE,
    ("DELETE", "lifecycle"): Op.DELETE_BUCKET_LIFECYCLE,
    ("GET", "encryption"): Op.GET_BUCKET_ENCRYPTION,
    ("PUT", "encryption"): Op.PUT_BUCKET_ENCRYPTION,
    ("DELETE", "encryption"): Op.DELETE_BUCKET_ENCRYPTION,
}
_OBJECT_NAMED = {
    ("GET", "acl"): Op.GET_OBJECT_ACL,
    ("PUT", "acl"): Op.PUT_OBJECT_ACL,
    ("GET", "tagging"): Op.GET_OBJECT_TAGGING,
    ("PUT", "tagging"): Op.PUT_OBJECT_TAGGING,
    ("DELETE", "tagging"): Op.DELETE_OBJECT_TAGGING,
}


@dataclass(frozen=True, slots=True)
class Operation:
    op: Op
    bucket: str | None = None
    key: str | None = None
    subresource: str | None = None

    @property
    def name(self) -> str:
        if self.subresource:
            return f"{self.op.value}:{self.subresource}"
        return self.op.value


def split_host_bucket(host: str, domain: str) -> str | None:
    """The bucket named by a virtual-host-style ``Host``, or None for path style."""
    if not domain:
        return None
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    hostname = hostname.lower().rstrip(".")
    suffix = "." + domain.lower().lstrip(".")
    if hostname.endswith(suffix) and len(hostname) > len(suffix):
        return hostname[: -len(suffix)]
    return None


def split_path(path: str, host_bucket: str | None) -> tuple[str | None, str | None]:
    """Bucket and key from a decoded path. The key keeps every character, '//' included."""
    if host_bucket is not None:
        key = path[1:] if path.startswith("/") else path
        return host_bucket, (key or None)
    trimmed = path[1:] if path.startswith("/") else path
    if not trimmed:
        return None, None
    bucket, sep, key = trimmed.partition("/")
    return (bucket or None), (key if sep and key else None)


def resolve_operation(
    method: str,
    host: str,
    raw_path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    domain: str = "",
) -> Operation:
    """``raw_path`` is the path as sent (percent-encoded); ``query`` the decoded parameters;
    ``headers`` lower-cased names."""
    host_bucket = split_host_bucket(host, domain)
    bucket, key = split_path(unquote(raw_path), host_bucket)
    method = method.upper()
    if method == "OPTIONS":
        return Operation(Op.CORS_PREFLIGHT, bucket, key)
    if bucket is None:
        if method == "GET":
            return Operation(Op.LIST_BUCKETS)
        return Operation(Op.METHOD_NOT_ALLOWED)
    if key is None:
        return _bucket_operation(method, bucket, query)
    return _object_operation(method, bucket, key, query, headers)


def _bucket_operation(method: str, bucket: str, query: Mapping[str, str]) -> Operation:
    def op(o: Op, sub: str | None = None) -> Operation:
        return Operation(o, bucket, None, sub)

    sub = next((w for w in query if w in BUCKET_SUBRESOURCES), None)
    named = _BUCKET_NAMED.get((method, sub)) if sub else None
    if named is not None:
        return op(named)
    if method == "GET":
        if sub:
            return op(Op.BUCKET_SUBRESOURCE, sub)
        if "location" in query:
            return op(Op.GET_BUCKET_LOCATION)
        if "versioning" in query:
            return op(Op.GET_BUCKET_VERSIONING)
        if "versions" in query:
            return op(Op.LIST_OBJECT_VERSIONS)
        if "uploads" in query:
            return op(Op.LIST_MULTIPART_UPLOADS)
        if query.get("list-type") == "2":
            return op(Op.LIST_OBJECTS_V2)
        return op(Op.LIST_OBJECTS)
    if method == "PUT":
        if sub:
            return op(Op.BUCKET_SUBRESOURCE, sub)
        if "versioning" in query:
            return op(Op.PUT_BUCKET_VERSIONING)
        return op(Op.CREATE_BUCKET)
    if method == "HEAD":
        return op(Op.HEAD_BUCKET)
    if method == "DELETE":
        if sub:
            return op(Op.BUCKET_SUBRESOURCE, sub)
        return op(Op.DELETE_BUCKET)
    if method == "POST":
        if "delete" in query:
            return op(Op.DELETE_OBJECTS)
        if sub:
            return op(Op.BUCKET_SUBRESOURCE, sub)
        return op(Op.POST_OBJECT)
    return op(Op.METHOD_NOT_ALLOWED)


def _object_operation(
    method: str, bucket: str, key: str, query: Mapping[str, str], headers: Mapping[str, str]
) -> Operation:
    def op(o: Op, sub: str | None = None) -> Operation:
        return Operation(o, bucket, key, sub)

    sub = next((w for w in query if w in OBJECT_SUBRESOURCES), None)
    named = _OBJECT_NAMED.get((method, sub)) if sub else None
    if named is not None:
        return op(named)
    if sub and method in ("GET", "PUT", "DELETE", "POST"):
        return op(Op.OBJECT_SUBRESOURCE, sub)
    has_upload = "uploadId" in query
    if method == "GET":
        return op(Op.LIST_PARTS) if has_upload else op(Op.GET_OBJECT)
    if method == "HEAD":
        return op(Op.HEAD_OBJECT)
    if method == "PUT":
        copy = "x-amz-copy-source" in headers
        if "partNumber" in query and has_upload:
            return op(Op.UPLOAD_PART_COPY) if copy else op(Op.UPLOAD_PART)
        return op(Op.COPY_OBJECT) if copy else op(Op.PUT_OBJECT)
    if method == "DELETE":
        return op(Op.ABORT_MULTIPART_UPLOAD) if has_upload else op(Op.DELETE_OBJECT)
    if method == "POST":
        if "uploads" in query:
            return op(Op.CREATE_MULTIPART_UPLOAD)
        if has_upload:
            return op(Op.COMPLETE_MULTIPART_UPLOAD)
        return op(Op.METHOD_NOT_ALLOWED)
    return op(Op.METHOD_NOT_ALLOWED)
