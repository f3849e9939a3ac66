"""Faults: the disk fills, the database is locked or goes away, the upstream S3 server goes
down, the gateway is stopped under load, clients crawl.

Each fault is injected into real gateway processes over real HTTP:

- **disk full**: the local-filesystem backend on an 8 MiB tmpfs (or, where mounting is not
  permitted, ENOSPC injected into its file writes), filled by objects and a filler file.
  Writes answer 507 ``InsufficientStorage`` (S3 XML and JSON), nothing partial is
  visible, no staging file is left, reads go on; once space returns, writes succeed.
- **database locked** (SQLite): another connection holds ``BEGIN EXCLUSIVE`` longer than
  the gateway's busy timeout. Writes answer 503, reads go on; the lock released, writes
  succeed and nothing refused is visible.
- **database unreachable** (PostgreSQL, through a TCP proxy that is cut: every connection
  reset, new ones refused): every request answers 503 and ``/readyz`` says not ready;
  restored, the service recovers by itself.
- **upstream down** (the ``s3://`` backend over moto, through a cut proxy): what needs
  bytes answers 503, what needs only metadata works; restored, everything recovers.
- **graceful shutdown**: SIGTERM with slow uploads and downloads in flight: they finish
  with 2xx and intact bytes, new connections are refused, the process exits; a request
  outliving ``GATEWAY_SHUTDOWN_GRACE_SECONDS`` is cut and leaves nothing.
- **slow clients** (``GATEWAY_REQUEST_HEADER_TIMEOUT``, ``GATEWAY_IDLE_TIMEOUT``):
  slowloris sockets are closed around the header timeout while normal requests are served;
  an upload that stops, and a download nobody reads, are closed after the idle timeout,
  leaving no object, no staging file and no memory held.

The long version repeats each fault more often and holds it longer.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

from campaigns._faults_database import database_locked, database_unreachable
from campaigns._faults_serving import graceful_shutdown, slow_clients
from campaigns._faults_storage import disk_full, upstream_down
from campaigns._report import Report

__all__ = ["database_locked", "database_unreachable", "disk_full", "graceful_shutdown",
           "run", "slow_clients", "upstream_down"]


def run(workdir: Path, *, long: bool = False) -> Report:
    report = Report("faults", long=long)
    phases: list[tuple[str, Callable[[Path, Report, bool], None]]] = [
        ("disk-full", disk_full),
        ("database-locked", database_locked),
        ("database-unreachable", database_unreachable),
        ("upstream-down", upstream_down),
        ("graceful-shutdown", graceful_shutdown),
        ("slow-clients", slow_clients),
    ]
    for name, phase in phases:
        work = workdir / name
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            phase(work, report, long)
        except Exception as exc:
            report.fail(f"{name}: aborted by {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exception(exc)[-4:]))
        report.figure(f"{name.replace('-', ' ')}: phase seconds",
                      round(time.monotonic() - started, 1))
    return report
