"""``gateway user|key|token|group|grant …``: account management from the shell.

Works on the same database as the server (settings from the environment or flags), without
a running server, so installations can be scripted — including importing known keys.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.auth.credentials import SecretBox
from gateway.auth.policy import PERMISSIONS as GRANT_PERMISSIONS
from gateway.errors import GatewayError
from gateway.metadata.db import Database
from gateway.service.accounts import AccountService
from gateway.service.context import Context
from gateway.service.groups import GroupService
from gateway.service.tokens import PERMISSIONS, TokenService, utc_expiry
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
    add.add_argument("--password-stdin", action="store_true",
                     help="read a login password (JSON API) from standard input")
    user.add_parser("list", parents=[common], help="list users")
    passwd = user.add_parser("passwd", parents=[common],
                             help="set a user's login password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (else prompt)")
    role = user.add_parser("role", parents=[common], help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=["member", "admin"])
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

    group = sub.add_parser("group", help="manage groups of users").add_subparsers(
        dest="action", required=True)
    gadd = group.add_parser("add", parents=[common], help="create a group")
    gadd.add_argument("name")
    group.add_parser("list", parents=[common], help="list groups and their members")
    gdel = group.add_parser("delete", parents=[common],
                            help="delete a group (and the grants it held)")
    gdel.add_argument("name")
    for verb in ("add-member", "remove-member"):
        p = group.add_parser(verb, parents=[common], help=f"{verb.replace('-', ' ')}")
        p.add_argument("group")
        p.add_argument("user")

    grant = sub.add_parser("grant", help="share buckets with users and groups")\
        .add_subparsers(dest="action", required=True)
    gset = grant.add_parser("set", parents=[common],
                            help="grant (or change) access to a bucket")
    glist = grant.add_parser("list", parents=[common], help="list a bucket's grants")
    grevoke = grant.add_parser("revoke", parents=[common], help="revoke a grant")
    for p in (gset, glist, grevoke):
        p.add_argument("bucket")
    for p in (gset, grevoke):
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user")
        who.add_argument("--group")
    gset.add_argument("--permission", required=True, choices=GRANT_PERMISSIONS,
                      help="read: list and get; write: also put and delete; "
                           "full: also the bucket's ACL, CORS and grants")

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


@dataclass
class _Services:
    accounts: AccountService
    tokens: TokenService
    groups: GroupService


@asynccontextmanager
async def _services(args: argparse.Namespace) -> AsyncIterator[_Services]:
    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    db = Database(settings.effective_database_url)
    await db.start()
    try:
        # Account management touches no object bytes: a memory backend stands in.
        ctx = Context(settings, db, MemoryBackend())
        box = SecretBox.load(settings.secret_key, settings.data_dir)
        yield _Services(AccountService(ctx, box), TokenService(ctx), GroupService(ctx))
    finally:
        await db.aclose()


def _expiry(args: argparse.Namespace) -> datetime:
    if args.expires_at:
        try:
            at = datetime.fromisoformat(args.expires_at)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {args.expires_at!r}") from None
        return utc_expiry(at)
    try:
        return datetime.now(UTC) + timedelta(seconds=parse_duration(args.expires_in))
    except OverflowError:
        raise ValueError("an expiry must be a time UTC can hold (years 1 to 9999), not "
                         f"{args.expires_in} from now") from None


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


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def _grantee(args: argparse.Namespace) -> tuple[str, str]:
    return ("user", args.user) if args.user is not None else ("group", args.group)


async def _run(command: str, args: argparse.Namespace) -> Any:
    async with _services(args) as svc:
        accounts, tokens, groups = svc.accounts, svc.tokens, svc.groups
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
                password = _read_password(args) if args.password_stdin else None
                await accounts.add_user(args.name, role=args.role,
                                        display_name=args.display_name, email=args.email,
                                        canonical_id=args.canonical_id, password=password)
                return {"name": args.name, "role": args.role}
            case "user", "passwd":
                await accounts.set_password(args.name, _read_password(args))
                return {"name": args.name, "password": "set"}
            case "user", "role":
                await accounts.set_role(args.name, args.role)
                return {"name": args.name, "role": args.role}
            case "group", "add":
                await groups.create_group(args.name)
                return {"group": args.name}
            case "group", "list":
                return await groups.list_groups()
            case "group", "delete":
                await groups.delete_group(args.name)
                return {"group": args.name, "deleted": True}
            case "group", "add-member":
                await groups.add_member(args.group, args.user)
                return {"group": args.group, "member": args.user}
            case "group", "remove-member":
                await groups.remove_member(args.group, args.user)
                return {"group": args.group, "removed": args.user}
            case "grant", "set":
                kind, name = _grantee(args)
                return await groups.grant(args.bucket, kind, name, args.permission)
            case "grant", "list":
                return await groups.list_grants(args.bucket)
            case "grant", "revoke":
                kind, name = _grantee(args)
                await groups.revoke(args.bucket, kind, name)
                return {"bucket": args.bucket, "grantee_type": kind, "grantee": name,
                        "revoked": True}
            case "user", "list":
                return await accounts.list_users()
            case "user", ("disable" | "enable"):
                await accounts.set_user_disabled(args.name, args.action == "disable")
                return {"name": args.name, "disabled": args.action == "disable"}
            case "key", "create":
                access, secret = await accounts.create_key(args.user, args.access_key,
                                                           args.secret_key)
                if args.secret_key is not None:
                    # Imported: the operator has it; provisioning logs should not.
                    return {"user": args.user, "access_key": access, "imported": True}
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
    ("group", "list"): ("name", "members", "created_at"),
    ("grant", "list"): ("grantee_type", "grantee", "permission", "created_at"),
    ("token", "list"): ("id", "user", "name", "permissions", "prefix", "expires_at",
                        "revoked_at"),
}


def run(command: str, args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(command, args))
    except (ValueError, GatewayError) as exc:
        print(f"gateway {command} {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif (command, args.action) in _COLUMNS:
        print(_table(result, _COLUMNS[(command, args.action)]))
    elif command == "token" and args.action == "create":
        print(f"token: {result['token']}\nid: {result['id']}  expires: {result['expires_at']}"
              "\n(the token is shown this once; send it Base64-encoded in X-Api-Key)")
    elif command == "key" and args.action == "create" and "secret_key" in result:
        print(f"access key: {result['access_key']}\nsecret key: {result['secret_key']}\n"
              "(the secret is shown this once)")
    else:
        print(", ".join(f"{k}={v}" for k, v in result.items()))
    return 0
