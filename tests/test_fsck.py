"""``gateway fsck``: the metadata checked against the backend, orphans removed with
``--repair``, what cannot be repaired listed by bucket and key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests._dataset import Dataset, cli_report, populated
from tests._server import run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return populated(tmp_path_factory)


@pytest.fixture
def source(dataset: Dataset, tmp_path: Path) -> Dataset:
    return dataset.clone(tmp_path / "data")


def _blob_path(data: Dataset, blob_key: str) -> Path:
    return data.data_dir / "objects" / "blobs" / blob_key


def _flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _plant_orphan(data: Dataset, bucket: str, name: str, *, age: float) -> Path:
    digest = name * 32
    path = _blob_path(data, f"b/{data.bucket_id(bucket)}/{digest[:2]}/{digest}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left behind by a crash")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_clean(source: Dataset) -> None:
    report = cli_report(source.data_dir, "fsck", "--checksums")
    assert report["ok"] is True and report["problems"] == 0
    assert report["objects_checked"] == report["blobs_listed"] == len(source.objects)
    assert report["bytes_read"] == sum(source.sizes.values())
    assert report["unverifiable"] == 1  # the copy of a multipart object: no part layout
    assert report["uploads_in_progress"] == 1
    assert report["young_skipped"] == 0


def test_finds_damage_and_repairs_orphans(source: Dataset) -> None:
    small = [k for k in source.objects if k[1].startswith("dir") and source.sizes[k] > 2]
    deleted, truncated, corrupted = small[:3]
    _blob_path(source, source.blob_key(*deleted)).unlink()
    blob = _blob_path(source, source.blob_key(*truncated))
    blob.write_bytes(blob.read_bytes()[:-1])
    _flip(_blob_path(source, source.blob_key(*corrupted)))  # same size: only --checksums
    # A multipart blob is stored as segments (one per part) on the local backend.
    leaf = _blob_path(source, source.blob_key(*source.multipart))
    (segment,) = leaf.parent.glob(f"{leaf.name}@seg-*/00002.*")
    _flip(segment, 1000)
    old = _plant_orphan(source, "mig-one", "a", age=2 * 86400)
    young = _plant_orphan(source, "mig-two", "c", age=0)
    old_key = str(old.relative_to(source.data_dir / "objects" / "blobs"))

    report = cli_report(source.data_dir, "fsck", expect=1)
    assert report["ok"] is False and report["problems"] == 3
    assert report["missing"]["count"] == 1
    missing = report["missing"]["examples"][0]
    assert (missing["bucket"], missing["key"]) == deleted
    assert report["size_mismatches"]["count"] == 1
    size = report["size_mismatches"]["examples"][0]
    assert (size["bucket"], size["key"]) == truncated
    assert str(source.sizes[truncated] - 1) in size["detail"]
    assert report["checksum_mismatches"]["count"] == 0
    assert report["orphans"]["count"] == 1
    assert report["orphans"]["examples"][0]["blob_key"] == old_key
    assert report["young_skipped"] == 1
    assert old.exists()  # reported, not removed

    report = cli_report(source.data_dir, "fsck", "--checksums", "--repair", expect=1)
    assert report["missing"]["count"] == report["size_mismatches"]["count"] == 1
    found = {(e["bucket"], e["key"]): e["detail"]
             for e in report["checksum_mismatches"]["examples"]}
    assert set(found) == {corrupted, source.multipart}
    assert "ETag" in found[corrupted]
    assert found[source.multipart].startswith("part 2 ")
    assert report["orphans"]["count"] == report["orphans_removed"] == 1
    assert report["problems"] == 4
    assert not old.exists() and young.exists()

    # What cannot be repaired stays listed, by bucket and key, for the operator.
    result = run_cli(source.data_dir, "fsck", "--quiet")
    assert result.returncode == 1, result.stderr
    assert f"{deleted[0]}/{deleted[1]}" in result.stdout
    assert "missing blobs" in result.stdout and "orphan" not in result.stdout
