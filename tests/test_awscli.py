"""The AWS CLI (v1, default settings) against the gateway: s3 mb/cp/ls/sync/rm/rb and a few
s3api calls, run as a user would, in a subprocess."""

from __future__ import annotations

import filecmp
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._buckets import remove_bucket

#: fs, and the s3:// backend on moto and on a second gateway, and PostgreSQL
#: (tests/conftest.py) — for the flow whose outcome depends on them: mb/cp/ls/rm/rb moves
#: bodies in and out of the backend (upload, download, server-side copy, deletes) and lists
#: from the database, so it runs on every one. What aws-cli sends does not depend on the
#: backend, so the other flows run only where their outcome can differ (see each test).
pytestmark = pytest.mark.upstreams


@pytest.fixture
def cli_bucket(s3: Any) -> Iterator[str]:
    name = f"cli-{uuid.uuid4().hex[:12]}.gbai"
    yield name
    # What a failed test left behind, removed by boto3 (an aws-cli run takes a second);
    # gone is fine: the test removed it.
    remove_bucket(s3, name, missing_ok=True)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for i in range(20):
        depth = i % 4
        parts = [f"level{d}" for d in range(depth)] + [f"file {i:02d}.txt"]
        if i % 5 == 0:
            parts[-1] = f"ünï-{i}.bin"
        rel = "/".join(parts)
        data = os.urandom(100 + i * 37)
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    # Old modification times: the uploaded copies are certainly newer.
    old = time.time() - 3600
    for rel in files:
        os.utime(root / rel, (old, old))
    return files


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


def test_cli_mb_cp_ls_rm_rb(aws: Any, cli_bucket: str, tmp_path: Path) -> None:
    assert "make_bucket" in aws("s3", "mb", f"s3://{cli_bucket}").stdout
    listed = aws("s3", "ls").stdout
    assert cli_bucket in listed

    source = tmp_path / "up.txt"
    data = os.urandom(300_000)
    source.write_bytes(data)
    out = aws("s3", "cp", str(source), f"s3://{cli_bucket}/docs/up.txt").stdout
    assert "upload:" in out

    listed = aws("s3", "ls", f"s3://{cli_bucket}/docs/").stdout
    assert "up.txt" in listed
    assert str(len(data)) in listed
    assert "PRE docs/" in aws("s3", "ls", f"s3://{cli_bucket}").stdout

    target = tmp_path / "down.txt"
    out = aws("s3", "cp", f"s3://{cli_bucket}/docs/up.txt", str(target)).stdout
    assert "download:" in out
    assert target.read_bytes() == data

    # Server-side copy and a recursive listing.
    aws("s3", "cp", f"s3://{cli_bucket}/docs/up.txt", f"s3://{cli_bucket}/copy/up copy.txt")
    listed = aws("s3", "ls", f"s3://{cli_bucket}", "--recursive").stdout
    assert "docs/up.txt" in listed
    assert "copy/up copy.txt" in listed

    # rb refuses a non-empty bucket.
    failed = aws("s3", "rb", f"s3://{cli_bucket}", check=False)
    assert failed.returncode != 0
    assert "BucketNotEmpty" in failed.stderr

    out = aws("s3", "rm", f"s3://{cli_bucket}", "--recursive").stdout
    assert out.count("delete:") == 2
    assert aws("s3", "ls", f"s3://{cli_bucket}", "--recursive", check=False).stdout == ""
    assert "remove_bucket" in aws("s3", "rb", f"s3://{cli_bucket}").stdout
    assert cli_bucket not in aws("s3", "ls").stdout


#: sync decides what to transfer from the listing's sizes and LastModified, which come from
#: the database (SQLite or PostgreSQL, whose timestamps it must round-trip), not the blobs.
@pytest.mark.upstreams("fs", "postgresql")
def test_cli_sync_up_and_down(aws: Any, cli_bucket: str, tmp_path: Path) -> None:
    aws("s3", "mb", f"s3://{cli_bucket}")
    local = tmp_path / "tree"
    files = make_tree(local)

    out = aws("s3", "sync", str(local), f"s3://{cli_bucket}/site").stdout
    assert out.count("upload:") == len(files)

    listed = aws("s3", "ls", f"s3://{cli_bucket}/site/", "--recursive").stdout
    assert len(listed.strip().splitlines()) == len(files)

    down = tmp_path / "down"
    out = aws("s3", "sync", f"s3://{cli_bucket}/site", str(down)).stdout
    assert out.count("download:") == len(files)
    assert tree_files(down) == files
    comparison = filecmp.dircmp(local, down)
    assert not comparison.left_only and not comparison.right_only

    # Nothing changed: a second sync in either direction transfers nothing.
    again = aws("s3", "sync", str(local), f"s3://{cli_bucket}/site")
    assert "upload:" not in again.stdout, again.stdout
    again = aws("s3", "sync", f"s3://{cli_bucket}/site", str(down))
    assert "download:" not in again.stdout, again.stdout

    # One changed file and one deleted file: exactly those are synced.
    changed = next(iter(files))
    (local / changed).write_bytes(b"changed contents, another size")
    removed = list(files)[-1]
    (local / removed).unlink()
    out = aws("s3", "sync", str(local), f"s3://{cli_bucket}/site", "--delete").stdout
    assert out.count("upload:") == 1
    assert out.count("delete:") == 1

    aws("s3", "rm", f"s3://{cli_bucket}/site", "--recursive")
    assert aws("s3", "ls", f"s3://{cli_bucket}", "--recursive", check=False).stdout == ""
    aws("s3", "rb", f"s3://{cli_bucket}")


#: One request per command, built by the same botocore as boto3's: what it shows is aws-cli's
#: arguments reaching the gateway. The answers on every backend and database (metadata,
#: content type, NoSuchKey) are tests/test_s3_objects.py's; bodies, the flow's above.
@pytest.mark.upstreams("fs")
def test_cli_s3api(aws: Any, cli_bucket: str, tmp_path: Path) -> None:
    aws("s3api", "create-bucket", "--bucket", cli_bucket)
    aws("s3api", "head-bucket", "--bucket", cli_bucket)

    source = tmp_path / "body.json"
    source.write_text('{"hello": "world"}')
    put = json.loads(aws("s3api", "put-object", "--bucket", cli_bucket, "--key", "a/b.json",
                         "--body", str(source), "--content-type", "application/json",
                         "--metadata", "origin=cli").stdout)
    assert put["ETag"].startswith('"')

    head = json.loads(aws("s3api", "head-object", "--bucket", cli_bucket,
                          "--key", "a/b.json").stdout)
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"origin": "cli"}
    assert head["ContentLength"] == len('{"hello": "world"}')
    assert head["ETag"] == put["ETag"]

    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", cli_bucket).stdout)
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.json"]

    target = tmp_path / "out.json"
    aws("s3api", "get-object", "--bucket", cli_bucket, "--key", "a/b.json", str(target))
    assert target.read_text() == '{"hello": "world"}'

    missing = aws("s3api", "get-object", "--bucket", cli_bucket, "--key", "nope",
                  str(tmp_path / "nope"), check=False)
    assert missing.returncode != 0
    assert "NoSuchKey" in missing.stderr

    location = json.loads(aws("s3api", "get-bucket-location", "--bucket", cli_bucket).stdout)
    assert location.get("LocationConstraint") in (None, "")

    aws("s3api", "delete-object", "--bucket", cli_bucket, "--key", "a/b.json")
    aws("s3api", "delete-bucket", "--bucket", cli_bucket)
    gone = aws("s3api", "head-bucket", "--bucket", cli_bucket, check=False)
    assert gone.returncode != 0
