"""``gateway migrate``: every blob copied to another backend, verified, resumable; the
gateway then serves everything from the target after a settings change."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.service.migrate import backend_identity, journal_path
from tests._dataset import (
    BUCKETS,
    Dataset,
    cli_report,
    client,
    delete,
    popen_cli,
    populated,
    put,
    read_back,
    serving,
)


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


@pytest.fixture(params=["fs"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "fs":
        yield Target(f"fs://{tmp_path / 'objects2'}")
    else:  # pragma: no cover - more targets (s3://) come with their fixtures
        raise AssertionError(request.param)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return populated(tmp_path_factory)


@pytest.fixture
def source(dataset: Dataset, tmp_path: Path) -> Dataset:
    return dataset.clone(tmp_path / "data")


def test_migrate_then_switch(source: Dataset, target: Target) -> None:
    report = cli_report(source.data_dir, "migrate", "--to", target.url, *target.flags)
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

    clean = cli_report(source.data_dir, "fsck", "--checksums", env=target.backend_env)
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

    report = cli_report(source.data_dir, "migrate", "--to", target.url, *target.flags)
    assert report["ok"] is True
    assert report["skipped"] >= 50
    assert report["copied"] + report["skipped"] == total
    read_back(source, target.backend_env)


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

    again = cli_report(source.data_dir, "migrate", "--to", target.url, *target.flags)
    assert again["copied"] == 0 and again["skipped"] == len(source.objects)
    read_back(source, target.backend_env)


def test_refuses_the_configured_backend(source: Dataset,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # The default, spelled as a path (with a trailing slash); and one that keeps nothing.
    for url in (f"fs://{source.data_dir / 'objects'}/", "memory"):
        code = main(["migrate", "--to", url, "--data-dir", str(source.data_dir)])
        assert code == 2, url
        assert "gateway migrate: the " in capsys.readouterr().err
    assert not list(source.data_dir.glob("migrate-*.journal"))


def test_mismatch_is_reported_and_not_journaled(source: Dataset, target: Target) -> None:
    bucket, key = next(iter(source.objects))
    blob_key = source.blob_key(bucket, key)
    blob = source.data_dir / "objects" / "blobs" / blob_key
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))

    report = cli_report(source.data_dir, "migrate", "--to", target.url, *target.flags,
                        "--no-verify", expect=1)
    assert report["ok"] is False and report["verified"] is False
    assert report["mismatches"]["count"] == 1
    example = report["mismatches"]["examples"][0]
    assert (example["bucket"], example["key"], example["blob_key"]) == (bucket, key, blob_key)
    assert "ETag" in example["detail"]
    assert report["copied"] == len(source.objects) - 1
    assert blob_key not in _journal(source, target).read_text().split()
