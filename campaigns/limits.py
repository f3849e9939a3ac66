"""Limits: every cap the gateway enforces, hit from just under and just over, each answered
with its S3 (or JSON API) error — and nothing changed by the refused request.

Caps checked: request head size, user metadata size, key length, bucket name, tag count,
control (XML) body size, JSON body size, DeleteObjects keys, object and part sizes, part
numbers, the smallest non-final part, listing page sizes, the request-head and idle
timeouts, concurrent uploads. The long version repeats the wire-level ones more times.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from botocore.exceptions import ClientError

from campaigns._gateway import read_until_closed, running_gateway, s3_client
from campaigns._report import Report
from tests._server import GatewayProcess, cli_json

BUCKET = "limits"
HEAD_TIMEOUT = 2
IDLE_TIMEOUT = 2
UPLOAD_SLOTS = 3
MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
EXPECT = "Expect: 100-continue\r\n"


class Limits:
    def __init__(self, server: GatewayProcess, report: Report) -> None:
        self.server = server
        self.report = report
        self.s3 = s3_client(server)

    # -- recording -------------------------------------------------------------------------

    def refused(self, limit: str, call: Callable[[], Any], status: int, code: str) -> None:
        """``call`` must fail with exactly this S3 status and code."""
        self.report.add("limits checked")
        try:
            call()
        except ClientError as exc:
            got_status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            got_code = exc.response.get("Error", {}).get("Code")
            self.report.figure(limit, f"{got_status} {got_code}")
            self.report.check((got_status, got_code) == (status, code),
                              f"{limit}: answered {got_status} {got_code}, "
                              f"expected {status} {code}")
            return
        self.report.fail(f"{limit}: accepted, expected {status} {code}")

    def accepted(self, limit: str, call: Callable[[], Any]) -> Any:
        self.report.add("limits checked")
        try:
            result = call()
            self.report.figure(limit, "accepted")
            return result
        except ClientError as exc:
            self.report.fail(f"{limit}: refused just under the limit: "
                             f"{exc.response.get('Error', {}).get('Code')}")
            return None

    def absent(self, key: str) -> None:
        try:
            self.s3.head_object(Bucket=BUCKET, Key=key)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return
            raise
        self.report.fail(f"{key}: a refused write left an object behind")

    # -- raw wire --------------------------------------------------------------------------

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=15)

    def presigned_line(self, method: str, params: dict[str, Any]) -> bytes:
        operation = {"PUT": "put_object", "GET": "get_object"}[method]
        if "PartNumber" in params:
            operation = "upload_part"
        url: str = self.s3.generate_presigned_url(operation, Params=params, ExpiresIn=600)
        target = url.split(str(self.server.port), 1)[1]
        return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.server.port}\r\n"
                "Connection: close\r\n").encode()

    @staticmethod
    def answer(sock: socket.socket, wait: float = 15) -> bytes:
        data = read_until_closed(sock, wait)
        sock.close()
        return data

    def wire(self, limit: str, answer: bytes, status: int, code: str) -> None:
        self.report.add("limits checked")
        line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        found = answer.split(b"<Code>", 1)[-1].split(b"</Code>", 1)[0].decode("latin-1") \
            if b"<Code>" in answer else "no S3 error"
        self.report.figure(limit, f"{line.removeprefix('HTTP/1.1 ')[:3]} {found}")
        ok = line.startswith(f"HTTP/1.1 {status} ") and f"<Code>{code}</Code>".encode() in answer
        self.report.check(ok, f"{limit}: answered {line!r}, expected {status} {code}")


def _head_and_metadata(lim: Limits, rounds: int) -> None:
    for n in range(rounds):
        sock = lim.connect()
        sock.sendall(f"GET /{BUCKET}/k{n} HTTP/1.1\r\nHost: x\r\n".encode()
                     + b"X-Pad: " + b"p" * 17_000 + b"\r\n\r\n")
        lim.wire("request head > 16 KiB", lim.answer(sock), 400,
                 "RequestHeaderSectionTooLarge")
    lim.accepted("user metadata of 2 KiB", lambda: lim.s3.put_object(
        Bucket=BUCKET, Key="meta-ok", Body=b"m", Metadata={"a": "v" * 1900}))
    lim.refused("user metadata over 2 KiB", lambda: lim.s3.put_object(
        Bucket=BUCKET, Key="meta-big", Body=b"m", Metadata={"a": "v" * 2100}),
        400, "MetadataTooLarge")
    lim.absent("meta-big")


def _names(lim: Limits) -> None:
    lim.accepted("key of 1,024 bytes", lambda: lim.s3.put_object(
        Bucket=BUCKET, Key="k" * 1024, Body=b"k"))
    lim.refused("key of 1,025 bytes", lambda: lim.s3.put_object(
        Bucket=BUCKET, Key="k" * 1025, Body=b"k"), 400, "KeyTooLongError")
    lim.accepted("bucket name of 63 characters",
                 lambda: lim.s3.create_bucket(Bucket="b" * 63))
    lim.s3.delete_bucket(Bucket="b" * 63)
    lim.refused("bucket name of 64 characters",
                lambda: lim.s3.create_bucket(Bucket="b" * 64), 400, "InvalidBucketName")
    ten = {"TagSet": [{"Key": f"t{i}", "Value": "v"} for i in range(10)]}
    eleven = {"TagSet": [{"Key": f"t{i}", "Value": "v"} for i in range(11)]}
    lim.accepted("10 object tags", lambda: lim.s3.put_object_tagging(
        Bucket=BUCKET, Key="meta-ok", Tagging=ten))
    lim.refused("11 object tags", lambda: lim.s3.put_object_tagging(
        Bucket=BUCKET, Key="meta-ok", Tagging=eleven), 400, "BadRequest")
    tags = lim.s3.get_object_tagging(Bucket=BUCKET, Key="meta-ok")["TagSet"]
    lim.report.check(len(tags) == 10, "a refused tagging changed the tags")


def _control_bodies(lim: Limits) -> None:
    keys = [f"del/{i}" for i in range(1001)]
    for key in keys[:5]:
        lim.s3.put_object(Bucket=BUCKET, Key=key, Body=b"d")
    lim.refused("DeleteObjects with 1,001 keys", lambda: lim.s3.delete_objects(
        Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}),
        400, "MalformedXML")
    lim.report.check(len(lim.s3.list_objects_v2(Bucket=BUCKET, Prefix="del/")
                         .get("Contents", [])) == 5, "a refused DeleteObjects deleted keys")
    result = lim.accepted("DeleteObjects with 1,000 keys", lambda: lim.s3.delete_objects(
        Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[:1000]], "Quiet": True}))
    lim.report.check(result is not None and not result.get("Errors"),
                     "DeleteObjects of 1,000 keys reported errors")
    # A control body past 2 MiB: long keys make the XML big while the key count is fine.
    long_keys = [f"big/{i:04d}" + "x" * 1000 for i in range(1000)]
    lim.refused("DeleteObjects body over 2 MiB", lambda: lim.s3.delete_objects(
        Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in long_keys] * 3}),
        400, "MaxMessageLengthExceeded")


def _sizes(lim: Limits) -> None:
    # A single PUT may be as large as an object (5 TiB, as MinIO allows; AWS stops at
    # 5 GiB), a part 5 GiB. Announced sizes past them are refused before a byte of body is
    # read; the
    # clients that send such bodies (boto3, aws-cli, curl) ask first with 100-continue.
    sock = lim.connect()
    sock.sendall(lim.presigned_line("PUT", {"Bucket": BUCKET, "Key": "huge"})
                 + f"Content-Length: {5 * TiB + 1}\r\n{EXPECT}\r\n".encode())
    lim.wire("PUT of 5 TiB + 1 byte", lim.answer(sock), 400, "EntityTooLarge")
    lim.absent("huge")
    upload = lim.s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    sock = lim.connect()
    sock.sendall(lim.presigned_line("PUT", {"Bucket": BUCKET, "Key": "mp", "UploadId": upload,
                                            "PartNumber": 1})
                 + f"Content-Length: {5 * GiB + 1}\r\n{EXPECT}\r\n".encode())
    lim.wire("part of 5 GiB + 1 byte", lim.answer(sock), 400, "EntityTooLarge")
    for number in (0, 10_001):
        lim.refused(f"part number {number}", functools.partial(
            lim.s3.upload_part, Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=number,
            Body=b"p"), 400, "InvalidArgument")
    lim.accepted("part number 10,000", lambda: lim.s3.upload_part(
        Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=10_000, Body=b"p"))
    small = lim.s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=1,
                               Body=b"s" * 1024)
    last = lim.s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=2,
                              Body=b"l" * 1024)
    parts = [{"PartNumber": 1, "ETag": small["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}]
    lim.refused("a non-final part under 5 MiB", lambda: lim.s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts}),
        400, "EntityTooSmall")
    lim.absent("mp")
    big = lim.s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=1,
                             Body=b"b" * (5 * MiB))
    parts[0]["ETag"] = big["ETag"]
    lim.accepted("a non-final part of exactly 5 MiB", lambda: lim.s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts}))
    head = lim.s3.head_object(Bucket=BUCKET, Key="mp")
    lim.report.check(head["ContentLength"] == 5 * MiB + 1024, "completed size is wrong")


def _listing_pages(lim: Limits) -> None:
    for i in range(3):
        lim.s3.put_object(Bucket=BUCKET, Key=f"page/{i}", Body=b"p")
    page = lim.accepted("ListObjectsV2 max-keys 5,000 (capped to 1,000)",
                        lambda: lim.s3.list_objects_v2(Bucket=BUCKET, MaxKeys=5000))
    lim.report.check(page is not None and page["MaxKeys"] <= 1000,
                     "a listing promised more than 1,000 keys per page")
    lim.refused("ListObjectsV2 max-keys -1", lambda: lim.s3.list_objects_v2(
        Bucket=BUCKET, MaxKeys=-1), 400, "InvalidArgument")


def _json_api(lim: Limits) -> None:
    token = cli_json(lim.server.data_dir, "token", "create", "--user", "admin", "--name",
                     "limits", "--permission", "storage:read", "--permission",
                     "storage:write")["token"]
    headers = {"X-Api-Key": base64.b64encode(token.encode()).decode(),
               "Content-Type": "application/json"}
    with httpx.Client(base_url=lim.server.url + "/api/v1", headers=headers,
                      timeout=30) as api:
        lim.report.add("limits checked")
        big = api.post("/storage/buckets", content=b'{"name": "' + b"j" * (MiB + 10) + b'"}')
        lim.report.figure("JSON API: body over 1 MiB", f"{big.status_code} JSON error")
        lim.report.check(big.status_code in (400, 413) and "error" in big.json(),
                         f"JSON body over 1 MiB: answered {big.status_code}")
        lim.report.add("limits checked")
        long_key = api.put(f"/storage/buckets/{BUCKET}/objects/{'k' * 1025}", content=b"x")
        lim.report.figure("JSON API: key of 1,025 bytes", f"{long_key.status_code} JSON error")
        lim.report.check(long_key.status_code == 400,
                         f"JSON API key of 1,025 bytes: answered {long_key.status_code}")


def _timeouts(lim: Limits, rounds: int) -> None:
    for _ in range(rounds):
        sock = lim.connect()
        started = time.monotonic()
        sock.sendall(b"GET /limits HTTP/1.1\r\n")  # and never the rest of the head
        lim.answer(sock, wait=HEAD_TIMEOUT + 10)
        took = time.monotonic() - started
        lim.report.add("limits checked")
        lim.report.check(took < HEAD_TIMEOUT + 3,
                         f"an unfinished request head held the connection {took:.1f} s")
        sock = lim.connect()
        sock.sendall(lim.presigned_line("PUT", {"Bucket": BUCKET, "Key": "stalled"})
                     + b"Content-Length: 1000000\r\n\r\n" + b"s" * 1000)
        lim.wire("a body stalled past the idle timeout", lim.answer(sock, IDLE_TIMEOUT + 10),
                 400, "RequestTimeout")
        lim.absent("stalled")


def _upload_slots(lim: Limits) -> None:
    holders = []
    for n in range(UPLOAD_SLOTS):
        sock = lim.connect()
        sock.sendall(lim.presigned_line("PUT", {"Bucket": BUCKET, "Key": f"slot{n}"})
                     + b"Content-Length: 20\r\n\r\n" + b"h" * 10)
        holders.append(sock)
    time.sleep(0.5)
    lim.refused(f"upload {UPLOAD_SLOTS + 1} of {UPLOAD_SLOTS} allowed at once",
                lambda: lim.s3.put_object(Bucket=BUCKET, Key="one-too-many", Body=b"x"),
                503, "SlowDown")
    lim.absent("one-too-many")
    finished: list[bytes] = []

    def finish(sock: socket.socket) -> None:
        sock.sendall(b"h" * 10)
        finished.append(Limits.answer(sock))

    threads = [threading.Thread(target=finish, args=(s,)) for s in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lim.report.check(all(a.startswith(b"HTTP/1.1 200 ") for a in finished),
                     "uploads holding the slots did not complete")
    lim.accepted("an upload once slots are free", lambda: lim.s3.put_object(
        Bucket=BUCKET, Key="one-too-many", Body=b"x"))
    body = lim.s3.get_object(Bucket=BUCKET, Key="slot0")["Body"].read()
    lim.report.check(hashlib.md5(body).hexdigest() == hashlib.md5(b"h" * 20).hexdigest(),
                     "an upload that held a slot stored the wrong bytes")


def run(workdir: Path, *, long: bool = False) -> Report:
    report = Report("limits", long)
    rounds = 10 if long else 2
    with running_gateway(workdir / "data",
                         GATEWAY_REQUEST_HEADER_TIMEOUT=str(HEAD_TIMEOUT),
                         GATEWAY_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
                         GATEWAY_MAX_CONCURRENT_UPLOADS=str(UPLOAD_SLOTS)) as server:
        lim = Limits(server, report)
        lim.s3.create_bucket(Bucket=BUCKET)
        _head_and_metadata(lim, rounds)
        _names(lim)
        _control_bodies(lim)
        _sizes(lim)
        _listing_pages(lim)
        _json_api(lim)
        _timeouts(lim, rounds)
        _upload_slots(lim)
        log = server.log()
        report.figure("server tracebacks", log.count("Traceback"))
        report.check("Traceback" not in log, "the server logged a traceback")
        report.figure("server alive", server.proc is not None and server.proc.poll() is None)
    return report
