"""Background job leases across a crash: a gateway killed with SIGKILL while holding the
hourly housekeeping lease does not hold it for three hours — restarted, the gateway takes
the lease back once the dead instance has been silent for three heartbeats, and runs the
job (so garbage left by the crash is collected within minutes, not hours)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests import _postgres
from tests._server import GatewayProcess, database_for


def lease(data: Path) -> tuple[str, int]:
    """(owner, runs) of the housekeeping lease; ("", 0) before its first claim."""
    statement = "SELECT owner, runs FROM job_leases WHERE name = 'housekeeping'"
    url = database_for(data)
    if url:
        rows = _postgres.query(url, statement)
    else:
        with sqlite3.connect(f"file:{data / 'gateway.db'}?mode=ro", uri=True,
                             timeout=10) as conn:
            rows = conn.execute(statement).fetchall()
    return (str(rows[0][0]), int(rows[0][1])) if rows else ("", 0)


def wait_for_lease(data: Path, ok: Callable[[tuple[str, int]], bool], what: str,
                   timeout: float = 30.0) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        now = lease(data)
        if ok(now):
            return now
        assert time.monotonic() < deadline, (what, now)
        time.sleep(0.2)


def test_a_killed_holders_hourly_job_is_taken_over_after_a_restart(tmp_path: Path) -> None:
    # Housekeeping stays hourly (its default); heartbeats every second: a dead instance is
    # presumed dead after 3 s, and the restarted gateway asks again every 4 s.
    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_HEARTBEAT_SECONDS": "1"})
    server.start()
    try:
        first_owner, runs = wait_for_lease(server.data_dir, lambda lr: lr[1] >= 1,
                                           "the first housekeeping run")
        server.kill()
        started = time.monotonic()
        server.start()
        owner, after = wait_for_lease(server.data_dir,
                                      lambda lr: lr[0] != first_owner and lr[1] > runs,
                                      "the lease taken back from the dead instance")
        took = time.monotonic() - started
        # Within a few heartbeats of the restart (the lease itself would last 3 h).
        assert took < 20, took
        assert after == runs + 1 and owner
    finally:
        server.stop()
