"""``gateway quota list|get|set``: bucket quotas and usage from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.admin_cli import _table
from gateway.errors import GatewayError
from gateway.metadata.db import Database
from gateway.service.context import Context
from gateway.service.quota import BucketUsage, QuotaService
from gateway.settings import Settings, parse_limit
from storage_backends.memory import MemoryBackend

_COLUMNS = ("bucket", "owner", "used", "max_bytes", "percent_bytes", "objects",
            "max_objects", "max_object_size")


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="as GATEWAY_DATA_DIR")
    common.add_argument("--database-url", default=None, help="as GATEWAY_DATABASE_URL")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    quota = sub.add_parser("quota", help="bucket quotas and usage").add_subparsers(
        dest="action", required=True)
    quota.add_parser("list", parents=[common], help="every bucket's usage and limits")
    get = quota.add_parser("get", parents=[common], help="one bucket's usage and limits")
    get.add_argument("bucket")
    put = quota.add_parser(
        "set", parents=[common],
        help="set a bucket's limits: a size (10GiB, 500MB, 1000), 'unlimited', or "
             "'default' (follow GATEWAY_QUOTA_*)")
    put.add_argument("bucket")
    put.add_argument("--max-bytes")
    put.add_argument("--max-objects")
    put.add_argument("--max-object-size")


def _limit(text: str | None, *, count: bool = False) -> Any:
    """CLI text → what ``QuotaService.set`` takes; None: leave the limit alone."""
    if text is None:
        return ...
    if text.strip().lower() == "default":
        return "default"
    if count:
        value = text.strip().lower()
        return None if value in ("unlimited", "none", "off") else int(value)
    return parse_limit(text)


def human(size: int | None) -> str:
    if size is None:
        return "unlimited"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)  # unreachable


def _row(usage: BucketUsage) -> dict[str, Any]:
    data = usage.as_dict()
    pct = data["percent_bytes"]
    return {"bucket": usage.bucket, "owner": usage.owner, "used": human(usage.used_bytes),
            "max_bytes": human(usage.limits.max_bytes),
            "percent_bytes": "" if pct is None else f"{pct:.1f}%",
            "objects": usage.used_objects,
            "max_objects": "unlimited" if usage.limits.max_objects is None
            else usage.limits.max_objects,
            "max_object_size": human(usage.limits.max_object_size)}


async def _run(args: argparse.Namespace) -> list[BucketUsage]:
    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    db = Database(settings.effective_database_url)
    await db.start()
    try:
        # Quotas touch no object bytes: a memory backend stands in.
        quotas = QuotaService(Context(settings, db, MemoryBackend()))
        if args.action == "list":
            return await quotas.list_all()
        if args.action == "get":
            return [await quotas.get(args.bucket)]
        changes = {name: value for name, value in (
            ("max_bytes", _limit(args.max_bytes)),
            ("max_objects", _limit(args.max_objects, count=True)),
            ("max_object_size", _limit(args.max_object_size))) if value is not ...}
        if not changes:
            raise ValueError("nothing to set: give --max-bytes, --max-objects or "
                             "--max-object-size")
        return [await quotas.set(args.bucket, **changes)]
    finally:
        await db.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(args))
    except (ValueError, GatewayError) as exc:
        print(f"gateway quota {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        data: Any = [u.as_dict() for u in result]
        print(json.dumps(data if args.action == "list" else data[0], indent=2))
    else:
        print(_table([_row(u) for u in result], _COLUMNS))
    return 0

