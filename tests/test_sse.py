"""Server-side encryption over S3, end to end against a real gateway (boto3): SSE-S3 by
header and by bucket default (Put/Get/DeleteBucketEncryption), SSE-C with S3's key checks
on every operation that takes a key, copies between encryptions, multipart uploads, POST
forms, the JSON API; what lies on disk is ciphertext; ranged GETs of a 100 MiB encrypted
object in flat memory; the same on an S3 upstream backend; fsck; and master-key rotation
from the CLI while objects stay readable and their blobs untouched."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import psutil
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests._server import GatewayProcess, cli_json, run_cli
from tests.conftest import UpstreamPool, make_client

MiB = 1024 * 1024
CHUNK = 64 * 1024  # the gateway's encryption chunk
PART = 5 * MiB
ENC = "x-amz-server-side-encryption"
C_ALG = "x-amz-server-side-encryption-customer-algorithm"
C_KEY = "x-amz-server-side-encryption-customer-key"
C_MD5 = "x-amz-server-side-encryption-customer-key-md5"


# -- helpers -------------------------------------------------------------------------------


def failure(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int]:
    """A boto3 call that must fail: its error code and status (HEAD: the status twice)."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def raw_headers(answer: dict[str, Any]) -> dict[str, str]:
    return dict(answer["ResponseMetadata"]["HTTPHeaders"])


def ssec(key: bytes) -> dict[str, Any]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_ssec(key: bytes) -> dict[str, Any]:
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def md5_b64(raw: bytes) -> str:
    return b64(hashlib.md5(raw).digest())


def key_headers(key: bytes, md5: str | None = None) -> dict[str, str]:
    return {C_ALG: "AES256", C_KEY: b64(key), C_MD5: md5 if md5 is not None else md5_b64(key)}


def signed(server: GatewayProcess, method: str, path: str, query: str = "",
           body: bytes = b"", extra: dict[str, str] | None = None) -> httpx.Response:
    """A SigV4-signed request built by hand, for what boto3 would not send."""
    url = f"{server.url}{quote(path, safe='/~')}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(extra or {}))
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3",
                "us-east-1").add_auth(request)
    return httpx.request(method, url, headers=dict(request.headers.items()), content=body,
                         timeout=30)


def error_code(answer: httpx.Response) -> str:
    text = answer.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def stored_files(data_dir: Path) -> set[Path]:
    """Every file the local backend keeps (blobs, multipart segments, manifests)."""
    return {p for p in (data_dir / "objects").rglob("*") if p.is_file()}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def files_containing(paths: set[Path], needle: bytes) -> list[Path]:
    """The files holding ``needle``, read a MiB at a time (overlapping by the needle)."""
    found = []
    for path in paths:
        with path.open("rb") as f:
            tail = b""
            while block := f.read(MiB):
                if needle in tail + block:
                    found.append(path)
                    break
                tail = block[-len(needle):]
    return found


class Pattern:
    """Deterministic bytes of any length, made a MiB block at a time (never held whole):
    ``read``/``seek`` serve them as a file does (a body boto3 streams), ``digest`` hashes
    any range of them."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.pos = 0
        self._cache: tuple[int, bytes] | None = None

    def block(self, index: int) -> bytes:
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, random.Random(self.seed * 100_003 + index).randbytes(MiB))
        return self._cache[1]

    def slice(self, start: int, end: int) -> Iterator[bytes]:
        pos = start
        while pos < end:
            index, offset = divmod(pos, MiB)
            piece = self.block(index)[offset:offset + min(end - pos, MiB - offset)]
            yield piece
            pos += len(piece)

    def digest(self, start: int, end: int, algorithm: str = "sha256") -> str:
        h = hashlib.new(algorithm)
        for piece in self.slice(start, end):
            h.update(piece)
        return h.hexdigest()

    def range(self, start: int, end: int) -> bytes:
        return b"".join(self.slice(start, end))

    def read(self, n: int | None = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        data = self.range(self.pos, end)
        self.pos = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos


class PeakRss:
    """The peak resident memory of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = int(self.process.memory_info().rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, int(self.process.memory_info().rss))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MiB


def check_ranges(s3: Any, bucket: str, key: str, pattern: Pattern,
                 ranges: list[str], **extra: Any) -> None:
    """Each ``Range`` returns exactly the pattern's bytes, with S3's Content-Range."""
    size = pattern.size
    for spec in ranges:
        first_text, last_text = spec.removeprefix("bytes=").split("-")
        if not first_text:
            first, last = size - int(last_text), size - 1
        else:
            first = int(first_text)
            last = min(int(last_text), size - 1) if last_text else size - 1
        got = s3.get_object(Bucket=bucket, Key=key, Range=spec, **extra)
        assert got["ContentRange"] == f"bytes {first}-{last}/{size}", spec
        assert got["ContentLength"] == last - first + 1, spec
        digest = hashlib.sha256()
        for piece in got["Body"].iter_chunks(MiB):
            digest.update(piece)
        assert digest.hexdigest() == pattern.digest(first, last + 1), spec


def multipart(s3: Any, bucket: str, key: str, parts: list[bytes], *,
              create: dict[str, Any] | None = None, part: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Create, upload ``parts``, complete: the three answers (the parts' in a list)."""
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, **(create or {}))
    uploaded = [s3.upload_part(Bucket=bucket, Key=key, UploadId=created["UploadId"],
                               PartNumber=n, Body=body, **(part or {}))
                for n, body in enumerate(parts, 1)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=created["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": p["ETag"]}
                                   for n, p in enumerate(uploaded, 1)]})
    return created, uploaded, done


def multipart_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of this module's own (on the local filesystem): its data dir holds the
    blobs the tests look at and the master key the rotation test rotates."""
    gateway = GatewayProcess(tmp_path_factory.mktemp("sse") / "data").start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def s3(server: GatewayProcess) -> Any:
    return make_client(server)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"sse-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


# -- SSE-S3 --------------------------------------------------------------------------------


def test_sse_s3_put_get_head(s3: Any, server: GatewayProcess, bucket: str) -> None:
    body = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="a.bin", Body=body, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'  # the plaintext's MD5
    got = s3.get_object(Bucket=bucket, Key="a.bin")
    assert got["ServerSideEncryption"] == "AES256"
    assert got["ContentLength"] == len(body) and got["Body"].read() == body
    head = s3.head_object(Bucket=bucket, Key="a.bin")
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == len(body)
    ranged = s3.get_object(Bucket=bucket, Key="a.bin", Range="bytes=65530-65545")
    assert ranged["Body"].read() == body[65530:65546]
    assert ranged["ContentRange"] == f"bytes 65530-65545/{len(body)}"
    assert ranged["ServerSideEncryption"] == "AES256"
    by_part = s3.get_object(Bucket=bucket, Key="a.bin", PartNumber=1)
    assert by_part["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("a.bin", len(body))]  # in clear
    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"", ServerSideEncryption="AES256")
    assert empty["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""

    # An object in clear says nothing about encryption.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"clear")
    assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key="plain")
    # A read names no encryption (S3: 400); KMS needs a KMS (501, as MinIO without one);
    # an unknown algorithm, or SSE-S3 and SSE-C at once, are 400.
    answer = signed(server, "GET", f"/{bucket}/a.bin", extra={ENC: "AES256"})
    assert (answer.status_code, error_code(answer)) == (400, "InvalidArgument")
    assert failure(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                   ServerSideEncryption="aws:kms") == ("NotImplemented", 501)
    answer = signed(server, "PUT", f"/{bucket}/k", body=b"x", extra={ENC: "AES128"})
    assert (answer.status_code, error_code(answer)) == (400, "InvalidArgument")
    assert failure(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                   ServerSideEncryption="AES256",
                   **ssec(os.urandom(32))) == ("InvalidArgument", 400)
    assert "k" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}


def test_bucket_default_encryption(s3: Any, server: GatewayProcess, bucket: str) -> None:
    assert failure(s3.get_bucket_encryption, Bucket=bucket) == (
        "ServerSideEncryptionConfigurationNotFoundError", 404)
    s3.put_object(Bucket=bucket, Key="before", Body=b"written in clear")

    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    s3.put_bucket_encryption(Bucket=bucket,
                             ServerSideEncryptionConfiguration={"Rules": [rule]})
    config = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert config["Rules"] == [{**rule, "BucketKeyEnabled": False}]

    put = s3.put_object(Bucket=bucket, Key="after", Body=b"encrypted by default")
    assert put["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"encrypted by default"
    assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key="before")
    # An explicit SSE-C write wins over the default.
    key = os.urandom(32)
    put = s3.put_object(Bucket=bucket, Key="mine", Body=b"customer", **ssec(key))
    assert "ServerSideEncryption" not in put and put["SSECustomerKeyMD5"] == md5_b64(key)
    # A multipart upload and a copy get the default too.
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    assert created["ServerSideEncryption"] == "AES256"
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=created["UploadId"])
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/before")
    assert copied["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"written in clear"

    # Errors, each leaving the configuration as it was.
    kms = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}
    assert failure(s3.put_bucket_encryption, Bucket=bucket,
                   ServerSideEncryptionConfiguration={"Rules": [kms]}) == (
        "NotImplemented", 501)
    with_kms_key = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256",
                                                           "KMSMasterKeyID": "k1"}}
    assert failure(s3.put_bucket_encryption, Bucket=bucket,
                   ServerSideEncryptionConfiguration={"Rules": [with_kms_key]}) == (
        "InvalidArgument", 400)
    aes = (b"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
           b"</ApplyServerSideEncryptionByDefault>")
    for document in (
        b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
        b"<SSEAlgorithm>ROT13</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
        b"</ServerSideEncryptionConfiguration>",
        b"<ServerSideEncryptionConfiguration></ServerSideEncryptionConfiguration>",
        b"<ServerSideEncryptionConfiguration><Rule>" + aes + b"</Rule><Rule>" + aes
        + b"</Rule></ServerSideEncryptionConfiguration>",
        b"<ServerSideEncryptionConfiguration><Rule>" + aes + b"<BucketKeyEnabled>maybe"
        b"</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>",
        b"<Tagging/>",
        b"not xml",
    ):
        answer = signed(server, "PUT", f"/{bucket}", "encryption", document)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), document
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] \
        == config

    # Bucket configuration: another user may neither read nor change it.
    user = f"eve{uuid.uuid4().hex[:8]}"
    assert run_cli(server.data_dir, "user", "add", user).returncode == 0
    keys = cli_json(server.data_dir, "key", "create", "--user", user)
    eve = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=keys["access_key"],
                       aws_secret_access_key=keys["secret_key"])
    assert failure(eve.get_bucket_encryption, Bucket=bucket) == ("AccessDenied", 403)
    assert failure(eve.delete_bucket_encryption, Bucket=bucket) == ("AccessDenied", 403)

    s3.delete_bucket_encryption(Bucket=bucket)
    s3.delete_bucket_encryption(Bucket=bucket)  # idempotent
    assert failure(s3.get_bucket_encryption, Bucket=bucket)[1] == 404
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="later", Body=b"x")
    # What was encrypted stays encrypted, and readable.
    assert s3.head_object(Bucket=bucket, Key="after")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"encrypted by default"


# -- SSE-C ---------------------------------------------------------------------------------


def test_sse_c_put_get_head_and_key_checks(s3: Any, server: GatewayProcess,
                                           bucket: str) -> None:
    key, other = os.urandom(32), os.urandom(32)
    body = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="c.bin", Body=body, **ssec(key))
    assert (put["SSECustomerAlgorithm"], put["SSECustomerKeyMD5"]) == ("AES256", md5_b64(key))
    assert "ServerSideEncryption" not in put
    got = s3.get_object(Bucket=bucket, Key="c.bin", **ssec(key))
    assert got["Body"].read() == body
    assert (got["SSECustomerAlgorithm"], got["SSECustomerKeyMD5"]) == ("AES256",
                                                                        md5_b64(key))
    head = s3.head_object(Bucket=bucket, Key="c.bin", **ssec(key))
    assert head["ContentLength"] == len(body) and head["SSECustomerKeyMD5"] == md5_b64(key)
    ranged = s3.get_object(Bucket=bucket, Key="c.bin", Range="bytes=131000-131100",
                           **ssec(key))
    assert ranged["Body"].read() == body[131000:131101]

    # No key: 400 InvalidRequest; the wrong one: 403 AccessDenied (HEAD answers the same).
    assert failure(s3.get_object, Bucket=bucket, Key="c.bin") == ("InvalidRequest", 400)
    assert failure(s3.head_object, Bucket=bucket, Key="c.bin")[1] == 400
    assert failure(s3.get_object, Bucket=bucket, Key="c.bin", **ssec(other)) == (
        "AccessDenied", 403)
    assert failure(s3.head_object, Bucket=bucket, Key="c.bin", **ssec(other))[1] == 403
    assert failure(s3.get_object, Bucket=bucket, Key="c.bin", Range="bytes=0-9",
                   **ssec(other)) == ("AccessDenied", 403)
    # A key for an object stored in clear is refused too.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"clear")
    assert failure(s3.get_object, Bucket=bucket, Key="plain", **ssec(key)) == (
        "InvalidRequest", 400)

    # The headers are checked as S3 checks them, before anything is stored.
    bad = [
        (key_headers(key, md5=md5_b64(other)), "InvalidArgument"),  # the MD5 of another key
        ({C_ALG: "AES256", C_KEY: b64(key)}, "InvalidArgument"),  # no MD5
        ({C_KEY: b64(key), C_MD5: md5_b64(key)}, "InvalidArgument"),  # no algorithm
        ({**key_headers(key), C_ALG: "AES128"}, "InvalidEncryptionAlgorithmError"),
        (key_headers(key[:16]), "InvalidArgument"),  # 128 bits
        ({**key_headers(key), C_KEY: "%%%"}, "InvalidArgument"),
    ]
    for extra, code in bad:
        answer = signed(server, "PUT", f"/{bucket}/refused", body=b"x", extra=extra)
        assert (answer.status_code, error_code(answer)) == (400, code), extra
        answer = signed(server, "GET", f"/{bucket}/c.bin", extra=extra)
        assert (answer.status_code, error_code(answer)) == (400, code), extra
    assert "refused" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert signed(server, "GET", f"/{bucket}/c.bin", extra=key_headers(key)).content == body


def test_copies_between_encryptions(s3: Any, server: GatewayProcess, bucket: str) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    body = os.urandom(150_000)
    s3.put_object(Bucket=bucket, Key="src-c", Body=body, **ssec(k1))
    s3.put_object(Bucket=bucket, Key="src-s3", Body=body, ServerSideEncryption="AES256")
    src_c, src_s3 = f"{bucket}/src-c", f"{bucket}/src-s3"

    # SSE-C -> SSE-S3 (the source's key in the copy-source headers).
    done = s3.copy_object(Bucket=bucket, Key="c-to-s3", CopySource=src_c,
                          ServerSideEncryption="AES256", **copy_ssec(k1))
    assert done["ServerSideEncryption"] == "AES256"
    assert done["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="c-to-s3")["Body"].read() == body
    # The source's key is needed, and must be the right one.
    assert failure(s3.copy_object, Bucket=bucket, Key="x", CopySource=src_c) == (
        "InvalidRequest", 400)
    assert failure(s3.copy_object, Bucket=bucket, Key="x", CopySource=src_c,
                   **copy_ssec(k2)) == ("AccessDenied", 403)
    assert failure(s3.copy_object, Bucket=bucket, Key="x", CopySource=src_s3,
                   **copy_ssec(k1)) == ("InvalidRequest", 400)

    # SSE-S3 -> SSE-C: readable with the new key only.
    done = s3.copy_object(Bucket=bucket, Key="s3-to-c", CopySource=src_s3, **ssec(k2))
    assert done["SSECustomerKeyMD5"] == md5_b64(k2) and "ServerSideEncryption" not in done
    assert s3.get_object(Bucket=bucket, Key="s3-to-c", **ssec(k2))["Body"].read() == body
    assert failure(s3.get_object, Bucket=bucket, Key="s3-to-c")[1] == 400

    # Encrypted the same way, a copy shares the data key: its blob is the source's bytes.
    # Under another key it is encrypted anew: other bytes, and the old key opens nothing.
    files = {p: file_digest(p) for p in stored_files(server.data_dir)}
    same_c = s3.copy_object(Bucket=bucket, Key="same-c", CopySource=src_c, **ssec(k1),
                            **copy_ssec(k1))
    assert same_c["SSECustomerKeyMD5"] == md5_b64(k1)
    same_s3 = s3.copy_object(Bucket=bucket, Key="same-s3", CopySource=src_s3,
                             ServerSideEncryption="AES256")
    assert same_s3["ServerSideEncryption"] == "AES256"
    s3.copy_object(Bucket=bucket, Key="c-to-c2", CopySource=src_c, **ssec(k2),
                   **copy_ssec(k1))
    new = {p: file_digest(p) for p in stored_files(server.data_dir) - set(files)}
    assert len(new) == 3
    old_digests = set(files.values())
    assert sorted(d in old_digests for d in new.values()) == [False, True, True]
    assert s3.get_object(Bucket=bucket, Key="same-c", **ssec(k1))["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="same-s3")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="c-to-c2", **ssec(k2))["Body"].read() == body
    assert failure(s3.get_object, Bucket=bucket, Key="c-to-c2", **ssec(k1)) == (
        "AccessDenied", 403)
    # A copy with no encryption asked for is stored in clear (the source's is not inherited).
    s3.copy_object(Bucket=bucket, Key="c-to-clear", CopySource=src_c, **copy_ssec(k1))
    clear = s3.get_object(Bucket=bucket, Key="c-to-clear")
    assert "ServerSideEncryption" not in clear and clear["Body"].read() == body

    # Copying an object onto itself is allowed when it changes the encryption (only).
    s3.put_object(Bucket=bucket, Key="in-place", Body=b"to be encrypted")
    assert failure(s3.copy_object, Bucket=bucket, Key="in-place",
                   CopySource=f"{bucket}/in-place") == ("InvalidRequest", 400)
    s3.copy_object(Bucket=bucket, Key="in-place", CopySource=f"{bucket}/in-place",
                   ServerSideEncryption="AES256")
    got = s3.get_object(Bucket=bucket, Key="in-place")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"to be encrypted"


# -- multipart -----------------------------------------------------------------------------


def test_multipart_sse_s3(s3: Any, bucket: str) -> None:
    parts = [os.urandom(PART + 100), os.urandom(PART), os.urandom(1234)]
    created, uploaded, done = multipart(s3, bucket, "mp", parts,
                                        create={"ServerSideEncryption": "AES256"})
    assert created["ServerSideEncryption"] == "AES256"
    assert [p["ServerSideEncryption"] for p in uploaded] == ["AES256"] * 3
    assert done["ServerSideEncryption"] == "AES256"
    assert done["ETag"] == multipart_etag(parts)
    whole = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == whole
    # Ranges across the parts' boundaries; parts by number.
    for first, last in [(PART + 90, PART + 110), (PART - 5, 2 * PART + 200),
                        (len(whole) - 1300, len(whole) - 1), (0, 0)]:
        ranged = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}")
        assert ranged["Body"].read() == whole[first:last + 1], (first, last)
    for number, body in enumerate(parts, 1):
        part = s3.get_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert part["Body"].read() == body and part["PartsCount"] == 3
    head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert head["ContentLength"] == 1234 and head["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == len(whole)

    # ListParts shows the parts' sizes in clear, as S3 does.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="listed",
                                        ServerSideEncryption="AES256")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="listed", UploadId=upload, PartNumber=1, Body=parts[2])
    listed = s3.list_parts(Bucket=bucket, Key="listed", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 1234)]
    s3.abort_multipart_upload(Bucket=bucket, Key="listed", UploadId=upload)


def test_multipart_sse_c(s3: Any, bucket: str) -> None:
    key, other, source_key = os.urandom(32), os.urandom(32), os.urandom(32)
    first, middle, tail = os.urandom(PART), os.urandom(PART), os.urandom(70_000)
    s3.put_object(Bucket=bucket, Key="src-s3", Body=first, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="src-c", Body=tail + b"unused", **ssec(source_key))

    created = s3.create_multipart_upload(Bucket=bucket, Key="mpc", **ssec(key))
    assert created["SSECustomerKeyMD5"] == md5_b64(key)
    upload = created["UploadId"]
    # Every part repeats the upload's key.
    assert failure(s3.upload_part, Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=2,
                   Body=b"x") == ("InvalidRequest", 400)
    assert failure(s3.upload_part, Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=2,
                   Body=b"x", **ssec(other)) == ("InvalidRequest", 400)
    # Part 1 copied from an SSE-S3 object, part 3 from (a range of) an SSE-C one, which
    # takes both keys.
    one = s3.upload_part_copy(Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=1,
                              CopySource=f"{bucket}/src-s3", **ssec(key))
    assert one["SSECustomerKeyMD5"] == md5_b64(key)
    two = s3.upload_part(Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=2,
                         Body=middle, **ssec(key))
    assert two["SSECustomerKeyMD5"] == md5_b64(key)
    assert failure(s3.upload_part_copy, Bucket=bucket, Key="mpc", UploadId=upload,
                   PartNumber=3, CopySource=f"{bucket}/src-c",
                   CopySourceRange="bytes=0-69999", **ssec(key)) == ("InvalidRequest", 400)
    three = s3.upload_part_copy(Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=3,
                                CopySource=f"{bucket}/src-c",
                                CopySourceRange="bytes=0-69999", **ssec(key),
                                **copy_ssec(source_key))
    etags = [one["CopyPartResult"]["ETag"], two["ETag"], three["CopyPartResult"]["ETag"]]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mpc", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                   for n, e in enumerate(etags, 1)]})
    headers = raw_headers(done)
    assert (headers[C_ALG], headers[C_MD5]) == ("AES256", md5_b64(key))
    assert done["ETag"] == multipart_etag([first, middle, tail])

    whole = first + middle + tail
    assert s3.get_object(Bucket=bucket, Key="mpc", **ssec(key))["Body"].read() == whole
    ranged = s3.get_object(Bucket=bucket, Key="mpc", Range=f"bytes={PART - 10}-{PART + 10}",
                           **ssec(key))
    assert ranged["Body"].read() == whole[PART - 10:PART + 11]
    part = s3.get_object(Bucket=bucket, Key="mpc", PartNumber=3, **ssec(key))
    assert part["Body"].read() == tail
    assert part["ContentRange"] == f"bytes {2 * PART}-{len(whole) - 1}/{len(whole)}"
    assert failure(s3.get_object, Bucket=bucket, Key="mpc", PartNumber=2) == (
        "InvalidRequest", 400)
    assert failure(s3.get_object, Bucket=bucket, Key="mpc", **ssec(other)) == (
        "AccessDenied", 403)


def test_post_form_with_encryption(s3: Any, bucket: str) -> None:
    fields = {ENC: "AES256"}
    form = s3.generate_presigned_post(bucket, "form.txt", Fields=fields,
                                      Conditions=[fields])
    posted = httpx.post(form["url"], data=form["fields"],
                        files={"file": ("form.txt", b"from a form")}, timeout=30)
    assert posted.status_code == 204, posted.text
    assert posted.headers[ENC] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="form.txt")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"from a form"

    key = os.urandom(32)
    fields = key_headers(key)
    form = s3.generate_presigned_post(bucket, "form-c.txt", Fields=fields,
                                      Conditions=[{k: v} for k, v in fields.items()])
    posted = httpx.post(form["url"], data=form["fields"],
                        files={"file": ("form-c.txt", b"customer form")}, timeout=30)
    assert posted.status_code == 204, posted.text
    assert s3.get_object(Bucket=bucket, Key="form-c.txt", **ssec(key))["Body"].read() == \
        b"customer form"
    assert failure(s3.get_object, Bucket=bucket, Key="form-c.txt")[1] == 400


def test_json_api_writes_with_the_default_and_refuses_sse_c(
        s3: Any, server: GatewayProcess, bucket: str) -> None:
    token = cli_json(server.data_dir, "token", "create", "--user", "admin", "--name",
                     uuid.uuid4().hex[:8], "--permission=storage:read",
                     "--permission=storage:write")["token"]
    api = httpx.Client(base_url=f"{server.url}/api/v1/storage",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    with api:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        objects = f"/buckets/{bucket}/objects"
        assert api.put(f"{objects}/via-api.txt", content=b"json api").status_code == 200
        head = s3.head_object(Bucket=bucket, Key="via-api.txt")
        assert head["ServerSideEncryption"] == "AES256"
        read = api.get(f"{objects}/via-api.txt")
        assert (read.status_code, read.content) == (200, b"json api")
        ranged = api.get(f"{objects}/via-api.txt", headers={"Range": "bytes=5-7"})
        assert (ranged.status_code, ranged.content) == (206, b"api")
        # SSE-C is S3's: the JSON API has no way to send the key.
        s3.put_object(Bucket=bucket, Key="secret", Body=b"s3 only", **ssec(os.urandom(32)))
        refused = api.get(f"{objects}/secret")
        assert refused.status_code == 400, refused.text
        assert api.head(f"{objects}/secret").status_code == 400


def test_package_inspection_sees_the_plaintext(s3: Any, bucket: str) -> None:
    """A bot package's folders take only the content their rules name: the bytes are
    judged before they are encrypted (PUT), and read back decrypted where they are judged
    once stored (a completed multipart upload, a copy)."""
    package = f"{bucket}.gbai"
    s3.create_bucket(Bucket=package)
    s3.put_bucket_encryption(Bucket=package, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
    key = os.urandom(32)

    put = s3.put_object(Bucket=package, Key=".gbkb/manual.pdf", Body=pdf + b" " * 200)
    assert put["ServerSideEncryption"] == "AES256"
    assert failure(s3.put_object, Bucket=package, Key=".gbkb/fake.pdf",
                   Body=b"not a pdf at all") == ("UnsupportedFileType", 415)
    body = pdf + os.urandom(PART)
    done = multipart(s3, bucket=package, key=".gbkb/big.pdf", parts=[body, b"end"])[2]
    assert done["ServerSideEncryption"] == "AES256"
    s3.put_object(Bucket=bucket, Key="doc", Body=pdf, **ssec(key))
    s3.copy_object(Bucket=package, Key=".gbkb/copied.pdf", CopySource=f"{bucket}/doc",
                   **copy_ssec(key))
    assert s3.get_object(Bucket=package, Key=".gbkb/copied.pdf")["Body"].read() == pdf
    s3.put_object(Bucket=bucket, Key="fake", Body=b"not a pdf", **ssec(key))
    assert failure(s3.copy_object, Bucket=package, Key=".gbkb/fake2.pdf",
                   CopySource=f"{bucket}/fake", **copy_ssec(key)) == (
        "UnsupportedFileType", 415)

    # An SSE-C upload is judged at completion, which then needs the key (S3 takes it there).
    upload = s3.create_multipart_upload(Bucket=package, Key=".gbkb/c.pdf",
                                        **ssec(key))["UploadId"]
    etag = s3.upload_part(Bucket=package, Key=".gbkb/c.pdf", UploadId=upload, PartNumber=1,
                          Body=pdf, **ssec(key))["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    assert failure(s3.complete_multipart_upload, Bucket=package, Key=".gbkb/c.pdf",
                   UploadId=upload, MultipartUpload=parts) == ("InvalidRequest", 400)
    s3.complete_multipart_upload(Bucket=package, Key=".gbkb/c.pdf", UploadId=upload,
                                 MultipartUpload=parts, **ssec(key))
    assert s3.get_object(Bucket=package, Key=".gbkb/c.pdf", **ssec(key))["Body"].read() == pdf
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=package)["Contents"]}
    assert listed == {".gbkb/manual.pdf", ".gbkb/big.pdf", ".gbkb/copied.pdf", ".gbkb/c.pdf"}


# -- on disk -------------------------------------------------------------------------------


def test_blobs_on_disk_hold_no_plaintext(s3: Any, server: GatewayProcess,
                                         bucket: str) -> None:
    before = stored_files(server.data_dir)
    clear, sse_s3, sse_c, multi = (f"{name}-{uuid.uuid4().hex}".encode()
                                   for name in ("CLEAR", "SSES3", "SSEC", "MULTI"))
    key = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="clear", Body=clear * 5000)
    s3.put_object(Bucket=bucket, Key="s3", Body=sse_s3 * 5000, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="c", Body=sse_c * 5000, **ssec(key))
    body = (multi * (PART // len(multi) + 1))[:PART]
    multipart(s3, bucket, "m", [body, multi * 10], create=ssec(key), part=ssec(key))
    s3.copy_object(Bucket=bucket, Key="c-copy", CopySource=f"{bucket}/clear",
                   ServerSideEncryption="AES256")
    written = stored_files(server.data_dir) - before
    assert len(written) >= 5
    # The control: a blob in clear shows its bytes (so the walk does see the blobs)...
    assert len(files_containing(written, clear)) == 1
    # ...an encrypted one never does, not even a part of a multipart upload.
    for marker in (sse_s3, sse_c, multi):
        assert files_containing(stored_files(server.data_dir), marker) == [], marker
    assert s3.get_object(Bucket=bucket, Key="m", **ssec(key))["Body"].read() == \
        body + multi * 10


# -- 100 MiB, ranged, in flat memory -------------------------------------------------------


def test_ranged_gets_of_a_100_mib_encrypted_object(s3: Any, server: GatewayProcess,
                                                   bucket: str) -> None:
    size = 100 * MiB + 12_345  # not a whole number of chunks
    pattern = Pattern(size, seed=7)
    assert server.proc is not None
    with PeakRss(server.proc.pid) as put_rss:
        put = s3.put_object(Bucket=bucket, Key="big", Body=pattern, ContentLength=size,
                            ServerSideEncryption="AES256")
    assert put["ETag"] == f'"{pattern.digest(0, size, "md5")}"'

    with PeakRss(server.proc.pid) as get_rss:
        got = s3.get_object(Bucket=bucket, Key="big")
        assert got["ContentLength"] == size and got["ServerSideEncryption"] == "AES256"
        digest = hashlib.sha256()
        for piece in got["Body"].iter_chunks(MiB):
            digest.update(piece)
    assert digest.hexdigest() == pattern.digest(0, size)
    # Streaming: the gateway never holds the object, nor a large part of it (measured
    # here: under 5 MiB either way).
    assert put_rss.growth_mib < 32, f"PUT grew RSS by {put_rss.growth_mib:.0f} MiB"
    assert get_rss.growth_mib < 32, f"GET grew RSS by {get_rss.growth_mib:.0f} MiB"

    rng = random.Random(11)
    spans = [(0, 0), (CHUNK - 1, CHUNK), (CHUNK, 2 * CHUNK - 1), (CHUNK * 5 + 7, CHUNK * 9 - 3),
             (50 * MiB - 10, 50 * MiB + 10), (10 * MiB + 1, 18 * MiB), (size - 1, size - 1),
             (size - CHUNK - 5, size - 1)]
    for _ in range(6):
        first = rng.randrange(size)
        spans.append((first, min(size - 1, first + rng.randrange(1, 3 * CHUNK))))
    ranges = [f"bytes={a}-{b}" for a, b in spans]
    ranges += ["bytes=-1", "bytes=-100000", f"bytes={size - 70_000}-",
               f"bytes={size - 10}-{size + 1000}"]  # the last one is clipped, as S3 does
    check_ranges(s3, bucket, "big", pattern, ranges)
    assert failure(s3.get_object, Bucket=bucket, Key="big",
                   Range=f"bytes={size}-") == ("InvalidRange", 416)


# -- an S3 upstream ------------------------------------------------------------------------


def test_on_an_s3_upstream(upstream_pool: UpstreamPool) -> None:
    gateway = upstream_pool.gateway("s3-moto")
    s3 = make_client(gateway)
    bucket = f"sse-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    key = os.urandom(32)
    size = 3 * MiB + 777
    pattern = Pattern(size, seed=3)
    s3.put_object(Bucket=bucket, Key="s3", Body=pattern, ContentLength=size,
                  ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="c", Body=pattern.range(0, size), **ssec(key))
    ranges = ["bytes=0-0", f"bytes={CHUNK - 2}-{CHUNK + 1}", f"bytes={MiB}-{2 * MiB + 5}",
              "bytes=-1", "bytes=-70000", f"bytes={size - 65_536}-"]
    check_ranges(s3, bucket, "s3", pattern, ranges)
    check_ranges(s3, bucket, "c", pattern, ranges, **ssec(key))
    assert failure(s3.get_object, Bucket=bucket, Key="c", **ssec(os.urandom(32))) == (
        "AccessDenied", 403)

    parts = [pattern.range(0, PART), pattern.range(PART - 3 * MiB, size)]
    multipart(s3, bucket, "m", parts, create=ssec(key), part=ssec(key))
    whole = b"".join(parts)
    ranged = s3.get_object(Bucket=bucket, Key="m", Range=f"bytes={PART - 7}-{PART + 7}",
                           **ssec(key))
    assert ranged["Body"].read() == whole[PART - 7:PART + 8]
    assert s3.get_object(Bucket=bucket, Key="m", PartNumber=2,
                         **ssec(key))["Body"].read() == parts[1]
    # Copies: as they are upstream (same data key), and re-encrypted through the gateway.
    s3.copy_object(Bucket=bucket, Key="same", CopySource=f"{bucket}/s3",
                   ServerSideEncryption="AES256")
    s3.copy_object(Bucket=bucket, Key="other", CopySource=f"{bucket}/s3", **ssec(key))
    for name, extra in (("same", {}), ("other", ssec(key))):
        got = s3.get_object(Bucket=bucket, Key=name, **extra)["Body"].read()
        assert hashlib.sha256(got).hexdigest() == pattern.digest(0, size), name

    # Upstream, every blob is ciphertext: no 64-byte run of the plaintext appears.
    upstream_bucket = gateway.env_extra["GATEWAY_BACKEND"].removeprefix("s3://").split("/")[0]
    up = upstream_pool.upstream("s3-moto").client()
    probes = [pattern.range(o, o + 64) for o in (0, CHUNK + 5, MiB + 1, size - 64)]
    seen = 0
    for page in up.get_paginator("list_objects_v2").paginate(Bucket=upstream_bucket):
        for item in page.get("Contents", []):
            data = up.get_object(Bucket=upstream_bucket, Key=item["Key"])["Body"].read()
            seen += 1
            assert not any(probe in data for probe in probes), item["Key"]
    assert seen >= 5


# -- fsck ----------------------------------------------------------------------------------


def test_fsck_checks_encrypted_objects(s3: Any, server: GatewayProcess, bucket: str) -> None:
    key = os.urandom(32)
    before = stored_files(server.data_dir)
    s3.put_object(Bucket=bucket, Key="victim", Body=os.urandom(100_000),
                  ServerSideEncryption="AES256")
    (victim,) = stored_files(server.data_dir) - before
    s3.put_object(Bucket=bucket, Key="c", Body=b"customer's", **ssec(key))
    multipart(s3, bucket, "m", [os.urandom(PART), b"tail"],
              create={"ServerSideEncryption": "AES256"})

    def fsck(*args: str, expect: int) -> dict[str, Any]:
        result = run_cli(server.data_dir, "fsck", "--json", *args)
        assert result.returncode == expect, (result.stdout, result.stderr)
        return dict(json.loads(result.stdout))

    report = fsck("--checksums", expect=0)
    assert report["ok"] and report["checksum_mismatches"]["count"] == 0
    assert report["unverifiable"] >= 1  # SSE-C: the gateway has no key to check the bytes

    # A flipped byte of ciphertext: same size (plain fsck is content), but --checksums,
    # which decrypts SSE-S3 objects, finds it; a GET refuses the damaged object.
    data = bytearray(victim.read_bytes())
    data[40_000] ^= 0x01
    victim.write_bytes(bytes(data))
    assert fsck(expect=0)["ok"]
    report = fsck("--checksums", expect=1)
    found = [(e["bucket"], e["key"]) for e in report["checksum_mismatches"]["examples"]]
    assert found == [(bucket, "victim")]
    assert failure(s3.get_object, Bucket=bucket, Key="victim") == ("InternalError", 500)
    # A truncated blob is a size mismatch (against its ciphertext size).
    victim.write_bytes(bytes(data[:-1]))
    report = fsck(expect=1)
    assert [(e["bucket"], e["key"]) for e in report["size_mismatches"]["examples"]] == \
        [(bucket, "victim")]
    s3.delete_object(Bucket=bucket, Key="victim")
    assert fsck(expect=0)["ok"]


# -- master-key rotation (last: it restarts the module's gateway) --------------------------


def test_master_key_rotation_from_the_cli(s3: Any, server: GatewayProcess,
                                          bucket: str) -> None:
    data = server.data_dir
    key = os.urandom(32)
    before = stored_files(data)
    single = os.urandom(300_000)
    parts = [os.urandom(PART), os.urandom(5000)]
    s3.put_object(Bucket=bucket, Key="single", Body=single, ServerSideEncryption="AES256")
    multipart(s3, bucket, "multi", parts, create={"ServerSideEncryption": "AES256"})
    s3.put_object(Bucket=bucket, Key="customer", Body=b"sse-c", **ssec(key))
    written = stored_files(data) - before
    blobs = {p: (p.stat().st_mtime_ns, file_digest(p)) for p in written}

    status = cli_json(data, "encryption", "status")
    (old,) = status["keys"]
    assert old["current"] and old["objects"] >= 2 and status["sse_c"]["objects"] >= 1

    rotated = cli_json(data, "encryption", "rotate-master-key")
    assert rotated["ok"] and rotated["generated"]
    assert rotated["master_key"] != old["id"] and rotated["rewrapped"] >= 2
    status = cli_json(data, "encryption", "status")
    counts = {k["id"]: (k["current"], k["objects"]) for k in status["keys"]}
    assert counts[old["id"]] == (False, 0)
    assert counts[rotated["master_key"]][0] is True
    assert counts[rotated["master_key"]][1] == old["objects"]

    # Not a blob was touched: same files, same bytes, same modification times.
    assert {p: (p.stat().st_mtime_ns, file_digest(p)) for p in written} == blobs
    # The running gateway reads them (it finds the new key in the key file)...
    assert s3.get_object(Bucket=bucket, Key="single")["Body"].read() == single
    assert s3.get_object(Bucket=bucket, Key="multi",
                         Range=f"bytes={PART - 3}-{PART + 3}")["Body"].read() == \
        (parts[0] + parts[1])[PART - 3:PART + 4]
    assert s3.get_object(Bucket=bucket, Key="customer", **ssec(key))["Body"].read() == b"sse-c"
    # ...and so does a fresh one, which encrypts new objects under the new key.
    server.stop()
    server.start()
    assert s3.get_object(Bucket=bucket, Key="single")["Body"].read() == single
    assert s3.get_object(Bucket=bucket, Key="multi", PartNumber=2)["Body"].read() == parts[1]
    s3.put_object(Bucket=bucket, Key="fresh", Body=b"new", ServerSideEncryption="AES256")
    status = cli_json(data, "encryption", "status")
    counts = {k["id"]: k["objects"] for k in status["keys"]}
    assert counts == {old["id"]: 0, rotated["master_key"]: old["objects"] + 1}
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"new"
