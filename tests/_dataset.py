"""A stopped gateway's data directory with known objects, for ``migrate`` and ``fsck`` tests.

``populate`` runs a real gateway once and uploads small objects, multipart ones (5 MiB parts),
a copy of a multipart object (same ETag, no part layout) and leaves one multipart upload in
progress; then stops it. Tests work on copies (``Dataset.clone``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests._server import GatewayProcess, run_cli

MiB = 1024 * 1024
SMALL_OBJECTS = 200
BUCKETS = ("mig-one", "mig-two")


@dataclass
class Dataset:
    data_dir: Path
    #: (bucket, key) -> MD5 of the bytes
    objects: dict[tuple[str, str], str] = field(default_factory=dict)
    etags: dict[tuple[str, str], str] = field(default_factory=dict)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    multipart: tuple[str, str] = ("", "")

    def clone(self, dest: Path) -> Dataset:
        """A private copy (file by file: hard links between blobs are not kept)."""
        shutil.copytree(self.data_dir, dest, symlinks=True)
        return Dataset(dest, dict(self.objects), dict(self.etags), dict(self.sizes),
                       self.multipart)

    def blob_key(self, bucket: str, key: str) -> str:
        with closing_db(self.data_dir) as db:
            row = db.execute(
                "SELECT o.blob_key FROM objects o JOIN buckets b ON b.id = o.bucket_id "
                "WHERE b.name = ? AND o.key = ?", (bucket, key)).fetchone()
        assert row is not None, (bucket, key)
        return str(row[0])

    def bucket_id(self, bucket: str) -> int:
        with closing_db(self.data_dir) as db:
            row = db.execute("SELECT id FROM buckets WHERE name = ?", (bucket,)).fetchone()
        return int(row[0])


@contextmanager
def closing_db(data_dir: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(data_dir / "gateway.db")
    try:
        yield db
    finally:
        db.close()


def client(server: GatewayProcess) -> Any:
    return boto3.client("s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


_populated: Dataset | None = None


def populated(factory: Any) -> Dataset:
    """One dataset for the session (``factory``: pytest's ``tmp_path_factory``), shared by
    the test modules that use it; they work on clones."""
    global _populated
    if _populated is None:
        _populated = populate(factory.mktemp("maintenance-source") / "data")
    return _populated


def populate(data_dir: Path) -> Dataset:
    rng = random.Random(20240601)
    dataset = Dataset(data_dir)
    server = GatewayProcess(data_dir).start()
    try:
        s3 = client(server)
        for name in BUCKETS:
            s3.create_bucket(Bucket=name)
        small = {}
        for i in range(SMALL_OBJECTS):
            body = b"" if i == 3 else rng.randbytes(rng.randint(1, 32 * 1024))
            small[BUCKETS[i % 2], f"dir{i % 7}/obj {i:04d} ünï.bin"] = body
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: s3.put_object(Bucket=item[0][0], Key=item[0][1],
                                                     Body=item[1]), small.items()))
        dataset.objects.update({k: _md5(body) for k, body in small.items()})
        parts = [rng.randbytes(5 * MiB), rng.randbytes(100_000)]
        key = "big/multipart.bin"
        upload = s3.create_multipart_upload(Bucket=BUCKETS[0], Key=key)
        done = []
        for number, part in enumerate(parts, 1):
            answer = s3.upload_part(Bucket=BUCKETS[0], Key=key, UploadId=upload["UploadId"],
                                    PartNumber=number, Body=part)
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
        s3.complete_multipart_upload(Bucket=BUCKETS[0], Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": done})
        dataset.objects[BUCKETS[0], key] = _md5(b"".join(parts))
        dataset.multipart = (BUCKETS[0], key)
        # A copy keeps the multipart ETag, without a part layout.
        s3.copy_object(Bucket=BUCKETS[1], Key="big/copy.bin",
                       CopySource={"Bucket": BUCKETS[0], "Key": key})
        dataset.objects[BUCKETS[1], "big/copy.bin"] = dataset.objects[BUCKETS[0], key]
        # Left in progress: not migrated.
        pending = s3.create_multipart_upload(Bucket=BUCKETS[1], Key="big/pending.bin")
        s3.upload_part(Bucket=BUCKETS[1], Key="big/pending.bin", PartNumber=1,
                       UploadId=pending["UploadId"], Body=rng.randbytes(1000))
        for bucket, key in dataset.objects:
            head = s3.head_object(Bucket=bucket, Key=key)
            dataset.etags[bucket, key] = head["ETag"]
            dataset.sizes[bucket, key] = head["ContentLength"]
    finally:
        server.stop()
    return dataset


@contextmanager
def serving(dataset: Dataset, env: dict[str, str]) -> Iterator[GatewayProcess]:
    server = GatewayProcess(dataset.data_dir, env_extra=env).start()
    try:
        yield server
    finally:
        server.stop()


def put(s3: Any, dataset: Dataset, bucket: str, key: str, body: bytes) -> None:
    """Write an object and expect it."""
    answer = s3.put_object(Bucket=bucket, Key=key, Body=body)
    dataset.objects[bucket, key] = _md5(body)
    dataset.etags[bucket, key] = answer["ETag"]
    dataset.sizes[bucket, key] = len(body)


def delete(s3: Any, dataset: Dataset, bucket: str, key: str) -> None:
    s3.delete_object(Bucket=bucket, Key=key)
    for expected in (dataset.objects, dataset.etags, dataset.sizes):
        del expected[bucket, key]


def read_back(dataset: Dataset, env: dict[str, str]) -> None:
    """A gateway on ``dataset`` with ``env`` serves every object with its bytes and ETag,
    and lists nothing else."""
    with serving(dataset, env) as server:
        _read_back(server, dataset)


def _read_back(server: GatewayProcess, dataset: Dataset) -> None:
    s3 = client(server)
    listed = set()
    for bucket in BUCKETS:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            listed.update((bucket, o["Key"]) for o in page.get("Contents", []))
    assert listed == set(dataset.objects)
    for (bucket, key), md5 in dataset.objects.items():
        answer = s3.get_object(Bucket=bucket, Key=key)
        assert _md5(answer["Body"].read()) == md5, (bucket, key)
        assert answer["ETag"] == dataset.etags[bucket, key]
    bucket, key = dataset.multipart
    part = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert len(part["Body"].read()) == 100_000


def env_with(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


def cli_report(data: Path, *args: str, env: dict[str, str] | None = None,
               expect: int = 0) -> dict[str, Any]:
    """A maintenance command with ``--json``: its exit code checked, its report parsed."""
    result = run_cli(data, *args, "--json", env=env_with(env or {}))
    assert result.returncode == expect, (args, result.returncode, result.stdout,
                                         result.stderr)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def popen_cli(data: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway", *args, "--data-dir", str(data)],
                            env=env_with(env or {}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
