"""``gateway user …`` and ``gateway key …``: account management from the shell.

Works on the same database as the server (settings from the environment or flags), without
a running server, so installations can be scripted — including importing known keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.auth.credentials import SecretBox
from gateway.metadata.db import Database
from gateway.service.accounts import AccountService
from gateway.service.context import Context
from gateway.service.tokens import PERMISSIONS, TokenService
from gateway.settings import Settings, parse_duration
from storage_backends.memory import MemoryBackend


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="as GATEWAY_DATA_DIR")
    common.add_argument("--database-url", default=None, help="as GATEWAY_DATABASE_URL")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action",
                                                                      required=True)
    add = user.add_parser("add", parents=[common], help="create a user")
    add.add_argument("name")
    add.add_argument("--display-name")
    add.add_argument("--email")
    add.add_argument("--canonical-id")
    add.add_argument("--role", choices=["member", "admin"], default="member")
    user.add_parser("list", parents=[common], help="list users")
    for verb in ("disable", "enable"):
        p = user.add_parser(verb, parents=[common], help=f"{verb} a user")
        p.add_argument("name")

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True)
    tcreate = token.add_parser("create", parents=[common],
                               help="create a token (shown once)")
    tcreate.add_argument("--user", required=True)
    tcreate.add_argument("--name", required=True)
    tcreate.add_argument("--permission", action="append", required=True,
                         choices=PERMISSIONS, help="repeat for several")
    expiry = tcreate.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", default="90d", help="e.g. 12h, 30d (default 90d)")
    expiry.add_argument("--expires-at", help="ISO 8601 date-time")
    tlist = token.add_parser("list", parents=[common], help="list tokens")
    tlist.add_argument("--user")
    revoke = token.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("token_id")

    key = sub.add_parser("key", help="manage S3 access keys").add_subparsers(
        dest="action", required=True)
    create = key.add_parser("create", parents=[common],
                            help="create a key (the secret is shown once)")
    create.add_argument("--user", required=True)
    create.add_argument("--access-key", help="import a known access key")
    create.add_argument("--secret-key", help="import a known secret key")
    listing = key.add_parser("list", parents=[common], help="list keys")
    listing.add_argument("--user")
    for verb in ("disable", "enable"):
        p = key.add_parser(verb, parents=[common], help=f"{verb} a key")
        p.add_argument("access_key")


@asynccontextmanager
async def _services(args: argparse.Namespace
                    ) -> AsyncIterator[tuple[AccountService, TokenService]]:
    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    db = Database(settings.effective_database_url)
    await db.start()
    try:
        # Account management touches no object bytes: a memory backend stands in.
        ctx = Context(settings, db, MemoryBackend())
        box = SecretBox.load(settings.secret_key, settings.data_dir)
        yield AccountService(ctx, box), TokenService(ctx)
    finally:
        await db.aclose()


def _expiry(args: argparse.Namespace) -> datetime:
    if args.expires_at:
        try:
            at = datetime.fromisoformat(args.expires_at)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {args.expires_at!r}") from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return datetime.now(UTC) + timedelta(seconds=parse_duration(args.expires_in))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    def cell(value: Any) -> str:
        if value is None:
            return ""
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


async def _run(command: str, args: argparse.Namespace) -> Any:
    async with _services(args) as (accounts, tokens):
        match command, args.action:
            case "token", "create":
                info, secret = await tokens.create(args.user, args.name, args.permission,
                                                   _expiry(args))
                return {**info.as_dict(), "token": secret}
            case "token", "list":
                return [t.as_dict() for t in await tokens.list(args.user)]
            case "token", "revoke":
                await tokens.revoke(args.token_id)
                return {"id": args.token_id, "revoked": True}
            case "user", "add":
                await accounts.add_user(args.name, role=args.role,
                                        display_name=args.display_name, email=args.email,
                                        canonical_id=args.canonical_id)
                return {"name": args.name, "role": args.role}
            case "user", "list":
                return await accounts.list_users()
            case "user", ("disable" | "enable"):
                await accounts.set_user_disabled(args.name, args.action == "disable")
                return {"name": args.name, "disabled": args.action == "disable"}
            case "key", "create":
                access, secret = await accounts.create_key(args.user, args.access_key,
                                                           args.secret_key)
                return {"user": args.user, "access_key": access, "secret_key": secret}
            case "key", "list":
                return await accounts.list_keys(args.user)
            case "key", ("disable" | "enable"):
                await accounts.set_key_enabled(args.access_key, args.action == "enable")
                return {"access_key": args.access_key, "enabled": args.action == "enable"}
    raise AssertionError("unreachable")


_COLUMNS = {
    ("user", "list"): ("name", "role", "display_name", "email", "disabled", "created_at"),
    ("key", "list"): ("access_key", "user", "enabled", "created_at"),
    ("token", "list"): ("id", "user", "name", "permissions", "prefix", "expires_at",
                        "revoked_at"),
}


def run(command: str, args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(command, args))
    except ValueError as exc:
        print(f"gateway {command} {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif (command, args.action) in _COLUMNS:
        print(_table(result, _COLUMNS[(command, args.action)]))
    elif command == "token" and args.action == "create":
        print(f"token: {result['token']}\nid: {result['id']}  expires: {result['expires_at']}"
              "\n(the token is shown this once; send it Base64-encoded in X-Api-Key)")
    elif command == "key" and args.action == "create":
        print(f"access key: {result['access_key']}\nsecret key: {result['secret_key']}\n"
              "(the secret is shown this once)")
    else:
        print(", ".join(f"{k}={v}" for k, v in result.items()))
    return 0
