"""Routing is a pure function: table-test it."""

from __future__ import annotations

import pytest

from gateway.s3.routing import Op, Operation, resolve_operation, split_host_bucket

H: dict[str, str] = {}
COPY = {"x-amz-copy-source": "/src/key"}

CASES = [
    ("GET", "/", {}, H, Operation(Op.LIST_BUCKETS)),
    ("PUT", "/", {}, H, Operation(Op.METHOD_NOT_ALLOWED)),
    ("PUT", "/b", {}, H, Operation(Op.CREATE_BUCKET, "b")),
    ("PUT", "/b/", {}, H, Operation(Op.CREATE_BUCKET, "b")),
    ("HEAD", "/b", {}, H, Operation(Op.HEAD_BUCKET, "b")),
    ("DELETE", "/b", {}, H, Operation(Op.DELETE_BUCKET, "b")),
    ("GET", "/b", {}, H, Operation(Op.LIST_OBJECTS, "b")),
    ("GET", "/b", {"list-type": "2"}, H, Operation(Op.LIST_OBJECTS_V2, "b")),
    ("GET", "/b", {"location": ""}, H, Operation(Op.GET_BUCKET_LOCATION, "b")),
    ("GET", "/b", {"versioning": ""}, H, Operation(Op.GET_BUCKET_VERSIONING, "b")),
    ("PUT", "/b", {"versioning": ""}, H, Operation(Op.PUT_BUCKET_VERSIONING, "b")),
    ("GET", "/b", {"versions": ""}, H, Operation(Op.LIST_OBJECT_VERSIONS, "b")),
    ("GET", "/b", {"uploads": ""}, H, Operation(Op.LIST_MULTIPART_UPLOADS, "b")),
    ("POST", "/b", {"delete": ""}, H, Operation(Op.DELETE_OBJECTS, "b")),
    ("POST", "/b", {}, H, Operation(Op.POST_OBJECT, "b")),
    ("GET", "/b", {"cors": ""}, H, Operation(Op.GET_BUCKET_CORS, "b")),
    ("PUT", "/b", {"cors": ""}, H, Operation(Op.PUT_BUCKET_CORS, "b")),
    ("DELETE", "/b", {"cors": ""}, H, Operation(Op.DELETE_BUCKET_CORS, "b")),
    ("GET", "/b", {"acl": ""}, H, Operation(Op.GET_BUCKET_ACL, "b")),
    ("PUT", "/b", {"acl": ""}, H, Operation(Op.PUT_BUCKET_ACL, "b")),
    ("GET", "/b/k", {"acl": ""}, H, Operation(Op.GET_OBJECT_ACL, "b", "k")),
    ("PUT", "/b/k", {"acl": ""}, H, Operation(Op.PUT_OBJECT_ACL, "b", "k")),
    ("OPTIONS", "/b/k", {}, H, Operation(Op.CORS_PREFLIGHT, "b", "k")),
    ("OPTIONS", "/b", {}, H, Operation(Op.CORS_PREFLIGHT, "b")),
    ("OPTIONS", "/", {}, H, Operation(Op.CORS_PREFLIGHT)),
    ("GET", "/b", {"lifecycle": ""}, H, Operation(Op.GET_BUCKET_LIFECYCLE, "b")),
    ("PUT", "/b", {"lifecycle": ""}, H, Operation(Op.PUT_BUCKET_LIFECYCLE, "b")),
    ("DELETE", "/b", {"lifecycle": ""}, H, Operation(Op.DELETE_BUCKET_LIFECYCLE, "b")),
    ("GET", "/b", {"website": ""}, H, Operation(Op.BUCKET_SUBRESOURCE, "b", None, "website")),
    ("PUT", "/b", {"policy": ""}, H, Operation(Op.BUCKET_SUBRESOURCE, "b", None, "policy")),
    ("PUT", "/b/k", {}, H, Operation(Op.PUT_OBJECT, "b", "k")),
    ("PUT", "/b/k", {}, COPY, Operation(Op.COPY_OBJECT, "b", "k")),
    ("GET", "/b/k", {}, H, Operation(Op.GET_OBJECT, "b", "k")),
    ("HEAD", "/b/k", {}, H, Operation(Op.HEAD_OBJECT, "b", "k")),
    ("DELETE", "/b/k", {}, H, Operation(Op.DELETE_OBJECT, "b", "k")),
    ("POST", "/b/k", {"uploads": ""}, H, Operation(Op.CREATE_MULTIPART_UPLOAD, "b", "k")),
    ("PUT", "/b/k", {"partNumber": "1", "uploadId": "u"}, H,
     Operation(Op.UPLOAD_PART, "b", "k")),
    ("PUT", "/b/k", {"partNumber": "1", "uploadId": "u"}, COPY,
     Operation(Op.UPLOAD_PART_COPY, "b", "k")),
    ("POST", "/b/k", {"uploadId": "u"}, H, Operation(Op.COMPLETE_MULTIPART_UPLOAD, "b", "k")),
    ("DELETE", "/b/k", {"uploadId": "u"}, H, Operation(Op.ABORT_MULTIPART_UPLOAD, "b", "k")),
    ("GET", "/b/k", {"uploadId": "u"}, H, Operation(Op.LIST_PARTS, "b", "k")),
    ("GET", "/b/k", {"partNumber": "2"}, H, Operation(Op.GET_OBJECT, "b", "k")),
    ("GET", "/b/k", {"tagging": ""}, H, Operation(Op.GET_OBJECT_TAGGING, "b", "k")),
    ("PUT", "/b/k", {"tagging": "", "versionId": "v"}, H,
     Operation(Op.PUT_OBJECT_TAGGING, "b", "k")),
    ("DELETE", "/b/k", {"tagging": ""}, H, Operation(Op.DELETE_OBJECT_TAGGING, "b", "k")),
    ("POST", "/b/k", {"tagging": ""}, H, Operation(Op.OBJECT_SUBRESOURCE, "b", "k", "tagging")),
    ("GET", "/b", {"tagging": ""}, H, Operation(Op.GET_BUCKET_TAGGING, "b")),
    ("PUT", "/b", {"tagging": ""}, H, Operation(Op.PUT_BUCKET_TAGGING, "b")),
    ("DELETE", "/b", {"tagging": ""}, H, Operation(Op.DELETE_BUCKET_TAGGING, "b")),
    ("GET", "/b/k", {"versionId": "null"}, H, Operation(Op.GET_OBJECT, "b", "k")),
    ("POST", "/b/k", {}, H, Operation(Op.METHOD_NOT_ALLOWED, "b", "k")),
    ("PATCH", "/b/k", {}, H, Operation(Op.METHOD_NOT_ALLOWED, "b", "k")),
    # Keys keep every character: dot segments, doubled and trailing slashes, encodings.
    ("GET", "/b/a/../c", {}, H, Operation(Op.GET_OBJECT, "b", "a/../c")),
    ("GET", "/b//x//", {}, H, Operation(Op.GET_OBJECT, "b", "/x//")),
    ("GET", "/b/dir/", {}, H, Operation(Op.GET_OBJECT, "b", "dir/")),
    ("GET", "/b/a%20b%2Bc%25", {}, H, Operation(Op.GET_OBJECT, "b", "a b+c%")),
    ("GET", "/b/caf%C3%A9", {}, H, Operation(Op.GET_OBJECT, "b", "café")),
    ("GET", "/b/a+b", {}, H, Operation(Op.GET_OBJECT, "b", "a+b")),
]


@pytest.mark.parametrize(("method", "path", "query", "headers", "expected"), CASES)
def test_path_style(method: str, path: str, query: dict[str, str], headers: dict[str, str],
                    expected: Operation) -> None:
    assert resolve_operation(method, "127.0.0.1:8080", path, query, headers) == expected


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("mybot.gbai.s3.local", "/", Operation(Op.LIST_OBJECTS, "mybot.gbai")),
    ("mybot.gbai.s3.local:8080", "/kb/x.pdf", Operation(Op.GET_OBJECT, "mybot.gbai", "kb/x.pdf")),
    ("MyBot.S3.Local", "/k", Operation(Op.GET_OBJECT, "mybot", "k")),
    ("s3.local:8080", "/b/k", Operation(Op.GET_OBJECT, "b", "k")),
    ("s3.local", "/", Operation(Op.LIST_BUCKETS)),
    ("127.0.0.1:8080", "/b/k", Operation(Op.GET_OBJECT, "b", "k")),
])
def test_virtual_host_style(host: str, path: str, expected: Operation) -> None:
    assert resolve_operation("GET", host, path, {}, {}, domain="s3.local") == expected


def test_virtual_host_needs_domain() -> None:
    assert split_host_bucket("b.s3.local", "") is None
    assert split_host_bucket("b.s3.local", "s3.local") == "b"
    assert split_host_bucket("evil-s3.local", "s3.local") is None
