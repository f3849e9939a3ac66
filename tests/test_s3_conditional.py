"""Conditional reads (GET/HEAD with If-*) and conditional writes (PutObject If-None-Match /
If-Match), including concurrent conditional writers racing for one key."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._errors import client_error
from tests.conftest import make_client

#: fs, and the s3:// backend on moto and on a second gateway (tests/conftest.py).
pytestmark = pytest.mark.upstreams

OTHER_ETAG = '"0123456789abcdef0123456789abcdef"'


def quoted_md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


@pytest.fixture
def obj(s3: Any, bucket: str) -> dict[str, Any]:
    """One object and what HEAD says about it."""
    s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional body")
    head = s3.head_object(Bucket=bucket, Key="cond")
    return {"Bucket": bucket, "Key": "cond", "ETag": head["ETag"],
            "LastModified": head["LastModified"],
            "LastModifiedHeader": head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]}


def past(o: dict[str, Any]) -> datetime:
    modified: datetime = o["LastModified"]
    return modified - timedelta(days=1)


def future() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


def read(s3: Any, o: dict[str, Any], method: str, **conditions: Any) -> int:
    """Status of a successful conditional GET or HEAD."""
    call = s3.get_object if method == "GET" else s3.head_object
    response = call(Bucket=o["Bucket"], Key=o["Key"], **conditions)
    if method == "GET":
        assert response["Body"].read() == b"conditional body"
    status: int = response["ResponseMetadata"]["HTTPStatusCode"]
    return status


def read_error(s3: Any, o: dict[str, Any], method: str, **conditions: Any) -> tuple[str, int]:
    call = s3.get_object if method == "GET" else s3.head_object
    return client_error(call, Bucket=o["Bucket"], Key=o["Key"], **conditions)


def precondition_failed(method: str) -> tuple[str, int]:
    # HEAD answers have no body, so boto3 can only report the status as the code.
    return ("PreconditionFailed", 412) if method == "GET" else ("412", 412)


NOT_MODIFIED = ("304", 304)

METHODS = ["GET", "HEAD"]


# -- conditional reads ----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_if_match(s3: Any, obj: dict[str, Any], method: str) -> None:
    assert read(s3, obj, method, IfMatch=obj["ETag"]) == 200
    assert read_error(s3, obj, method, IfMatch=OTHER_ETAG) == precondition_failed(method)


@pytest.mark.parametrize("method", METHODS)
def test_if_none_match(s3: Any, obj: dict[str, Any], method: str) -> None:
    assert read_error(s3, obj, method, IfNoneMatch=obj["ETag"]) == NOT_MODIFIED
    assert read(s3, obj, method, IfNoneMatch=OTHER_ETAG) == 200


@pytest.mark.parametrize("method", METHODS)
def test_not_modified_response_headers(s3: Any, obj: dict[str, Any], method: str) -> None:
    with pytest.raises(ClientError) as info:
        if method == "GET":
            s3.get_object(Bucket=obj["Bucket"], Key=obj["Key"], IfNoneMatch=obj["ETag"])
        else:
            s3.head_object(Bucket=obj["Bucket"], Key=obj["Key"], IfNoneMatch=obj["ETag"])
    headers = info.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert headers.get("etag") == obj["ETag"]
    assert headers.get("last-modified") == obj["LastModifiedHeader"]
    assert "x-amz-request-id" in headers


@pytest.mark.parametrize("method", METHODS)
def test_if_modified_since(s3: Any, obj: dict[str, Any], method: str) -> None:
    assert read(s3, obj, method, IfModifiedSince=past(obj)) == 200
    assert read_error(s3, obj, method, IfModifiedSince=future()) == NOT_MODIFIED
    # Exactly the Last-Modified time: not modified since then.
    assert read_error(s3, obj, method, IfModifiedSince=obj["LastModified"]) == NOT_MODIFIED


@pytest.mark.parametrize("method", METHODS)
def test_if_unmodified_since(s3: Any, obj: dict[str, Any], method: str) -> None:
    assert read(s3, obj, method, IfUnmodifiedSince=future()) == 200
    assert read(s3, obj, method, IfUnmodifiedSince=obj["LastModified"]) == 200
    assert read_error(s3, obj, method, IfUnmodifiedSince=past(obj)) == \
        precondition_failed(method)


@pytest.mark.parametrize("method", METHODS)
def test_if_match_true_and_if_unmodified_since_false(s3: Any, obj: dict[str, Any],
                                                     method: str) -> None:
    assert read(s3, obj, method, IfMatch=obj["ETag"], IfUnmodifiedSince=past(obj)) == 200


@pytest.mark.parametrize("method", METHODS)
def test_if_match_false_and_if_unmodified_since_true(s3: Any, obj: dict[str, Any],
                                                     method: str) -> None:
    assert read_error(s3, obj, method, IfMatch=OTHER_ETAG,
                      IfUnmodifiedSince=future()) == precondition_failed(method)


@pytest.mark.parametrize("method", METHODS)
def test_if_none_match_false_and_if_modified_since_true(s3: Any, obj: dict[str, Any],
                                                        method: str) -> None:
    assert read_error(s3, obj, method, IfNoneMatch=obj["ETag"],
                      IfModifiedSince=past(obj)) == NOT_MODIFIED


@pytest.mark.parametrize("method", METHODS)
def test_if_none_match_true_and_if_modified_since_false(s3: Any, obj: dict[str, Any],
                                                        method: str) -> None:
    # If-None-Match is evaluated and If-Modified-Since ignored (RFC 7232 section 6).
    assert read(s3, obj, method, IfNoneMatch=OTHER_ETAG, IfModifiedSince=future()) == 200


@pytest.mark.parametrize("method", METHODS)
def test_if_match_false_beats_if_none_match(s3: Any, obj: dict[str, Any], method: str) -> None:
    assert read_error(s3, obj, method, IfMatch=OTHER_ETAG,
                      IfNoneMatch=obj["ETag"]) == precondition_failed(method)


@pytest.mark.parametrize("method", METHODS)
def test_conditions_with_range(s3: Any, obj: dict[str, Any], method: str) -> None:
    call = s3.get_object if method == "GET" else s3.head_object
    response = call(Bucket=obj["Bucket"], Key=obj["Key"], Range="bytes=0-10",
                    IfMatch=obj["ETag"])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert read_error(s3, obj, method, Range="bytes=0-10",
                      IfMatch=OTHER_ETAG) == precondition_failed(method)


@pytest.mark.parametrize("method", METHODS)
def test_conditions_on_missing_key(s3: Any, bucket: str, method: str) -> None:
    call = s3.get_object if method == "GET" else s3.head_object
    code, status = client_error(call, Bucket=bucket, Key="missing", IfMatch=OTHER_ETAG)
    assert status == 404
    assert code == ("NoSuchKey" if method == "GET" else "404")


# -- conditional writes ---------------------------------------------------------------------


def test_put_if_none_match_star_on_new_key(s3: Any, bucket: str) -> None:
    response = s3.put_object(Bucket=bucket, Key="new", Body=b"first", IfNoneMatch="*")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ETag"] == quoted_md5(b"first")
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"first"


def test_put_if_none_match_star_on_existing_key(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"original")
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"replacement",
                                IfNoneMatch="*")
    assert (code, status) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"


def test_put_if_none_match_star_after_delete(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"


def test_put_if_match(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    response = s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ETag"] == quoted_md5(b"v2")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"
    # The old ETag no longer matches.
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"v3",
                                IfMatch=etag)
    assert (code, status) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"


def test_put_if_match_wrong_etag(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1", Metadata={"m": "1"})
    code, status = client_error(s3.put_object, Bucket=bucket, Key="k", Body=b"v2",
                                IfMatch=OTHER_ETAG)
    assert (code, status) == ("PreconditionFailed", 412)
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ETag"] == quoted_md5(b"v1")
    assert head["Metadata"] == {"m": "1"}


def test_put_if_match_missing_key(s3: Any, bucket: str) -> None:
    code, status = client_error(s3.put_object, Bucket=bucket, Key="missing", Body=b"v",
                                IfMatch=OTHER_ETAG)
    assert (code, status) == ("NoSuchKey", 404)
    assert client_error(s3.head_object, Bucket=bucket, Key="missing") == ("404", 404)


def race_client(gateway: Any) -> Any:
    # No retries: each thread's one attempt is what the server decided.
    return make_client(gateway, config=Config(max_pool_connections=25,
                                              retries={"total_max_attempts": 1}))


def run_racers(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def racer(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except ClientError as exc:
            results[i] = exc
        except Exception as exc:  # a transport failure is a failure too
            results[i] = exc

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def check_losers(results: list[Any]) -> list[int]:
    winners = [i for i, r in enumerate(results) if isinstance(r, dict)]
    for r in results:
        if isinstance(r, dict):
            continue
        assert isinstance(r, ClientError), repr(r)
        code = r.response["Error"]["Code"]
        status = r.response["ResponseMetadata"]["HTTPStatusCode"]
        # S3 answers a lost race with 412, or 409 ConditionalRequestConflict while the
        # winner is still in flight.
        assert (code, status) in {("PreconditionFailed", 412),
                                  ("ConditionalRequestConflict", 409)}, (code, status)
    return winners


def test_race_if_none_match_star(gateway: Any, bucket: str) -> None:
    client = race_client(gateway)
    bodies = [f"racer {i} ".encode() * (i + 1) for i in range(20)]
    results = run_racers(20, lambda i: client.put_object(
        Bucket=bucket, Key="contended", Body=bodies[i], IfNoneMatch="*"))
    winners = check_losers(results)
    assert len(winners) == 1, winners
    winner = winners[0]
    assert results[winner]["ETag"] == quoted_md5(bodies[winner])
    assert client.get_object(Bucket=bucket, Key="contended")["Body"].read() == bodies[winner]


def test_race_if_match(gateway: Any, bucket: str) -> None:
    client = race_client(gateway)
    old_etag = client.put_object(Bucket=bucket, Key="contended", Body=b"old")["ETag"]
    bodies = [f"swap {i} ".encode() * (i + 1) for i in range(20)]
    results = run_racers(20, lambda i: client.put_object(
        Bucket=bucket, Key="contended", Body=bodies[i], IfMatch=old_etag))
    winners = check_losers(results)
    assert len(winners) == 1, winners
    winner = winners[0]
    assert client.get_object(Bucket=bucket, Key="contended")["Body"].read() == bodies[winner]
    assert client.head_object(Bucket=bucket, Key="contended")["ETag"] == quoted_md5(
        bodies[winner])


def test_race_unconditional_puts_leave_one_whole_body(gateway: Any, bucket: str) -> None:
    client = race_client(gateway)
    bodies = [bytes([65 + i]) * (1000 + i) for i in range(20)]
    results = run_racers(20, lambda i: client.put_object(
        Bucket=bucket, Key="contended", Body=bodies[i]))
    assert all(isinstance(r, dict) for r in results), results
    final = client.get_object(Bucket=bucket, Key="contended")["Body"].read()
    assert final in bodies
    listing = client.list_objects_v2(Bucket=bucket)
    assert [(o["Key"], o["Size"]) for o in listing["Contents"]] == [("contended", len(final))]


def test_readers_see_whole_bodies_during_overwrites(gateway: Any, bucket: str) -> None:
    """An overwrite swaps the object atomically: a concurrent reader gets the old or the new
    body, whole, with the ETag and length that belong to it."""
    client = race_client(gateway)
    bodies = [bytes([i]) * (512 * 1024 + i) for i in (1, 2, 3)]
    etags = {quoted_md5(b): b for b in bodies}
    client.put_object(Bucket=bucket, Key="swapping", Body=bodies[0])
    stop = threading.Event()
    problems: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            client.put_object(Bucket=bucket, Key="swapping", Body=bodies[i % len(bodies)])

    def reader() -> None:
        while not stop.is_set():
            response = client.get_object(Bucket=bucket, Key="swapping")
            data = response["Body"].read()
            if etags.get(response["ETag"]) != data:
                problems.append(f"etag {response['ETag']} with {len(data)} bytes")
            if response["ContentLength"] != len(data):
                problems.append("content-length disagrees with the body")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(3)]
    for t in threads:
        t.start()
    threading.Event().wait(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert problems == []
