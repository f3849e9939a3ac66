"""The soak campaign, short: 64 concurrent clients of mixed S3, presigned and JSON API
traffic for a minute against one gateway, with nothing lost, no 5xx and flat memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from campaigns import soak
from campaigns._soak_model import SHARED_KEYS, SharedKeys, body_for, identify, md5

OPERATIONS = {
    "put_small", "put_medium", "put_shared", "put_new", "presigned_put", "api_upload",
    "get", "get_range", "get_shared", "get_shared_range", "presigned_get", "api_download",
    "head", "head_shared", "list", "list_shared", "api_list", "copy", "copy_shared",
    "delete", "api_delete", "delete_batch", "mpu_create", "mpu_part", "mpu_complete",
    "mpu_abort",
}


def test_the_checks_catch_torn_foreign_and_stale_bodies() -> None:
    """The soak's verdicts are only as good as its checks: they must be able to fail."""
    first = (1, 1, 5000)
    whole = body_for(*first)
    assert identify(whole) == first
    assert identify(whole[:100] + body_for(2, 7, 5000)[100:]) is None  # mixed
    assert identify(whole[:-1]) is None  # torn
    assert identify(b"not a soak body at all") is None

    shared, key = SharedKeys(), SHARED_KEYS[0]
    shared.begin(key, first, md5(whole))
    shared.ack(key, first)
    time.sleep(0.01)
    second = (2, 1, 10)
    shared.begin(key, second, md5(body_for(*second)))
    shared.ack(key, second)
    floor = shared.floor_of(key)  # a read starting now
    assert shared.stale(key, second, floor) is None
    assert "stale" in (shared.stale(key, first, floor) or "")
    assert "never written" in (shared.stale(key, (3, 1, 10), floor) or "")
    in_flight = (4, 1, 10)
    shared.begin(key, in_flight, md5(body_for(*in_flight)))
    assert shared.stale(key, in_flight, floor) is None  # concurrent with the read: either
    assert shared.by_etag[md5(body_for(*in_flight))] == in_flight


@pytest.mark.slow
def test_soak_short(tmp_path: Path) -> None:
    report = soak.run(tmp_path, long=False)
    assert report.ok, report.render()
    figures = report.figures
    assert figures["clients"] == soak.CLIENTS
    assert figures["load s"] >= soak.SHORT_SECONDS
    assert figures["requests"] >= 2000, report.render()
    exercised = {name.strip() for name in figures if name.startswith("  ")}
    assert not OPERATIONS - exercised, OPERATIONS - exercised
    assert figures["status 5xx"] == 0 and figures["mismatches"] == 0
    assert figures["client exceptions"] == 0
    assert figures["status 2xx"] >= 0.8 * figures["requests"]
    assert figures["change feed events"] >= 500
    assert figures["websocket events"] == figures["change feed events"]
    assert figures["server samples"] >= 0.8 * soak.SHORT_SECONDS
    assert figures["server RSS growth %"] < soak.RSS_GROWTH_LIMIT
    assert figures["final sweep reads"] >= soak.CLIENTS * 8
    assert figures["fsck objects checked"] > 0 and figures["fsck problems"] == 0
