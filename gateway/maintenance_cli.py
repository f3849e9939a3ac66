"""``gateway migrate`` and ``gateway fsck``: moving blobs to another backend, and checking
the metadata against the backend, from the shell (see ``gateway.service.migrate`` and
``gateway.service.fsck``).

Exit codes: 0 all is well, 1 problems found (listed in the report), 2 nothing was done
(a bad argument).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tqdm import tqdm

from gateway.metadata.db import Database
from gateway.service.context import Context
from gateway.service.fsck import FsckOptions, FsckReport, fsck
from gateway.service.maintenance import Findings
from gateway.service.migrate import (
    Journal,
    JournalBusy,
    MigrateOptions,
    MigrateReport,
    backend_identity,
    journal_path,
    migrate,
)
from gateway.settings import Settings, parse_size
from storage_backends import Backend
from storage_backends.registry import open_backend

EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Nothing was done: the command cannot run as given."""


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="as GATEWAY_DATA_DIR")
    common.add_argument("--database-url", default=None, help="as GATEWAY_DATABASE_URL")
    common.add_argument("--backend", default=None,
                        help="the backend to read (default: GATEWAY_BACKEND, as `serve`)")
    common.add_argument("--json", action="store_true",
                        help="print the report as one JSON object (no progress bar)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_argument("--concurrency", type=int, default=4, help="blobs at once (4)")

    mig = sub.add_parser(
        "migrate", parents=[common],
        help="copy every object's bytes to another backend",
        description="Copy every object's blob to another backend under the same blob key, "
                    "verifying each, so that switching is only GATEWAY_BACKEND=<url>. "
                    "Resumable: verified blobs are journaled in the data dir "
                    "(migrate-<hash>.journal) and skipped by the next run; delete the journal "
                    "to start over. The gateway may keep serving; run once more with writes "
                    "stopped right before switching. Exit 1 when some blob could not be "
                    "copied and verified (listed), 2 when nothing was done.")
    mig.add_argument("--to", required=True, metavar="URL",
                     help="the target: fs:///abs/path or s3://bucket/prefix")
    mig.add_argument("--to-s3-endpoint", help="the target's S3 server (default: "
                     "GATEWAY_S3_ENDPOINT)")
    mig.add_argument("--to-s3-access-key", help="default: GATEWAY_S3_ACCESS_KEY")
    mig.add_argument("--to-s3-secret-key", help="default: GATEWAY_S3_SECRET_KEY")
    mig.add_argument("--to-s3-region", help="default: GATEWAY_S3_REGION")
    mig.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                     help="read every blob back from the target and compare (default: on)")
    mig.add_argument("--limit-rate", metavar="SIZE",
                     help="bytes per second at most, e.g. 50MB (spares a serving gateway)")

    chk = sub.add_parser(
        "fsck", parents=[common], help="check the metadata against the backend",
        description="Check that every object's blob exists with its size (and, with "
                    "--checksums, its MD5s), and find blobs no object references. Missing "
                    "or damaged blobs are listed by bucket and key, never repaired.")
    chk.add_argument("--checksums", action="store_true",
                     help="also read every blob and check it against its ETag")
    chk.add_argument("--repair", action="store_true",
                     help="remove orphan blobs older than GATEWAY_GC_GRACE_SECONDS")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(data_dir=args.data_dir, database_url=args.database_url,
                             backend=args.backend)


def _open(url: str, settings: Settings, s3: Any) -> Backend:
    if url.strip().lower() == "memory":
        raise UsageError("the memory backend keeps nothing between processes")
    try:
        return open_backend(url, data_dir=settings.data_dir, s3=s3)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@asynccontextmanager
async def _context(settings: Settings) -> AsyncIterator[Context]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = _open(settings.backend, settings, settings.s3_options())
    try:
        db = Database(settings.effective_database_url)
        await db.start()
        try:
            yield Context(settings, db, backend)
        finally:
            await db.aclose()
    finally:
        await backend.aclose()


class _Bar:
    """A tqdm bar on stderr as a ``Progress``, shown once its total is known."""

    def __init__(self, *, enabled: bool, **kwargs: Any) -> None:
        self.enabled = enabled
        self.kwargs = kwargs
        self.bar: tqdm[Any] | None = None

    def grow(self, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, **self.kwargs)
            return
        self.bar.total = (self.bar.total or 0) + total
        self.bar.refresh()

    def advance(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- migrate -------------------------------------------------------------------------------


async def _migrate(args: argparse.Namespace) -> MigrateReport:
    settings = _settings(args)
    target_s3 = dataclasses.replace(settings.s3_options(), **{
        name: value for name, value in (
            ("endpoint", args.to_s3_endpoint), ("access_key", args.to_s3_access_key),
            ("secret_key", args.to_s3_secret_key), ("region", args.to_s3_region))
        if value is not None})
    source_id = backend_identity(settings.backend, data_dir=settings.data_dir,
                                 s3_endpoint=settings.s3_endpoint)
    target_id = backend_identity(args.to, data_dir=settings.data_dir,
                                 s3_endpoint=target_s3.endpoint)
    if source_id == target_id:
        raise UsageError(f"the target {args.to!r} is the configured backend "
                         f"({settings.backend!r}): nothing to migrate")
    if settings.s3_placement == "keys" and (
            settings.backend.lower().startswith("s3://") or args.to.lower().startswith("s3://")):
        # Blob names there carry upstream version ids; another store cannot take them.
        raise UsageError("gateway migrate moves opaque placements only "
                         "(GATEWAY_S3_PLACEMENT=keys is set)")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    try:
        rate = parse_size(args.limit_rate) if args.limit_rate else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = MigrateOptions(verify=args.verify, concurrency=args.concurrency,
                             limit_rate=rate or None)
    target = _open(args.to, settings, target_s3)
    try:
        async with _context(settings) as ctx:
            bar = _Bar(enabled=not (args.json or args.quiet), unit="B", unit_scale=True,
                       unit_divisor=1024, desc="migrate")
            try:
                journal = Journal(journal_path(settings.data_dir, target_id),
                                  header=f"gateway migrate --to {args.to} ({target_id})")
                return await migrate(ctx, target, journal=journal,
                                     source_name=settings.backend, target_name=args.to,
                                     options=options, progress=bar)
            finally:
                bar.close()
    finally:
        await target.aclose()


def _print_findings(title: str, findings: Findings) -> None:
    if not findings.count:
        return
    print(f"{title}: {findings.count}")
    for finding in findings.examples:
        print(f"  {finding.describe()}")
    if findings.count > len(findings.examples):
        print(f"  ... and {findings.count - len(findings.examples)} more")


def _print_migrate(report: MigrateReport, *, quiet: bool) -> None:
    print(f"migrated {report.source} -> {report.target}")
    print(f"  copied {report.copied} objects, {report.bytes_copied} bytes in "
          f"{report.seconds:.1f} s ({report.mb_per_second:.1f} MB/s), "
          f"{'verified by reading back' if report.verified else 'not read back'}")
    print(f"  skipped {report.skipped} already done (journal {report.journal}); "
          f"{report.vanished} deleted meanwhile; {report.passes} pass(es)")
    if report.unverifiable:
        print(f"  {report.unverifiable} multipart object(s) without a part layout: checked "
              "against the source and their size only")
    _print_findings("mismatches (not marked done)", report.mismatches)
    _print_findings("missing source blobs", report.missing)
    _print_findings("errors (not marked done; run again)", report.errors)
    if report.incomplete:
        print("objects kept arriving: run `gateway migrate` again")
    if report.uploads_in_progress:
        print(f"{report.uploads_in_progress} multipart upload(s) in progress are not "
              "migrated: let them complete or abort them before switching.")
    if not quiet and report.ok:
        print("To switch: stop writes, run this command once more (it copies only what is "
              f"new), then start the gateway with GATEWAY_BACKEND={report.target}.")


# -- fsck ----------------------------------------------------------------------------------


async def _fsck(args: argparse.Namespace) -> FsckReport:
    settings = _settings(args)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    name = backend_identity(settings.backend, data_dir=settings.data_dir,
                            s3_endpoint=settings.s3_endpoint)
    async with _context(settings) as ctx:
        bar = _Bar(enabled=not (args.json or args.quiet), unit="obj", desc="fsck")
        try:
            return await fsck(ctx, backend_name=name, progress=bar, options=FsckOptions(
                checksums=args.checksums, repair=args.repair, concurrency=args.concurrency))
        finally:
            bar.close()


def _print_fsck(report: FsckReport) -> None:
    print(f"checked {report.objects_checked} objects and {report.blobs_listed} blobs of "
          f"{report.backend} in {report.seconds:.1f} s"
          + (f", {report.bytes_read} bytes read" if report.checksums else ""))
    _print_findings("missing blobs (restore them from a backup)", report.missing)
    _print_findings("size mismatches", report.size_mismatches)
    _print_findings("checksum mismatches", report.checksum_mismatches)
    _print_findings("orphan blobs" + (f", {report.orphans_removed} removed" if report.repair
                                      else " (--repair removes them)"), report.orphans)
    _print_findings("errors", report.errors)
    if report.young_skipped:
        print(f"{report.young_skipped} unreferenced blob(s) younger than the grace period "
              "skipped (writes in flight)")
    if report.unverifiable:
        print(f"{report.unverifiable} multipart object(s) without a part layout: size checked "
              "only")
    print("no problems" if report.ok else f"{report.problems} problem(s)")


def run(args: argparse.Namespace) -> int:
    command = args.command
    try:
        report: MigrateReport | FsckReport = (
            asyncio.run(_migrate(args)) if command == "migrate" else asyncio.run(_fsck(args)))
    except (UsageError, JournalBusy) as exc:
        print(f"gateway {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"gateway {command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif isinstance(report, MigrateReport):
        _print_migrate(report, quiet=args.quiet)
    else:
        _print_fsck(report)
    return 0 if report.ok else EXIT_PROBLEMS

