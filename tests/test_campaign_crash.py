"""The crash campaign's short version: kill -9 under a mixed workload, nothing acknowledged
lost, nothing half-visible, quotas exact, fsck clean after garbage collection."""

from __future__ import annotations

from pathlib import Path

import pytest

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
