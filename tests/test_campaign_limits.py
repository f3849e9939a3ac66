"""The limits campaign, short version: every cap answered with its S3/JSON error."""

from __future__ import annotations

from pathlib import Path

from campaigns import limits


def test_limits_campaign(tmp_path: Path) -> None:
    report = limits.run(tmp_path, long=False)
    assert report.ok, report.render()
    assert report.figures["limits checked"] >= 30
    assert report.figures["DeleteObjects with 1,001 keys"] == "400 MalformedXML"
    assert report.figures["part of 5 GiB + 1 byte"] == "400 EntityTooLarge"
