"""The crash campaign's short version: kill -9 under a mixed workload, nothing acknowledged
lost, nothing half-visible, quotas exact, fsck clean after garbage collection."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from campaigns import crash


@pytest.mark.slow
def test_crash_campaign(tmp_path: Path) -> None:
    report = crash.run(tmp_path, long=False)
    message = report.render()
    assert report.ok, message
    figures = report.figures
    assert figures["kills survived"] >= 5, message
    for zero in ("mismatches", "quota mismatches", "fsck findings after GC",
                 "bytes unaccounted on disk", "wrong answers"):
        assert figures[zero] == 0, message
    # The workload really ran, with every kind of write acknowledged, and the kills hit
    # writes in flight.
    # (Creating a shared key with If-None-Match, and a multipart upload into the small
    # quota, succeed only now and then.)
    for kind, _ in crash.OPERATIONS:
        if kind not in ("shared-if-none-match", "quota-multipart"):
            assert figures[f"acknowledged {kind}"] > 0, (kind, message)
    assert figures["acknowledged in all"] >= 200, message
    assert figures["refused QuotaExceeded"] > 0, message
    assert figures["refused PreconditionFailed"] > 0, message
    assert figures["writes in doubt at kills"] > 0, message
    assert figures["objects checked"] >= 100, message


def test_a_copy_answer_cut_after_its_head_parses_as_an_empty_success() -> None:
    """What the campaign allows for when a kill falls between an answer's head and its
    body: botocore does not check Content-Length, so a CopyObject whose 200 head arrived
    without its XML is a success with no ETag — told apart by the declared length."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_with_the_head_only() -> None:
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: 234\r\n\r\n")

    thread = threading.Thread(target=answer_with_the_head_only, daemon=True)
    thread.start()
    try:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                          region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                          aws_secret_access_key="x" * 40,
                          config=Config(retries={"total_max_attempts": 1}))
        answer = s3.copy_object(Bucket="b", Key="k", CopySource={"Bucket": "b", "Key": "s"})
    finally:
        thread.join(10)
        server.close()
    assert answer.get("CopyObjectResult", {}).get("ETag") is None
    assert crash._declared_length(answer) == 234
