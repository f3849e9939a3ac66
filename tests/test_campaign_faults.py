"""The faults campaign's short version: a full disk, a locked and a full SQLite database,
an unreachable PostgreSQL, an upstream S3 server down, a stop under load and crawling
clients, each injected into a real gateway, answered with the right status and recovered
from."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns import faults


@pytest.mark.slow
def test_faults_campaign(tmp_path: Path) -> None:
    report = faults.run(tmp_path, long=False)
    message = report.render()
    assert report.ok, message
    figures = report.figures
    # Every fault was injected and met by requests, which got the fault's status.
    expected = {"disk full": "507", "database locked": "503", "upstream down": "503",
                "graceful shutdown": "200"}
    if "database full: skipped" not in figures:
        expected["database full"] = "507"
    if "database unreachable: skipped" not in figures:
        expected["database unreachable"] = "503"
        assert figures["database unreachable: commits with a lost answer"] >= 2, message
    for fault, status in expected.items():
        assert figures[f"{fault}: faults injected"] >= 1, (fault, message)
        assert figures[f"{fault}: requests during fault"] >= 4, (fault, message)
        assert f"{status} x" in figures[f"{fault}: statuses during fault"], (fault, message)
    logged = [name for name in figures if name.endswith("internal errors logged")]
    assert len(logged) >= 6 and not any(figures[name] for name in logged), message
    for fault in ("disk full", "database locked", "upstream down"):
        assert figures[f"{fault}: recovery seconds (max)"] < 30, message
    assert figures["disk full: leftover staging files"] == 0, message
    assert figures["graceful shutdown: requests in flight at SIGTERM"] >= 5, message
    assert figures["graceful shutdown: drained uploads found whole after restart"] >= 2, message
    assert figures["slow clients: slowloris sockets closed by the server"] == 200, message
    assert figures["slow clients: requests served during slowloris"] >= 10, message
    assert figures["slow clients: stalled uploads"] == 1, message
    assert figures["slow clients: unread downloads"] == 1, message
