"""Multipart uploads, black-box over real HTTP, held to Amazon S3's behaviour.

CreateMultipartUpload (metadata, content type, checksums), UploadPart and its errors,
CompleteMultipartUpload (ETag, bytes, ranges, partNumber reads, every error, the forms of
ETag clients send), overwrite and conditional completion, AbortMultipartUpload, ListParts
and ListMultipartUploads pagination, UploadPartCopy, DeleteBucket with unfinished uploads,
and a property test over random part layouts.

Part bodies are kept as small as S3 allows: 5 MiB for every part but the last.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from awscrt import checksums as crt
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests._errors import client_error
from tests._server import GatewayProcess

#: fs, and the s3:// backend on moto and on a second gateway (tests/conftest.py).
pytestmark = pytest.mark.upstreams

KiB = 1024
MiB = 1024 * KiB
MIN_PART = 5 * MiB

#: For tests of what only the service and its database do (parse requests, check them
#: against the stored parts, list, combine the stored part checksums): the backend the
#: bytes live on makes no difference there, the database may.
DATABASES = pytest.mark.upstreams("fs", "postgresql")
#: For request parsing and validation, where neither makes a difference.
ONE_KIND = pytest.mark.upstreams("fs")


# -- helpers (also used by test_multipart_races and test_multipart_tools) -------------------


def body_of(size: int, seed: int | None = None) -> bytes:
    """Random bytes; repeatable when a seed is given."""
    return os.urandom(size) if seed is None else random.Random(seed).randbytes(size)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts: list[bytes]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, ``-<count>``, quoted."""
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def assert_bytes(got: bytes, want: bytes, what: str = "body") -> None:
    """Byte equality with a short message (no multi-megabyte diffs)."""
    if got == want:
        return
    n = min(len(got), len(want))
    first = n
    for block in range(0, n, 64 * KiB):
        if got[block:block + 64 * KiB] != want[block:block + 64 * KiB]:
            first = block + next(i for i in range(min(64 * KiB, n - block))
                                 if got[block + i] != want[block + i])
            break
    pytest.fail(f"{what}: got {len(got)} bytes (md5 {md5_hex(got)}), expected {len(want)} "
                f"(md5 {md5_hex(want)}); first difference at offset {first}")


def raw_checksum(algorithm: str, data: bytes) -> bytes:
    if algorithm == "CRC32":
        return int(crt.crc32(data)).to_bytes(4, "big")
    if algorithm == "CRC32C":
        return int(crt.crc32c(data)).to_bytes(4, "big")
    if algorithm == "CRC64NVME":
        return int(crt.crc64nvme(data)).to_bytes(8, "big")
    return hashlib.new(algorithm.lower(), data).digest()


def checksum_b64(algorithm: str, data: bytes) -> str:
    return base64.b64encode(raw_checksum(algorithm, data)).decode()


def composite_checksum(algorithm: str, parts: list[bytes]) -> str:
    """A COMPOSITE checksum: the checksum of the concatenated raw part digests, ``-<count>``."""
    joined = b"".join(raw_checksum(algorithm, p) for p in parts)
    return f"{checksum_b64(algorithm, joined)}-{len(parts)}"


def start(s3: Any, bucket: str, key: str, **kwargs: Any) -> str:
    upload_id: str = s3.create_multipart_upload(Bucket=bucket, Key=key, **kwargs)["UploadId"]
    return upload_id


def put_part(s3: Any, bucket: str, key: str, upload_id: str, number: int, body: bytes,
             **kwargs: Any) -> dict[str, Any]:
    """UploadPart; checks the returned ETag is the MD5 of the body."""
    response = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                              Body=body, **kwargs)
    assert response["ETag"] == f'"{md5_hex(body)}"', (number, response["ETag"])
    return {"PartNumber": number, "ETag": response["ETag"]}


def complete(s3: Any, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]],
             **kwargs: Any) -> Any:
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, **kwargs)


def upload_object(s3: Any, bucket: str, key: str, bodies: list[bytes],
                  **create_kwargs: Any) -> Any:
    """A whole multipart upload of ``bodies`` (parts 1..N); the Complete response."""
    upload_id = start(s3, bucket, key, **create_kwargs)
    parts = [put_part(s3, bucket, key, upload_id, i, b) for i, b in enumerate(bodies, 1)]
    response = complete(s3, bucket, key, upload_id, parts)
    assert response["ETag"] == multipart_etag(bodies)
    return response


def read(s3: Any, bucket: str, key: str, **kwargs: Any) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    return data


def status_of(response: Any) -> int:
    return int(response["ResponseMetadata"]["HTTPStatusCode"])


def signed_request(server: GatewayProcess, method: str, bucket: str, key: str, query: str,
                   body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    """A SigV4-signed request built by hand (botocore's S3SigV4Auth), sent with httpx."""
    url = f"{server.url}/{bucket}/{quote(key, safe='/~')}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    credentials = Credentials(server.access_key, server.secret_key)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return httpx.request(method, url, headers=dict(request.headers.items()), content=body,
                         timeout=60)


def error_code(response: httpx.Response) -> str:
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.content
    code = root.findtext("Code")
    assert code is not None, response.content
    return code


def xml_text(response: httpx.Response, name: str) -> str | None:
    """The text of the first element called ``name`` (any namespace)."""
    for node in ET.fromstring(response.content).iter():
        if node.tag.rsplit("}", 1)[-1] == name:
            return node.text
    return None


def complete_xml(parts: list[tuple[int, str]], extra: str = "") -> bytes:
    """A CompleteMultipartUpload document; ETag texts are inserted verbatim."""
    body = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag>{extra}</Part>"
                   for n, etag in parts)
    return ('<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"{body}</CompleteMultipartUpload>").encode()


def raw_complete(server: GatewayProcess, bucket: str, key: str, upload_id: str,
                 body: bytes) -> httpx.Response:
    return signed_request(server, "POST", bucket, key, f"uploadId={quote(upload_id)}", body,
                          {"Content-Type": "application/xml"})


def listed_part_numbers(s3: Any, bucket: str, key: str, upload_id: str) -> list[int]:
    response = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    return [p["PartNumber"] for p in response.get("Parts", [])]


# -- CreateMultipartUpload: attributes and checksums ----------------------------------------


@DATABASES
def test_metadata_and_content_type_survive_completion(s3: Any, bucket: str) -> None:
    bodies = [body_of(MIN_PART), body_of(1000)]
    created = s3.create_multipart_upload(
        Bucket=bucket, Key="docs/report.txt", ContentType="text/plain; charset=utf-8",
        Metadata={"source": "bot", "Lang": "pt-BR"}, CacheControl="max-age=60",
        ContentDisposition='attachment; filename="report.txt"')
    assert created["Bucket"] == bucket and created["Key"] == "docs/report.txt"
    upload_id = created["UploadId"]
    parts = [put_part(s3, bucket, "docs/report.txt", upload_id, i, b)
             for i, b in enumerate(bodies, 1)]
    done = complete(s3, bucket, "docs/report.txt", upload_id, parts)
    assert done["ETag"] == multipart_etag(bodies)
    assert done["Bucket"] == bucket and done["Key"] == "docs/report.txt"
    head = s3.head_object(Bucket=bucket, Key="docs/report.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"] == {"source": "bot", "lang": "pt-BR"}
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="report.txt"'
    assert head["ContentLength"] == MIN_PART + 1000
    assert head["ETag"] == multipart_etag(bodies)
    got = s3.get_object(Bucket=bucket, Key="docs/report.txt")
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["Metadata"] == {"source": "bot", "lang": "pt-BR"}
    assert_bytes(got["Body"].read(), b"".join(bodies))


@DATABASES
@pytest.mark.parametrize(("algorithm", "requested_type", "expected_type"), [
    ("CRC32", None, "COMPOSITE"),
    ("SHA256", None, "COMPOSITE"),
    ("CRC64NVME", "FULL_OBJECT", "FULL_OBJECT"),
    ("CRC32", "FULL_OBJECT", "FULL_OBJECT"),
])
def test_checksum_algorithms(s3: Any, bucket: str, algorithm: str,
                             requested_type: str | None, expected_type: str) -> None:
    key = f"sum-{algorithm}-{expected_type}"
    member = f"Checksum{algorithm}"
    bodies = [body_of(MIN_PART + 17), body_of(4321)]  # of odd lengths, for FULL_OBJECT
    extra = {"ChecksumType": requested_type} if requested_type else {}
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm,
                                         ContentType="application/x-test", **extra)
    assert created["ChecksumAlgorithm"] == algorithm
    assert created["ChecksumType"] == expected_type
    upload_id = created["UploadId"]
    parts = []
    for number, body in enumerate(bodies, 1):
        response = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                  PartNumber=number, Body=body, ChecksumAlgorithm=algorithm)
        assert response["ETag"] == f'"{md5_hex(body)}"'
        assert response[member] == checksum_b64(algorithm, body), number
        parts.append({"PartNumber": number, "ETag": response["ETag"],
                      member: response[member]})
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert listed["ChecksumAlgorithm"] == algorithm
    assert [p[member] for p in listed["Parts"]] == [checksum_b64(algorithm, b) for b in bodies]

    if expected_type == "COMPOSITE":
        expected = composite_checksum(algorithm, bodies)
    else:
        expected = checksum_b64(algorithm, b"".join(bodies))
    done = complete(s3, bucket, key, upload_id, parts)
    assert done["ETag"] == multipart_etag(bodies)
    assert done[member] == expected
    assert done["ChecksumType"] == expected_type

    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head[member] == expected
    assert head["ChecksumType"] == expected_type
    assert head["ContentType"] == "application/x-test"
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got[member] == expected
    assert got["ChecksumType"] == expected_type
    assert_bytes(got["Body"].read(), b"".join(bodies))


# -- UploadPart ---------------------------------------------------------------------------


def test_upload_part_wrong_content_md5_is_bad_digest(s3: Any, bucket: str) -> None:
    upload_id = start(s3, bucket, "k")
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    assert client_error(s3.upload_part, Bucket=bucket, Key="k", UploadId=upload_id,
                        PartNumber=1, Body=b"x" * 1000, ContentMD5=wrong) == ("BadDigest", 400)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == []
    right = base64.b64encode(hashlib.md5(b"x" * 1000).digest()).decode()
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1,
                   Body=b"x" * 1000, ContentMD5=right)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == [1]


def test_upload_part_wrong_crc32_is_bad_digest(s3: Any, bucket: str) -> None:
    upload_id = start(s3, bucket, "k")
    body = body_of(3000)
    assert client_error(s3.upload_part, Bucket=bucket, Key="k", UploadId=upload_id,
                        PartNumber=1, Body=body,
                        ChecksumCRC32=checksum_b64("CRC32", b"other")) == ("BadDigest", 400)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == []
    response = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1,
                              Body=body, ChecksumCRC32=checksum_b64("CRC32", body))
    assert response["ETag"] == f'"{md5_hex(body)}"'


def test_reuploading_a_part_replaces_it(s3: Any, bucket: str) -> None:
    old, new, tail = body_of(MIN_PART), body_of(MIN_PART + 7), body_of(999)
    upload_id = start(s3, bucket, "k")
    old_part = put_part(s3, bucket, "k", upload_id, 1, old)
    tail_part = put_part(s3, bucket, "k", upload_id, 2, tail)
    new_part = put_part(s3, bucket, "k", upload_id, 1, new)
    listed = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (1, f'"{md5_hex(new)}"', len(new)), (2, f'"{md5_hex(tail)}"', len(tail))]
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=[old_part, tail_part]) == ("InvalidPart", 400)
    done = complete(s3, bucket, "k", upload_id, [new_part, tail_part])
    assert done["ETag"] == multipart_etag([new, tail])
    assert_bytes(read(s3, bucket, "k"), new + tail)


@ONE_KIND
@pytest.mark.parametrize("number", [0, 10001])
def test_part_number_out_of_range_is_invalid_argument(s3: Any, bucket: str,
                                                      number: int) -> None:
    upload_id = start(s3, bucket, "k")
    assert client_error(s3.upload_part, Bucket=bucket, Key="k", UploadId=upload_id,
                        PartNumber=number, Body=b"abc") == ("InvalidArgument", 400)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == []


@DATABASES
def test_part_to_unknown_upload_or_other_key_is_no_such_upload(s3: Any, bucket: str) -> None:
    assert client_error(s3.upload_part, Bucket=bucket, Key="k", UploadId="no-such-upload-id",
                        PartNumber=1, Body=b"abc") == ("NoSuchUpload", 404)
    upload_id = start(s3, bucket, "k")
    assert client_error(s3.upload_part, Bucket=bucket, Key="other", UploadId=upload_id,
                        PartNumber=1, Body=b"abc") == ("NoSuchUpload", 404)
    assert client_error(s3.list_parts, Bucket=bucket, Key="other",
                        UploadId=upload_id) == ("NoSuchUpload", 404)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == []


# -- CompleteMultipartUpload: the object ----------------------------------------------------


def fresh_bucket(s3: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def three_parts(s3: Any) -> Iterator[tuple[str, str, list[bytes]]]:
    """(bucket, key, part bodies): an object of three parts alone in its bucket, shared by
    the tests that only read it."""
    bucket = fresh_bucket(s3)
    bodies = [body_of(MIN_PART + 3), body_of(MIN_PART + 11), body_of(777)]
    upload_object(s3, bucket, "three", bodies)
    yield bucket, "three", bodies
    s3.delete_object(Bucket=bucket, Key="three")
    s3.delete_bucket(Bucket=bucket)


def test_completed_object_etag_and_bytes(
        s3: Any, three_parts: tuple[str, str, list[bytes]]) -> None:
    bucket, key, bodies = three_parts
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"] == multipart_etag(bodies)
    assert head["ContentLength"] == sum(map(len, bodies))
    assert "PartsCount" not in head  # only with partNumber
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed] == [
        (key, multipart_etag(bodies), sum(map(len, bodies)))]
    assert_bytes(read(s3, bucket, key), b"".join(bodies))


def test_ranges_across_part_boundaries(
        s3: Any, three_parts: tuple[str, str, list[bytes]]) -> None:
    bucket, key, bodies = three_parts
    whole = b"".join(bodies)
    total = len(whole)
    b1 = len(bodies[0])
    b2 = b1 + len(bodies[1])
    for first, last in [(b1 - 10, b1 + 9), (b1 - 1, b1), (b1, b1), (b2 - 5000, b2 + 100),
                        (b1 - 1, b2), (0, total - 1), (total - 777, total - 1), (10, 10)]:
        got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")
        assert status_of(got) == 206
        assert got["ContentRange"] == f"bytes {first}-{last}/{total}"
        assert got["ContentLength"] == last - first + 1
        assert_bytes(got["Body"].read(), whole[first:last + 1], f"range {first}-{last}")
    got = s3.get_object(Bucket=bucket, Key=key, Range="bytes=-800")
    assert got["ContentRange"] == f"bytes {total - 800}-{total - 1}/{total}"
    assert_bytes(got["Body"].read(), whole[-800:], "suffix range")
    got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={b2 - 3}-")
    assert got["ContentRange"] == f"bytes {b2 - 3}-{total - 1}/{total}"
    assert_bytes(got["Body"].read(), whole[b2 - 3:], "open range")


def test_part_number_reads(
        s3: Any, three_parts: tuple[str, str, list[bytes]]) -> None:
    bucket, key, bodies = three_parts
    total = sum(map(len, bodies))
    offset = 0
    for number, body in enumerate(bodies, 1):
        end = offset + len(body) - 1
        got = s3.get_object(Bucket=bucket, Key=key, PartNumber=number)
        assert status_of(got) == 206, number
        assert got["PartsCount"] == 3
        assert got["ContentRange"] == f"bytes {offset}-{end}/{total}"
        assert got["ContentLength"] == len(body)
        assert got["ETag"] == multipart_etag(bodies)
        assert_bytes(got["Body"].read(), body, f"part {number}")
        head = s3.head_object(Bucket=bucket, Key=key, PartNumber=number)
        assert status_of(head) == 206, number
        assert head["PartsCount"] == 3
        assert head["ContentRange"] == f"bytes {offset}-{end}/{total}"
        assert head["ContentLength"] == len(body)
        offset = end + 1
    assert client_error(s3.get_object, Bucket=bucket, Key=key,
                        PartNumber=4) == ("InvalidPartNumber", 416)
    assert client_error(s3.head_object, Bucket=bucket, Key=key, PartNumber=4) == ("416", 416)


def test_part_number_on_a_plain_object(s3: Any, bucket: str) -> None:
    data = body_of(5000)
    s3.put_object(Bucket=bucket, Key="plain", Body=data)
    got = s3.get_object(Bucket=bucket, Key="plain", PartNumber=1)
    assert status_of(got) in (200, 206)
    assert "PartsCount" not in got  # only for objects uploaded in parts
    assert got["ContentLength"] == len(data)
    assert_bytes(got["Body"].read(), data)
    head = s3.head_object(Bucket=bucket, Key="plain", PartNumber=1)
    assert head["ContentLength"] == len(data)
    assert client_error(s3.get_object, Bucket=bucket, Key="plain",
                        PartNumber=2) == ("InvalidPartNumber", 416)


def test_empty_last_part(s3: Any, bucket: str) -> None:
    """A last part may be empty; reading it by part number gives no bytes."""
    bodies = [body_of(MIN_PART), b""]
    upload_object(s3, bucket, "empty-tail", bodies)
    assert_bytes(read(s3, bucket, "empty-tail"), bodies[0])
    got = s3.get_object(Bucket=bucket, Key="empty-tail", PartNumber=1)
    assert got["PartsCount"] == 2
    assert_bytes(got["Body"].read(), bodies[0], "part 1")
    got = s3.get_object(Bucket=bucket, Key="empty-tail", PartNumber=2)
    assert got["PartsCount"] == 2
    assert got["ContentLength"] == 0
    assert_bytes(got["Body"].read(), b"", "part 2 (empty)")


# -- CompleteMultipartUpload: errors --------------------------------------------------------


@pytest.fixture
def two_part_upload(s3: Any, bucket: str) -> tuple[str, list[dict[str, Any]], list[bytes]]:
    bodies = [body_of(MIN_PART), body_of(2000)]
    upload_id = start(s3, bucket, "k")
    parts = [put_part(s3, bucket, "k", upload_id, i, b) for i, b in enumerate(bodies, 1)]
    return upload_id, parts, bodies


@ONE_KIND
def test_complete_malformed_xml(gateway: GatewayProcess, s3: Any, bucket: str,
                                two_part_upload: tuple[str, list[dict[str, Any]],
                                                       list[bytes]]) -> None:
    upload_id, parts, bodies = two_part_upload
    for body in [b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
                 b"this is not xml",
                 b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber>"
                 b"<ETag>x</ETag></Part></CompleteMultipartUpload>"]:
        response = raw_complete(gateway, bucket, "k", upload_id, body)
        assert response.status_code == 400, (body, response.content)
        assert error_code(response) == "MalformedXML", body
    # The upload is untouched.
    assert listed_part_numbers(s3, bucket, "k", upload_id) == [1, 2]
    complete(s3, bucket, "k", upload_id, parts)
    assert_bytes(read(s3, bucket, "k"), b"".join(bodies))


@ONE_KIND
def test_complete_with_no_parts_is_malformed_xml(
        gateway: GatewayProcess, s3: Any, bucket: str,
        two_part_upload: tuple[str, list[dict[str, Any]], list[bytes]]) -> None:
    upload_id, _parts, _bodies = two_part_upload
    response = raw_complete(gateway, bucket, "k", upload_id, complete_xml([]))
    assert response.status_code == 400, response.content
    assert error_code(response) == "MalformedXML"
    assert listed_part_numbers(s3, bucket, "k", upload_id) == [1, 2]


@DATABASES
def test_complete_errors_leave_the_upload_usable(
        s3: Any, bucket: str,
        two_part_upload: tuple[str, list[dict[str, Any]], list[bytes]]) -> None:
    upload_id, parts, bodies = two_part_upload
    p1, p2 = parts

    def attempt(chosen: list[dict[str, Any]]) -> tuple[str, int]:
        return client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                            parts=chosen)

    assert attempt([p1, {"PartNumber": 3, "ETag": p2["ETag"]}]) == ("InvalidPart", 400)
    assert attempt([p1, {"PartNumber": 2, "ETag": f'"{md5_hex(b"nope")}"'}]) == (
        "InvalidPart", 400)
    assert attempt([{"PartNumber": 1, "ETag": p2["ETag"]}, p2]) == ("InvalidPart", 400)
    assert attempt([p2, p1]) == ("InvalidPartOrder", 400)
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id="no-such-upload",
                        parts=[p1, p2]) == ("NoSuchUpload", 404)
    assert listed_part_numbers(s3, bucket, "k", upload_id) == [1, 2]
    assert client_error(s3.head_object, Bucket=bucket, Key="k") == ("404", 404)
    done = complete(s3, bucket, "k", upload_id, [p1, p2])
    assert done["ETag"] == multipart_etag(bodies)
    assert_bytes(read(s3, bucket, "k"), b"".join(bodies))


def test_entity_too_small_then_bigger_part_completes(s3: Any, bucket: str) -> None:
    small1, small2 = body_of(1000), body_of(2000)
    upload_id = start(s3, bucket, "k")
    p1 = put_part(s3, bucket, "k", upload_id, 1, small1)
    p2 = put_part(s3, bucket, "k", upload_id, 2, small2)
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=[p1, p2]) == ("EntityTooSmall", 400)
    assert client_error(s3.head_object, Bucket=bucket, Key="k") == ("404", 404)
    big = body_of(MIN_PART)
    p1 = put_part(s3, bucket, "k", upload_id, 1, big)
    done = complete(s3, bucket, "k", upload_id, [p1, p2])
    assert done["ETag"] == multipart_etag([big, small2])
    assert_bytes(read(s3, bucket, "k"), big + small2)


def test_completing_twice(s3: Any, bucket: str,
                          two_part_upload: tuple[str, list[dict[str, Any]],
                                                 list[bytes]]) -> None:
    upload_id, parts, bodies = two_part_upload
    done = complete(s3, bucket, "k", upload_id, parts)
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=parts) == ("NoSuchUpload", 404)
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ETag"] == done["ETag"] == multipart_etag(bodies)
    assert_bytes(read(s3, bucket, "k"), b"".join(bodies))
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@ONE_KIND
@pytest.mark.parametrize("form", ["quoted", "unquoted", "xml-escaped", "numeric-escaped"])
def test_complete_accepts_etag_forms(gateway: GatewayProcess, s3: Any, bucket: str,
                                     form: str) -> None:
    bodies = [body_of(MIN_PART), body_of(1234)]
    upload_id = start(s3, bucket, "forms")
    etags = [put_part(s3, bucket, "forms", upload_id, i, b)["ETag"].strip('"')
             for i, b in enumerate(bodies, 1)]
    written = {"quoted": '"{}"', "unquoted": "{}", "xml-escaped": "&quot;{}&quot;",
               "numeric-escaped": "&#34;{}&#34;"}[form]
    response = raw_complete(gateway, bucket, "forms", upload_id,
                            complete_xml([(i, written.format(e)) for i, e in
                                          enumerate(etags, 1)]))
    assert response.status_code == 200, response.content
    assert xml_text(response, "ETag") == multipart_etag(bodies)
    assert xml_text(response, "Key") == "forms"
    assert_bytes(read(s3, bucket, "forms"), b"".join(bodies))


@DATABASES
def test_complete_with_part_checksums(s3: Any, bucket: str) -> None:
    bodies = [body_of(MIN_PART), body_of(3333)]
    upload_id = start(s3, bucket, "k", ChecksumAlgorithm="CRC32")
    parts = []
    for number, body in enumerate(bodies, 1):
        response = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id,
                                  PartNumber=number, Body=body, ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": number, "ETag": response["ETag"],
                      "ChecksumCRC32": checksum_b64("CRC32", body)})
    wrong = [dict(parts[0], ChecksumCRC32=checksum_b64("CRC32", b"other")), parts[1]]
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=wrong) == ("InvalidPart", 400)
    wrong = [parts[0], dict(parts[1], ChecksumCRC32=checksum_b64("CRC32", b"other"))]
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=wrong) == ("InvalidPart", 400)
    done = complete(s3, bucket, "k", upload_id, parts)
    assert done["ChecksumCRC32"] == composite_checksum("CRC32", bodies)
    assert_bytes(read(s3, bucket, "k"), b"".join(bodies))


# -- completion over an existing key --------------------------------------------------------


def test_complete_replaces_an_existing_object(s3: Any, bucket: str) -> None:
    old = body_of(MIN_PART + 500)  # longer than the new object
    s3.put_object(Bucket=bucket, Key="k", Body=old, ContentType="text/old",
                  Metadata={"version": "old"})
    bodies = [body_of(MIN_PART), body_of(100)]
    upload_object(s3, bucket, "k", bodies, Metadata={"fresh": "yes"})
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ETag"] == multipart_etag(bodies)
    assert head["ContentLength"] == MIN_PART + 100
    assert head["Metadata"] == {"fresh": "yes"}
    assert head["ContentType"] != "text/old"
    assert_bytes(read(s3, bucket, "k"), b"".join(bodies))
    # Nothing of the old (longer) object is readable.
    assert client_error(s3.get_object, Bucket=bucket, Key="k",
                        Range=f"bytes={MIN_PART + 200}-{MIN_PART + 300}") == (
        "InvalidRange", 416)


def test_complete_if_none_match_on_existing_key(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"original")
    bodies = [body_of(MIN_PART), body_of(10)]
    upload_id = start(s3, bucket, "k")
    parts = [put_part(s3, bucket, "k", upload_id, i, b) for i, b in enumerate(bodies, 1)]
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=parts, IfNoneMatch="*") == ("PreconditionFailed", 412)
    assert read(s3, bucket, "k") == b"original"
    # On a new key the same condition holds.
    upload_id = start(s3, bucket, "new")
    parts = [put_part(s3, bucket, "new", upload_id, i, b) for i, b in enumerate(bodies, 1)]
    complete(s3, bucket, "new", upload_id, parts, IfNoneMatch="*")
    assert_bytes(read(s3, bucket, "new"), b"".join(bodies))


# -- AbortMultipartUpload -------------------------------------------------------------------


def test_abort(s3: Any, bucket: str) -> None:
    upload_id = start(s3, bucket, "k")
    part = put_part(s3, bucket, "k", upload_id, 1, b"abc")
    response = s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    assert status_of(response) == 204
    assert client_error(s3.upload_part, Bucket=bucket, Key="k", UploadId=upload_id,
                        PartNumber=2, Body=b"def") == ("NoSuchUpload", 404)
    assert client_error(s3.list_parts, Bucket=bucket, Key="k",
                        UploadId=upload_id) == ("NoSuchUpload", 404)
    assert client_error(complete, s3=s3, bucket=bucket, key="k", upload_id=upload_id,
                        parts=[part]) == ("NoSuchUpload", 404)
    assert client_error(s3.abort_multipart_upload, Bucket=bucket, Key="k",
                        UploadId=upload_id) == ("NoSuchUpload", 404)
    assert client_error(s3.abort_multipart_upload, Bucket=bucket, Key="k",
                        UploadId="never-existed") == ("NoSuchUpload", 404)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client_error(s3.head_object, Bucket=bucket, Key="k") == ("404", 404)


# -- ListParts ------------------------------------------------------------------------------


@DATABASES
def test_list_parts_pagination(s3: Any, bucket: str) -> None:
    upload_id = start(s3, bucket, "k")
    bodies = {n: body_of(1000 + n) for n in range(1, 8)}
    for n in [5, 1, 7, 3, 2, 6, 4]:
        put_part(s3, bucket, "k", upload_id, n, bodies[n])
    expected = [(n, f'"{md5_hex(bodies[n])}"', len(bodies[n])) for n in range(1, 8)]

    whole = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert whole["IsTruncated"] is False
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in whole["Parts"]] == expected
    assert whole["Bucket"] == bucket and whole["Key"] == "k" and whole["UploadId"] == upload_id

    seen: list[tuple[int, str, int]] = []
    marker = 0
    pages = 0
    while True:
        page = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2,
                             PartNumberMarker=marker)
        pages += 1
        assert page["MaxParts"] == 2
        assert page["PartNumberMarker"] == marker
        got = [(p["PartNumber"], p["ETag"], p["Size"]) for p in page["Parts"]]
        assert len(got) == (2 if page["IsTruncated"] else len(got))
        seen += got
        if not page["IsTruncated"]:
            break
        assert page["NextPartNumberMarker"] == got[-1][0]
        marker = page["NextPartNumberMarker"]
        assert pages < 10
    assert seen == expected
    assert pages == 4

    page = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, PartNumberMarker=5)
    assert [p["PartNumber"] for p in page["Parts"]] == [6, 7]
    assert page["IsTruncated"] is False

    paginated = [(p["PartNumber"], p["ETag"], p["Size"])
                 for page in s3.get_paginator("list_parts").paginate(
                     Bucket=bucket, Key="k", UploadId=upload_id,
                     PaginationConfig={"PageSize": 3})
                 for p in page["Parts"]]
    assert paginated == expected


# -- ListMultipartUploads -------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_uploads_bucket(s3: Any) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A bucket of uploads in progress alone, shared by the tests that only list them, and
    their (key, upload id) in S3's listing order: by key, then by initiation."""
    bucket = fresh_bucket(s3)
    created: list[tuple[str, str]] = []
    for key in ["b", "a/2", "c/x/y", "a/1", "b", "d", "a/2", "c/z", "b", "a/2"]:
        created.append((key, start(s3, bucket, key)))
    yield bucket, sorted(created, key=lambda kv: kv[0])  # stable: initiation order per key
    s3.delete_bucket(Bucket=bucket)  # with only uploads in it: they are aborted


def uploads_of(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]


def prefixes_of(page: dict[str, Any]) -> list[str]:
    return [p["Prefix"] for p in page.get("CommonPrefixes", [])]


@DATABASES
def test_list_uploads_order_prefix_delimiter(
        s3: Any, many_uploads_bucket: tuple[str, list[tuple[str, str]]]) -> None:
    bucket, many_uploads = many_uploads_bucket
    everything = s3.list_multipart_uploads(Bucket=bucket)
    assert uploads_of(everything) == many_uploads
    assert everything["IsTruncated"] is False

    page = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert uploads_of(page) == [kv for kv in many_uploads if kv[0].startswith("a/")]
    assert page["Prefix"] == "a/"

    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert uploads_of(page) == [kv for kv in many_uploads if "/" not in kv[0]]
    assert prefixes_of(page) == ["a/", "c/"]

    page = s3.list_multipart_uploads(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert uploads_of(page) == [kv for kv in many_uploads if kv[0] == "c/z"]
    assert prefixes_of(page) == ["c/x/"]


@DATABASES
def test_list_uploads_markers(
        s3: Any, many_uploads_bucket: tuple[str, list[tuple[str, str]]]) -> None:
    bucket, many_uploads = many_uploads_bucket
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a/2")
    assert uploads_of(page) == [kv for kv in many_uploads if kv[0] > "a/2"]
    assert page["KeyMarker"] == "a/2"

    a2 = [kv for kv in many_uploads if kv[0] == "a/2"]
    page = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="a/2",
                                     UploadIdMarker=a2[0][1])
    assert uploads_of(page) == a2[1:] + [kv for kv in many_uploads if kv[0] > "a/2"]
    assert page["UploadIdMarker"] == a2[0][1]


@DATABASES
def test_list_uploads_pagination(
        s3: Any, many_uploads_bucket: tuple[str, list[tuple[str, str]]]) -> None:
    bucket, many_uploads = many_uploads_bucket
    for size in [1, 2, 3, 4]:
        check_list_uploads_pagination(s3, bucket, many_uploads, size)


def check_list_uploads_pagination(s3: Any, bucket: str, many_uploads: list[tuple[str, str]],
                                  size: int) -> None:
    """Pages of ``size`` uploads: by hand with the markers, by boto3's paginator, and with a
    delimiter."""
    seen: list[tuple[str, str]] = []
    kwargs: dict[str, Any] = {}
    for _ in range(20):
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=size, **kwargs)
        assert page["MaxUploads"] == size
        got = uploads_of(page)
        seen += got
        if not page["IsTruncated"]:
            break
        assert len(got) == size
        assert (page["NextKeyMarker"], page["NextUploadIdMarker"]) == got[-1]
        kwargs = {"KeyMarker": page["NextKeyMarker"],
                  "UploadIdMarker": page["NextUploadIdMarker"]}
    else:
        pytest.fail(f"pagination by {size} did not end")
    assert seen == many_uploads, size

    paginated = [kv for page in s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": size}) for kv in uploads_of(page)]
    assert paginated == many_uploads, size

    uploads: list[tuple[str, str]] = []
    prefixes: list[str] = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": size}):
        uploads += uploads_of(page)
        prefixes += prefixes_of(page)
    assert uploads == [kv for kv in many_uploads if "/" not in kv[0]], size
    assert prefixes == ["a/", "c/"], size


# -- UploadPartCopy -------------------------------------------------------------------------


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    plain = body_of(MIN_PART)
    s3.put_object(Bucket=bucket, Key="src/plain", Body=plain)
    mp_bodies = [body_of(MIN_PART), body_of(MiB)]
    upload_object(s3, bucket, "src/multi", mp_bodies)
    multi = b"".join(mp_bodies)

    upload_id = start(s3, bucket, "dest")
    pieces: list[bytes] = []
    parts: list[dict[str, Any]] = []

    def copy(number: int, source: str, data: bytes, first: int | None = None,
             last: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        expected = data
        if first is not None and last is not None:
            kwargs["CopySourceRange"] = f"bytes={first}-{last}"
            expected = data[first:last + 1]
            assert len(expected) == last - first + 1  # (the test's own ranges are valid)
        response = s3.upload_part_copy(Bucket=bucket, Key="dest", UploadId=upload_id,
                                       PartNumber=number,
                                       CopySource={"Bucket": bucket, "Key": source}, **kwargs)
        etag = response["CopyPartResult"]["ETag"]
        assert etag == f'"{md5_hex(expected)}"', (number, source, first, last)
        pieces.append(expected)
        parts.append({"PartNumber": number, "ETag": etag})

    # 5 MiB spanning the source's part boundary (at 5 MiB).
    copy(1, "src/multi", multi, MiB, MIN_PART + MiB - 1)
    copy(2, "src/multi", multi)  # a whole multipart object
    copy(3, "src/plain", plain)  # a whole plain object
    copy(4, "src/multi", multi, MIN_PART - 100, MIN_PART + 99)  # small, last
    listed = s3.list_parts(Bucket=bucket, Key="dest", UploadId=upload_id)["Parts"]
    assert [(p["ETag"], p["Size"]) for p in listed] == [
        (f'"{md5_hex(p)}"', len(p)) for p in pieces]
    done = complete(s3, bucket, "dest", upload_id, parts)
    assert done["ETag"] == multipart_etag(pieces)
    assert_bytes(read(s3, bucket, "dest"), b"".join(pieces))


def test_upload_part_copy_errors(s3: Any, bucket: str) -> None:
    source = body_of(10_000)
    etag = s3.put_object(Bucket=bucket, Key="src", Body=source)["ETag"]
    upload_id = start(s3, bucket, "dest")
    common = {"Bucket": bucket, "Key": "dest", "UploadId": upload_id, "PartNumber": 1}
    src = {"Bucket": bucket, "Key": "src"}

    assert client_error(s3.upload_part_copy, CopySource=src, CopySourceIfMatch=f'"{"0" * 32}"',
                        **common) == ("PreconditionFailed", 412)
    assert client_error(s3.upload_part_copy, CopySource=src, CopySourceIfNoneMatch=etag,
                        **common) == ("PreconditionFailed", 412)
    assert client_error(s3.upload_part_copy, CopySource=src,
                        CopySourceRange="bytes=0-10000", **common) == ("InvalidArgument", 400)
    assert client_error(s3.upload_part_copy, CopySource=src,
                        CopySourceRange="bytes=20000-20010",
                        **common) == ("InvalidArgument", 400)
    assert client_error(s3.upload_part_copy, CopySource={"Bucket": bucket, "Key": "missing"},
                        **common) == ("NoSuchKey", 404)
    assert client_error(s3.upload_part_copy, CopySource=src, Bucket=bucket, Key="dest",
                        UploadId="no-such-upload", PartNumber=1) == ("NoSuchUpload", 404)
    assert listed_part_numbers(s3, bucket, "dest", upload_id) == []

    response = s3.upload_part_copy(CopySource=src, CopySourceIfMatch=etag,
                                   CopySourceRange="bytes=9000-9999", **common)
    assert response["CopyPartResult"]["ETag"] == f'"{md5_hex(source[9000:])}"'
    done = complete(s3, bucket, "dest", upload_id,
                    [{"PartNumber": 1, "ETag": response["CopyPartResult"]["ETag"]}])
    assert done["ETag"] == multipart_etag([source[9000:]])
    assert_bytes(read(s3, bucket, "dest"), source[9000:])


# -- DeleteBucket ---------------------------------------------------------------------------


def test_delete_bucket_with_only_unfinished_uploads(s3: Any) -> None:
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    first = start(s3, name, "a")
    put_part(s3, name, "a", first, 1, b"one")
    second = start(s3, name, "b/c")
    put_part(s3, name, "b/c", second, 1, body_of(MIN_PART))
    put_part(s3, name, "b/c", second, 2, b"two")
    response = s3.delete_bucket(Bucket=name)
    assert status_of(response) == 204
    assert client_error(s3.head_bucket, Bucket=name) == ("404", 404)
    # A bucket of the same name starts empty: the uploads were aborted, not hidden.
    s3.create_bucket(Bucket=name)
    try:
        assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
        assert client_error(s3.list_parts, Bucket=name, Key="a",
                            UploadId=first) == ("NoSuchUpload", 404)
        assert client_error(s3.upload_part, Bucket=name, Key="b/c", UploadId=second,
                            PartNumber=3, Body=b"x") == ("NoSuchUpload", 404)
    finally:
        s3.delete_bucket(Bucket=name)


# -- property: any layout of parts reads back byte-exact ------------------------------------


# Where the bytes of the parts go: fs, and an upstream (moto). Not on s3-gateway: what it
# adds is a gateway on fs as the upstream, which the fs run checks directly (every part here
# is large enough for either upstream). Not on postgresql: whatever the layout, the database
# holds the same rows (parts, their attempts, offsets), which the fixed layouts above check
# there (re-uploaded parts, ranges, part-number reads).
@pytest.mark.upstreams("fs", "s3-moto")
@settings(max_examples=8, deadline=None, database=None, derandomize=True,
          # No shrinking: every example moves megabytes; a failure prints its draws anyway.
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_property_any_part_layout_reads_exact(s3: Any, bucket: str, data: Any) -> None:
    count = data.draw(st.integers(1, 5), label="parts")
    sizes = [data.draw(st.integers(MIN_PART, MIN_PART + 64 * KiB), label=f"size {n}")
             for n in range(1, count)]
    sizes.append(data.draw(st.integers(0, 2 * MiB), label="last size"))
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    order = data.draw(st.permutations(range(1, count + 1)), label="order")
    redo = data.draw(st.sets(st.sampled_from(range(1, count + 1))), label="re-uploaded")
    rng = random.Random(seed)
    bodies = [rng.randbytes(size) for size in sizes]
    key = f"prop/{uuid.uuid4().hex}"

    upload_id = start(s3, bucket, key)
    for number in order:  # out of order; re-uploaded parts first get other bytes
        if number in redo:
            junk = rng.randbytes(rng.randrange(0, 64 * KiB))
            put_part(s3, bucket, key, upload_id, number, junk)
        else:
            put_part(s3, bucket, key, upload_id, number, bodies[number - 1])
    for number in sorted(redo, reverse=True):
        put_part(s3, bucket, key, upload_id, number, bodies[number - 1])
    parts = [{"PartNumber": n, "ETag": f'"{md5_hex(b)}"'} for n, b in enumerate(bodies, 1)]
    done = complete(s3, bucket, key, upload_id, parts)
    assert done["ETag"] == multipart_etag(bodies)

    whole = b"".join(bodies)
    total = len(whole)
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == total
    assert_bytes(read(s3, bucket, key), whole, "whole object")
    if total:
        spans = data.draw(st.lists(st.tuples(st.integers(0, total - 1),
                                             st.integers(0, total - 1)),
                                   min_size=1, max_size=6), label="ranges")
        for a, b in spans:
            first, last = min(a, b), max(a, b)
            got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")
            assert got["ContentRange"] == f"bytes {first}-{last}/{total}"
            assert_bytes(got["Body"].read(), whole[first:last + 1], f"range {first}-{last}")
    for number, body in enumerate(bodies, 1):
        got = s3.get_object(Bucket=bucket, Key=key, PartNumber=number)
        assert got["PartsCount"] == count
        assert got["ContentLength"] == len(body)
        assert_bytes(got["Body"].read(), body, f"part {number}")
