"""``gateway migrate``: every blob copied to another backend, verified, resumable; the
gateway then serves everything from the target after a settings change."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.service.maintenance import BATCH
from gateway.service.migrate import backend_identity, journal_path
from tests._dataset import (
    BUCKETS,
    Dataset,
    MiB,
    client,
    delete,
    env_with,
    popen_cli,
    populated,
    put,
    read_back,
    serving,
)
from tests._server import run_cli_here
from tests._upstreams import Upstream, backend_env
from tests.conftest import UpstreamPool


@dataclass
class Target:
    """Where to migrate to: the URL for ``--to`` and ``GATEWAY_BACKEND``, the flags that
    reach it, and the environment a gateway (or fsck) needs to use it as its backend."""

    url: str
    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    s3_endpoint: str = ""

    @property
    def backend_env(self) -> dict[str, str]:
        return {"GATEWAY_BACKEND": self.url, **self.env}


def s3_target(upstream: Upstream, prefix: str = "mig") -> Target:
    """A fresh bucket on ``upstream``, reached by ``--to-s3-*`` flags (migrate) or by
    ``GATEWAY_S3_*`` (a gateway or fsck using it as its backend)."""
    env = backend_env(upstream, upstream.create_bucket(), prefix)
    url = env.pop("GATEWAY_BACKEND")
    flags = ("--to-s3-endpoint", upstream.endpoint, "--to-s3-access-key", upstream.access_key,
             "--to-s3-secret-key", upstream.secret_key, "--to-s3-region", upstream.region)
    return Target(url, flags, env, upstream.endpoint)


@pytest.fixture(params=["fs", "s3-moto"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "fs":
        yield Target(f"fs://{tmp_path / 'objects2'}")
    else:
        pool: UpstreamPool = request.getfixturevalue("upstream_pool")
        yield s3_target(pool.upstream(request.param))


#: For what does not depend on the target's kind (journal, passes, digests): a directory.
#: Migrating to S3 is shown by ``test_migrate_then_switch`` and, killed midway and resumed,
#: by the round trip at the end.
ON_FS = pytest.mark.parametrize("target", ["fs"], indirect=True)


def report_of(data: Path, *args: str, env: dict[str, str] | None = None,
              expect: int = 0) -> dict[str, Any]:
    """``tests._dataset.cli_report``, run by the CLI's own ``main`` in this process with the
    environment ``cli_report`` gives the command: the same parsing, report and exit code,
    without an interpreter start-up each time. (The interrupted runs are real processes.)"""
    done = run_cli_here(data, *args, "--json", env=env_with(env or {}))
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == expect, (args, code, out, err)
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return populated(tmp_path_factory)


@pytest.fixture
def source(dataset: Dataset, tmp_path: Path) -> Dataset:
    return dataset.clone(tmp_path / "data")


def test_migrate_then_switch(source: Dataset, target: Target) -> None:
    report = report_of(source.data_dir, "migrate", "--to", target.url, *target.flags)
    total = len(source.objects)
    assert report["ok"] is True
    assert report["copied"] == total and report["skipped"] == 0
    assert report["bytes"] == sum(source.sizes.values())
    assert report["mismatches"]["count"] == report["missing"]["count"] == 0
    assert report["errors"]["count"] == 0
    assert report["verified"] is True
    assert report["uploads_in_progress"] == 1
    assert report["unverifiable"] == 1  # the copy of the multipart object
    assert report["passes"] == 2 and report["seconds"] > 0  # the second found nothing new

    read_back(source, target.backend_env)

    clean = report_of(source.data_dir, "fsck", "--checksums", env=target.backend_env)
    assert clean["ok"] is True and clean["objects_checked"] == total
    assert clean["orphans"]["count"] == 0


def _journal(source: Dataset, target: Target) -> Path:
    return journal_path(source.data_dir, backend_identity(
        target.url, data_dir=source.data_dir, s3_endpoint=target.s3_endpoint))


def _wait_for_journal(proc: subprocess.Popen[bytes], journal: Path, lines: int) -> int:
    """Wait until the running migration has journaled ``lines`` keys; how many it has."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the migration ended before the test could act"
        if journal.exists():
            done = sum(1 for line in journal.read_text().splitlines()
                       if line and not line.startswith("#"))
            if done >= lines:
                return done
        time.sleep(0.01)
    raise AssertionError("the migration journaled too little")


@ON_FS
def test_interrupted_migration_resumes(source: Dataset, target: Target) -> None:
    proc = popen_cli(source.data_dir, "migrate", "--to", target.url, *target.flags,
                     "--quiet", "--limit-rate", "2MB")
    try:
        lines = _wait_for_journal(proc, _journal(source, target), 50)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    total = len(source.objects)
    assert 50 <= lines < total

    report = report_of(source.data_dir, "migrate", "--to", target.url, *target.flags)
    assert report["ok"] is True
    assert report["skipped"] >= 50
    assert report["copied"] + report["skipped"] == total
    read_back(source, target.backend_env)


@ON_FS
def test_writes_while_migrating(source: Dataset, target: Target) -> None:
    """Rows written, overwritten or deleted meanwhile: later passes pick up what is new,
    deleted ones are skipped; a run right after copies nothing more."""
    with serving(source, {}) as server:
        s3 = client(server)
        proc = popen_cli(source.data_dir, "migrate", "--to", target.url, *target.flags,
                         "--json", "--limit-rate", "4MB")
        try:
            _wait_for_journal(proc, _journal(source, target), 50)
            small = [k for k in source.objects if k[1].startswith("dir")]
            for bucket, key in small[:3] + small[-3:]:
                put(s3, source, bucket, key, b"overwritten " + key.encode())
            for bucket, key in small[-8:-3]:
                delete(s3, source, bucket, key)
            for i in range(10):
                put(s3, source, BUCKETS[i % 2], f"new/{i}", b"new %d" % i * 100)
            assert proc.poll() is None, "the migration ended before the writes"
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["passes"] >= 2
    assert report["vanished"] <= 5 + 3  # deleted, and overwritten before they were copied

    again = report_of(source.data_dir, "migrate", "--to", target.url, *target.flags)
    assert again["copied"] == 0 and again["skipped"] == len(source.objects)
    read_back(source, target.backend_env)


def test_refuses_the_configured_backend(source: Dataset, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The default, spelled as a path (with a trailing slash); and one that keeps nothing.
    for url in (f"fs://{source.data_dir / 'objects'}/", "memory"):
        code = main(["migrate", "--to", url, "--data-dir", str(source.data_dir)])
        assert code == 2, url
        assert "gateway migrate: the " in capsys.readouterr().err
    # Versioned blob names of the 1:1 placement cannot move to another store.
    monkeypatch.setenv("GATEWAY_S3_PLACEMENT", "keys")
    code = main(["migrate", "--to", "s3://elsewhere/x", "--data-dir", str(source.data_dir)])
    assert code == 2
    assert "opaque placements only" in capsys.readouterr().err
    assert not list(source.data_dir.glob("migrate-*.journal"))


@ON_FS
def test_mismatch_is_reported_and_not_journaled(source: Dataset, target: Target) -> None:
    bucket, key = next(iter(source.objects))
    blob_key = source.blob_key(bucket, key)
    blob = source.data_dir / "objects" / "blobs" / blob_key
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))

    report = report_of(source.data_dir, "migrate", "--to", target.url, *target.flags,
                       "--no-verify", expect=1)
    assert report["ok"] is False and report["verified"] is False
    assert report["mismatches"]["count"] == 1
    example = report["mismatches"]["examples"][0]
    assert (example["bucket"], example["key"], example["blob_key"]) == (bucket, key, blob_key)
    assert "ETag" in example["detail"]
    assert report["copied"] == len(source.objects) - 1
    assert blob_key not in _journal(source, target).read_text().split()


# -- the round trip: objects of every size fs → s3 → fs, killed once on the way -------------

#: Just more than the batch the walks over the object rows (migrate's passes, fsck) take at a
#: time, so that each walk goes on past its first batch.
ROUND_TRIP_OBJECTS = BATCH + 20
#: The journal is written 50 keys at a time; the first leg is killed once it holds this many
#: (the multipart objects, copied last, are still to come), then resumed.
KILL_AFTER = 100


def _round_trip_dataset(data_dir: Path) -> Dataset:
    """Objects in two buckets: most of up to 48 KiB (some empty), some of a few MiB, and
    multipart ones of one and of two 5 MiB parts and a short last part."""
    rng = random.Random(1000)
    dataset = Dataset(data_dir)
    with serving(dataset, {}) as server:
        s3 = client(server)
        for name in BUCKETS:
            s3.create_bucket(Bucket=name)
        multipart = 2
        items = []
        for i in range(ROUND_TRIP_OBJECTS - multipart):
            size = rng.randint(1, 3 * MiB) if i % 60 == 0 else rng.randint(0, 48 * 1024)
            items.append((BUCKETS[i % 2], f"k/{i % 13}/{i:04d}", rng.randbytes(size)))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: put(s3, dataset, *item), items))
        for i in range(multipart):
            bucket, key = BUCKETS[i % 2], f"mp/{i}"
            parts = [rng.randbytes(5 * MiB) for _ in range(1 + i % 2)]
            parts.append(rng.randbytes(rng.randint(1, MiB)))
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            done = [{"PartNumber": n, "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=part)["ETag"]}
                for n, part in enumerate(parts, 1)]
            answer = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": done})
            dataset.objects[bucket, key] = hashlib.md5(b"".join(parts)).hexdigest()
            dataset.etags[bucket, key] = answer["ETag"]
            dataset.sizes[bucket, key] = sum(map(len, parts))
            dataset.multipart = (bucket, key)
    assert len(dataset.objects) == ROUND_TRIP_OBJECTS
    return dataset


def _read_everything(dataset: Dataset, env: dict[str, str]) -> None:
    with serving(dataset, env) as server:
        s3 = client(server)
        listed = set()
        for bucket in BUCKETS:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                listed.update((bucket, o["Key"]) for o in page.get("Contents", []))
        assert listed == set(dataset.objects)

        def check(item: tuple[tuple[str, str], str]) -> None:
            (bucket, key), md5 = item
            answer = s3.get_object(Bucket=bucket, Key=key)
            assert hashlib.md5(answer["Body"].read()).hexdigest() == md5, (bucket, key)
            assert answer["ETag"] == dataset.etags[bucket, key]

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(check, dataset.objects.items()))


@pytest.mark.slow
def test_round_trip_interrupted_once(tmp_path: Path, upstream_pool: UpstreamPool) -> None:
    dataset = _round_trip_dataset(tmp_path / "data")
    to_s3 = s3_target(upstream_pool.upstream("s3-moto"), "round-trip")

    # fs → s3, killed midway, resumed.
    proc = popen_cli(dataset.data_dir, "migrate", "--to", to_s3.url, *to_s3.flags, "--quiet",
                     "--limit-rate", "8MB")
    try:
        lines = _wait_for_journal(proc, _journal(dataset, to_s3), KILL_AFTER)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert KILL_AFTER <= lines < ROUND_TRIP_OBJECTS
    report = report_of(dataset.data_dir, "migrate", "--to", to_s3.url, *to_s3.flags)
    assert report["ok"] is True, report
    assert report["skipped"] >= KILL_AFTER and report["copied"] + report["skipped"] == \
        ROUND_TRIP_OBJECTS
    # Every copy was read back by the migration itself; here: nothing missing or extra.
    fsck = report_of(dataset.data_dir, "fsck", env={"GATEWAY_BACKEND": to_s3.url, **to_s3.env})
    assert fsck["ok"] is True, fsck
    _read_everything(dataset, to_s3.backend_env)

    # s3 → fs (a fresh directory), with the gateway's backend set to the s3 one.
    back = Target(f"fs://{tmp_path / 'objects-back'}")
    report = report_of(dataset.data_dir, "migrate", "--to", back.url,
                       env={"GATEWAY_BACKEND": to_s3.url, **to_s3.env})
    assert (report["ok"], report["copied"]) == (True, ROUND_TRIP_OBJECTS), report
    fsck = report_of(dataset.data_dir, "fsck", "--checksums", env=back.backend_env)
    assert fsck["ok"] is True, fsck
    _read_everything(dataset, back.backend_env)
