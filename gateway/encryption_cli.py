"""``gateway encryption status|rotate-master-key``: master keys of encryption at rest.

Rotation never touches a blob: every object's data key stays, only its wrapping (in
``objects.encryption`` and ``multipart_uploads.encryption``) is redone under the new master
key, a batch of rows per transaction. Each row is updated only if it is still what was read,
so a concurrent change wins; an interrupted run leaves rows under the old key or the new
one, both readable, and the next run (``--rewrap-only``) finishes the job.

Key file (``<data dir>/master.keys``): ``rotate-master-key`` appends a new key, which
encrypts from then on (running gateways notice within seconds), then re-wraps.
``GATEWAY_MASTER_KEY``: set it to ``<new>,<old>`` on every instance and restart them, then
run ``rotate-master-key``, which re-wraps under ``<new>``; once ``status`` shows nothing
under ``<old>``, drop it from the variable.

Exit codes: 0 done, 1 some rows could not be re-wrapped (listed), 2 nothing was done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, Text, cast, select, update
from sqlalchemy.engine import Connection

from gateway.errors import GatewayError
from gateway.metadata.db import Database
from gateway.metadata.models import multipart_uploads, objects
from gateway.service import encryption
from gateway.settings import Settings

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
_TABLES: tuple[Table, ...] = (objects, multipart_uploads)


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="as GATEWAY_DATA_DIR")
    common.add_argument("--database-url", default=None, help="as GATEWAY_DATABASE_URL")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    enc = sub.add_parser("encryption", help="master keys of encryption at rest")\
        .add_subparsers(dest="action", required=True)
    enc.add_parser("status", parents=[common],
                   help="the master keys, and how many objects and uploads each wraps")
    rotate = enc.add_parser(
        "rotate-master-key", parents=[common],
        help="add a new master key and re-wrap every data key under it (no blob is "
             "rewritten)",
        description="Append a new master key to <data dir>/master.keys (it encrypts from "
                    "then on; the old ones still decrypt), then re-wrap every object's and "
                    "upload's data key under it, in batches. No blob is read or rewritten. "
                    "With GATEWAY_MASTER_KEY set, no key is generated: data keys are "
                    "re-wrapped under the variable's first key. Safe to interrupt: run "
                    "again with --rewrap-only to finish.")
    rotate.add_argument("--rewrap-only", action="store_true",
                        help="generate no key: re-wrap what is not yet under the current one")
    rotate.add_argument("--batch", type=int, default=200, help="rows per transaction (200)")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)


@dataclass
class RewrapReport:
    kid: str
    generated: bool
    scanned: int = 0
    rewrapped: int = 0
    unchanged: int = 0
    #: Rows changed by someone else between the read and the write (left as they are).
    raced: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"master_key": self.kid, "generated": self.generated, "scanned": self.scanned,
                "rewrapped": self.rewrapped, "unchanged": self.unchanged, "raced": self.raced,
                "failures": self.failures, "ok": self.ok}


def _id(table: Table) -> Any:
    return table.c.id


def _page(table: Table, after: Any, limit: int) -> Any:
    raw = cast(table.c.encryption, Text)
    def unit(conn: Connection) -> list[tuple[Any, str]]:
        rows = conn.execute(select(_id(table), raw).where(
            table.c.encryption.is_not(None), _id(table) > after)
            .order_by(_id(table)).limit(limit)).all()
        return [(row[0], row[1]) for row in rows]
    return unit


def _start(table: Table) -> Any:
    return "" if table is multipart_uploads else 0


async def _scan(db: Database, batch: int) -> Any:
    """Every (table, id, raw JSON text, parameters) with parameters, a page at a time."""
    for table in _TABLES:
        after = _start(table)
        while True:
            page = await db.read(_page(table, after, batch))
            if not page:
                break
            after = page[-1][0]
            yield table, page


def _decode(raw: str | None) -> dict[str, Any] | None:
    value = json.loads(raw) if raw else None
    return value if isinstance(value, dict) and value else None


async def rewrap_all(db: Database, keyring: encryption.Keyring, *, batch: int = 200,
                     generated: bool = False) -> RewrapReport:
    """Re-wrap every stored data key under ``keyring.current``; see the module docstring."""
    report = RewrapReport(keyring.current.kid, generated)
    async for table, page in _scan(db, batch):
        changes: list[tuple[Any, str, dict[str, Any]]] = []
        for row_id, raw in page:
            report.scanned += 1
            try:
                params = _decode(raw)
                if params is None:
                    continue
                new = encryption.rewrap(params, keyring)
            except (GatewayError, ValueError) as exc:
                report.failures.append(f"{table.name} {row_id}: {exc}")
                continue
            if new is params:
                report.unchanged += 1
            else:
                changes.append((row_id, raw, new))
        if not changes:
            continue

        def write(conn: Connection, table: Table = table,
                  changes: list[tuple[Any, str, dict[str, Any]]] = changes) -> int:
            done = 0
            for row_id, raw, new in changes:
                result = conn.execute(update(table).where(
                    _id(table) == row_id, cast(table.c.encryption, Text) == raw)
                    .values(encryption=new))
                done += result.rowcount
            return done

        done = await db.write(write)
        report.rewrapped += done
        report.raced += len(changes) - done
    return report


async def key_usage(db: Database, *, batch: int = 500) -> dict[str, Counter[str]]:
    """Per table, how many rows each master key id (or ``sse-c``) wraps."""
    usage: dict[str, Counter[str]] = {t.name: Counter() for t in _TABLES}
    async for table, page in _scan(db, batch):
        for _, raw in page:
            try:
                params = _decode(raw)
            except ValueError:
                usage[table.name]["damaged"] += 1
                continue
            if params is None:
                continue
            mode = params.get("mode")
            usage[table.name][str(params.get("kid")) if mode == encryption.SSE_S3
                              else str(mode)] += 1
    return usage


async def _with_db(settings: Settings, fn: Any) -> Any:
    db = Database(settings.effective_database_url)
    await db.start()
    try:
        return await fn(db)
    finally:
        await db.aclose()


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keyring = encryption.Keyring.load(settings.master_key, settings.data_dir)
    usage = asyncio.run(_with_db(settings, key_usage))
    known = {k.kid for k in keyring.keys}
    current = keyring.keys[0].kid if keyring.keys else None
    keys = [{"id": k.kid, "current": k.kid == current,
             "source": "env" if keyring.from_env(k.kid) else "file",
             "objects": usage["objects"][k.kid], "uploads": usage["multipart_uploads"][k.kid]}
            for k in keyring.keys]
    missing = sorted({kid for counts in usage.values() for kid in counts
                      if kid not in known and kid not in (encryption.SSE_C, "damaged")})
    sse_c = {"objects": usage["objects"][encryption.SSE_C],
             "uploads": usage["multipart_uploads"][encryption.SSE_C]}
    result: dict[str, Any] = {
        "keys": keys, "sse_c": sse_c, "missing_keys": missing,
        "key_file": str(encryption.key_file_path(settings.data_dir))}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if not keys:
            print("no master key yet (one is created at the first SSE-S3 write)")
        for key in keys:
            mark = "*" if key["current"] else " "
            print(f"{mark} {key['id']}  ({key['source']})  objects {key['objects']}, "
                  f"uploads {key['uploads']}")
        print(f"SSE-C: objects {result['sse_c']['objects']}, "
              f"uploads {result['sse_c']['uploads']}")
        for kid in missing:
            print(f"MISSING: {kid} wraps data keys but is not configured", file=sys.stderr)
    return EXIT_PROBLEMS if missing else 0


def _rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.batch < 1:
        print("gateway encryption: --batch must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    keyring = encryption.Keyring.load(settings.master_key, settings.data_dir)
    generated = False
    if args.rewrap_only and not keyring.keys:
        print("gateway encryption: no master key is configured: nothing to re-wrap under",
              file=sys.stderr)
        return EXIT_USAGE
    if keyring.uses_env:
        if not args.rewrap_only and not args.json:
            print(f"{encryption.ENV_NAME} is set: re-wrapping under its first key "
                  f"{keyring.current.kid} (no key generated)")
    elif not args.rewrap_only:
        encryption.add_master_key(settings.data_dir)
        keyring.reload()
        generated = True
        if not args.json:
            print(f"new master key {keyring.current.kid} in "
                  f"{encryption.key_file_path(settings.data_dir)} (back it up)")
    report: RewrapReport = asyncio.run(_with_db(
        settings, lambda db: rewrap_all(db, keyring, batch=args.batch, generated=generated)))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"re-wrapped {report.rewrapped} data key(s) under {report.kid}; "
              f"{report.unchanged} already were; {report.scanned} row(s) scanned")
        if report.raced:
            print(f"{report.raced} row(s) changed meanwhile: run with --rewrap-only again")
        for failure in report.failures:
            print(f"failed: {failure}", file=sys.stderr)
    return 0 if report.ok else EXIT_PROBLEMS


def run(args: argparse.Namespace) -> int:
    try:
        return _status(args) if args.action == "status" else _rotate(args)
    except ValueError as exc:  # a malformed GATEWAY_MASTER_KEY or key file
        print(f"gateway encryption: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gateway encryption: interrupted (rows done so far stay re-wrapped; run "
              "`gateway encryption rotate-master-key --rewrap-only` to finish)",
              file=sys.stderr)
        return 130
