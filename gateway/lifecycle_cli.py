"""``gateway lifecycle run``: apply every bucket's lifecycle rules once, from the shell.

A running gateway does this by itself (hourly, on one instance at a time); the command is
for operators who want it now, and for tests, which give it a clock (``--now``) to see
what the rules do days or months ahead. It takes no job lease: a run alongside the
gateway's own only repeats deletes that are already done.

Exit codes: 0 done, 1 some bucket failed (named in the report), 2 a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.core import Gateway
from gateway.metadata.db import Database
from gateway.service.lifecycle import LifecycleReport
from gateway.settings import Settings
from storage_backends.registry import open_backend

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_parsers(sub: Any) -> None:
    lifecycle = sub.add_parser("lifecycle", help="bucket lifecycle rules")
    commands = lifecycle.add_subparsers(dest="lifecycle_command", required=True)
    run = commands.add_parser(
        "run", help="apply every bucket's lifecycle rules once",
        description="Expire objects, remove noncurrent versions and expired delete markers, "
                    "and abort old multipart uploads as the buckets' lifecycle rules say "
                    "(and the bot packages' .gbdrive/temp/ folders' GATEWAY_TEMP_EXPIRY).")
    run.add_argument("--now", metavar="ISO8601",
                     help="evaluate the rules at this time, e.g. 2030-01-01T00:00:00Z "
                          "(default: the clock); a time without a zone is UTC")
    run.add_argument("--data-dir", default=None, help="as GATEWAY_DATA_DIR")
    run.add_argument("--database-url", default=None, help="as GATEWAY_DATABASE_URL")
    run.add_argument("--backend", default=None, help="as GATEWAY_BACKEND")
    run.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    when = datetime.fromisoformat(text.strip())  # ValueError: not ISO 8601
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


async def _run(settings: Settings, now: datetime) -> LifecycleReport:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = open_backend(settings.backend, data_dir=settings.data_dir,
                           s3=settings.s3_options())
    try:
        db = Database(settings.effective_database_url)
        await db.start()
        try:
            return await Gateway.build(settings, db, backend).lifecycle.run(now)
        finally:
            await db.aclose()
    finally:
        await backend.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        now = parse_now(args.now)
        settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url,
                                     backend=args.backend)
        if settings.backend.strip().lower() == "memory":
            raise ValueError("the memory backend keeps nothing between processes")
    except ValueError as exc:
        print(f"gateway lifecycle run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = asyncio.run(_run(settings, now))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"lifecycle at {report.as_dict()['now']}: {report.buckets} bucket(s); "
              f"{report.expired} expired, {report.delete_markers_removed} expired delete "
              f"marker(s) and {report.noncurrent_removed} noncurrent version(s) removed, "
              f"{report.uploads_aborted} upload(s) aborted")
        for name in report.failed_buckets:
            print(f"  failed: {name} (see the log)")
    return 0 if report.ok else EXIT_FAILED
