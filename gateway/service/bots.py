"""The bot platform's management layer: customers, bots and their package buckets, a bot's
chat users, and conversations in which moderators enable bots.

The data model follows two references: the Control Tower API (customers own bots; a bot has
admins, who join with its invite code, and users, its chat recipients) and the Talk bots
API (bots have a global state; conversation moderators enable them per conversation).

Who may do what (``Actor.admin`` is a gateway administrator: the admin role *and* a
credential holding the ``admin`` permission):

- a customer is read and changed by its own gateway user, and by administrators;
- a bot (and its users) by its owner, its admins and administrators; deleting it and
  minting S3 keys for its package are for its owner and administrators;
- a conversation is visible to its participants only (others get "not found", as in Talk);
  its owner and moderators manage participants and bots.

Existing things the caller may not touch answer :class:`Forbidden` (403), missing ones
:class:`NotFound` (404): bot and customer ids are random UUIDs, so telling the two apart
reveals nothing useful, and the invite flow needs a non-admin to reach a bot anyway.

Creating a bot creates its package bucket ``<name>.gbai`` (owned by the customer's gateway
user) with the package layout as zero-byte folder markers, written through the ordinary
object path (quota, change log), then the bot row. Any failure removes what was made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
from sqlalchemy import ColumnElement, String, case, cast
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from gateway import errors
from gateway.checksums import DigestingStream
from gateway.metadata import models, repo
from gateway.service.accounts import (
    AccountService,
    AlreadyExists,
    NotFound,
    generate_access_key,
    generate_secret_key,
)
from gateway.service.buckets import BucketService, validate_bucket_name
from gateway.service.context import Context
from gateway.service.objects import ObjectService
from gateway.service.query import (
    Entity,
    Field,
    Page,
    Query,
    SortKey,
    byte_ordered,
    epoch_seconds,
    fetch_page,
)
from gateway.service.quota import QuotaService
from gateway.types import ObjectAttributes, Principal

log = logging.getLogger("gateway.bots")

__all__ = [
    "ADMIN_BOTS", "BOTS", "BOT_USERS", "PACKAGE_LAYOUT", "Actor", "AlreadyExists", "Bot",
    "BotService", "BotUser", "CreatedBot", "Customer", "Forbidden", "Invalid", "NotFound",
]

#: The Talk bots reference's states.
STATE_DISABLED, STATE_ENABLED, STATE_NO_SETUP = 0, 1, 2
STATE_NAMES = {STATE_DISABLED: "disabled", STATE_ENABLED: "enabled",
               STATE_NO_SETUP: "no-setup"}
PACKAGE_SUFFIX = ".gbai"
#: The package layout every new bot's bucket starts with (zero-byte folder markers).
PACKAGE_LAYOUT = (
    ".gbkb/", ".gbkb/docs/", ".gbkb/data/",
    ".gbdialog/", ".gbdialog/scripts/", ".gbdialog/tools/",
    ".gbtheme/", ".gbtheme/css/", ".gbtheme/images/",
    ".gbdrive/", ".gbdrive/attachments/", ".gbdrive/temp/",
)
BOT_STATUSES = ("active", "muted")
_BOT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,56}[a-z0-9])?$")
_CODE_ALPHABET = string.ascii_letters + string.digits
_MAX_ATTRIBUTES_BYTES = 64 * 1024
_MAX_IDS = 1000
_QUOTA_FIELDS = {"bytes": "max_bytes", "objects": "max_objects",
                 "maxObjectSize": "max_object_size"}


class Invalid(ValueError):
    """The request is malformed (400); ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Forbidden(Exception):
    """The thing exists, and the caller may not do this to it (403)."""


@dataclass(frozen=True, slots=True)
class Actor:
    principal: Principal
    #: A gateway administrator (role and credential both).
    admin: bool = False


def iso_time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _new_id() -> str:
    return str(uuid.uuid4())


def random_code(length: int = 8, alphabet: str = _CODE_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _same_code(given: Any, current: str | None) -> bool:
    """Whether ``given`` is the invite code ``current``, in constant time."""
    if not isinstance(given, str) or current is None:
        return given is None and current is None
    return hmac.compare_digest(given.encode(), current.encode())


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    user_id: int
    name: str | None
    email: str | None
    external_id: str | None
    attributes: dict[str, Any]
    bots: tuple[str, ...]
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.attributes, "id": self.id, "name": self.name, "email": self.email,
                "externalId": self.external_id, "facebookId": self.external_id,
                "bots": list(self.bots), "createdAt": iso_time(self.created_at)}


@dataclass(frozen=True, slots=True)
class Bot:
    id: str
    customer_id: str
    name: str
    description: str | None
    url: str | None
    bucket: str | None
    invite_code: str | None
    attributes: dict[str, Any]
    state: int
    error_count: int
    last_error_date: datetime | None
    last_error_message: str | None
    created_at: datetime
    admins: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    #: The package bucket's limits and usage; None when the bucket is gone.
    quota: dict[str, Any] | None = None

    @property
    def url_hash(self) -> str | None:
        """The Talk reference's actor id: ``bot-`` and the SHA-1 of the URL."""
        if self.url is None:
            return None
        return "bot-" + hashlib.sha1(self.url.encode(), usedforsecurity=False).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """The Control Tower shape; unknown attributes are flat, as they were sent."""
        return {**self.attributes, "id": self.id, "customerId": self.customer_id,
                "name": self.name, "description": self.description, "url": self.url,
                "bucket": self.bucket, "inviteCode": self.invite_code,
                "admins": list(self.admins), "users": list(self.users),
                "state": STATE_NAMES.get(self.state, str(self.state)), "quota": self.quota,
                "createdAt": iso_time(self.created_at)}

    def as_talk(self) -> dict[str, Any]:
        """The Talk reference's ``bot/admin`` shape."""
        return {"id": self.id, "name": self.name, "description": self.description,
                "url": self.url, "url_hash": self.url_hash, "state": self.state,
                "error_count": self.error_count,
                "last_error_date": int(self.last_error_date.timestamp())
                if self.last_error_date else None,
                "last_error_message": self.last_error_message}


@dataclass(frozen=True, slots=True)
class CreatedBot:
    bot: Bot
    #: The webhook secret, in clear: shown once.
    secret: str | None = None
    #: A package key (access key, secret key), shown once.
    s3_key: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.bot.as_dict()
        if self.secret is not None:
            out["secret"] = self.secret
        if self.s3_key is not None:
            out["s3Key"] = {"accessKey": self.s3_key[0], "secretKey": self.s3_key[1]}
        return out


@dataclass(frozen=True, slots=True)
class BotUser:
    id: str
    bot_id: str
    customer_id: str | None
    external_id: str | None
    bot_status: str
    attributes: dict[str, Any]
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"botId": self.bot_id, "id": self.id, "customerId": self.customer_id,
                "externalId": self.external_id, "facebookId": self.external_id,
                "botStatus": self.bot_status, "attributes": self.attributes,
                "createdAt": iso_time(self.created_at)}


# -- field checks ------------------------------------------------------------------------------


def _text(fields: Mapping[str, Any], name: str, limit: int, *, nullable: bool = True,
          numeric: bool = False) -> str | None:
    """A string field (``numeric``: a number is taken as its digits)."""
    value = fields.get(name)
    if value is None or (value == "" and nullable):
        if not nullable:
            raise Invalid(f"{name} is required", name)
        return None
    if numeric and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric external ids (Facebook's) arrive as numbers too
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string", name)
    if len(value) > limit:
        raise Invalid(f"{name} has at most {limit} characters", name)
    return value


def _external_id(fields: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(given, value) of ``externalId``, or of its alias ``facebookId``."""
    ext = _text(fields, "externalId", 128, numeric=True)
    fb = _text(fields, "facebookId", 128, numeric=True)
    if ext is not None and fb is not None and ext != fb:
        raise Invalid("externalId and facebookId are the same field; they differ",
                      "externalId")
    return ("externalId" in fields or "facebookId" in fields), ext if ext is not None else fb


def _email(fields: Mapping[str, Any]) -> str | None:
    email = _text(fields, "email", 320)
    if email is not None and ("@" not in email or any(c.isspace() for c in email)):
        raise Invalid("email is not an email address", "email")
    return email


def _url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2048 or not value.isprintable() \
            or any(c.isspace() for c in value):
        raise Invalid("url must be an http or https URL of at most 2048 characters", "url")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url must be an http or https URL", "url")
    return value


def _state(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # as a query string carries it
    if isinstance(value, str):
        for number, name in STATE_NAMES.items():
            if value.lower() == name:
                return number
    if isinstance(value, int) and not isinstance(value, bool) and value in STATE_NAMES:
        return value
    raise Invalid("state is one of enabled, disabled, no-setup (or 1, 0, 2)", "state")


def _bot_status(value: Any) -> str:
    if value not in BOT_STATUSES:
        raise Invalid(f"botStatus is one of {', '.join(BOT_STATUSES)}", "botStatus")
    return str(value)


def _merge(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes merged (``null`` removes one), within a size bound."""
    merged = dict(current)
    for key, value in changes.items():
        if len(key) > 128:
            raise Invalid("attribute names have at most 128 characters", key[:32])
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(json.dumps(merged)) > _MAX_ATTRIBUTES_BYTES:
        raise Invalid(f"attributes take at most {_MAX_ATTRIBUTES_BYTES} bytes as JSON")
    return merged


def _read_only(fields: Mapping[str, Any], name: str, current: Any) -> None:
    """A read-only field may be sent back unchanged (a client PUTs what it GOT)."""
    if name in fields and fields[name] != current:
        raise Invalid(f"{name} cannot be changed", name)


async def _empty_body() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _customer(row: Row[Any], bot_ids: Sequence[str]) -> Customer:
    return Customer(row.id, int(row.user_id), row.name, row.email, row.external_id,
                    dict(row.attributes or {}), tuple(bot_ids), row.created_at)


def _bot_user(row: Row[Any]) -> BotUser:
    return BotUser(row.id, row.bot_id, row.customer_id, row.external_id, row.bot_status,
                   dict(row.attributes or {}), row.created_at)


_CUSTOMER_FIELDS = frozenset({"id", "name", "email", "externalId", "facebookId", "bots",
                              "createdAt"})
_BOT_FIELDS = frozenset({"id", "customerId", "name", "description", "url", "bucket", "secret",
                         "inviteCode", "admins", "users", "state", "quota", "s3Key",
                         "createdAt", "url_hash", "error_count", "last_error_date",
                         "last_error_message"})
_USER_FIELDS = frozenset({"id", "botId", "customerId", "externalId", "facebookId",
                          "botStatus", "attributes", "createdAt"})


# -- what the lists' keyset pages filter and sort by (gateway.service.query) -------------------




def text_field(column: ColumnElement[Any], *, nullable: bool = False) -> Field:
    """A sortable text fieldPath compared in code-point order on both databases, so pages
    sort as clients sort strings and ``starts_with`` may use a range."""
    return Field(byte_ordered(column), "str", sortable=True, nullable=nullable)


_b, _u = models.bots.c, models.bot_users.c
#: The state as ``/bots`` answers it: a word (an unknown number as its digits).
_STATE_WORD = case(*((_b.state == number, word) for number, word in STATE_NAMES.items()),
                   else_=cast(_b.state, String))

#: ``GET /bots``: the Control Tower shape's names. ``state`` is the word (enabled,
#: disabled, no-setup); ``errorCount`` (the webhook's error streak) is not in the answer,
#: but owners find failing bots by it.
BOTS = Entity(
    name="bots",
    fields={
        "id": text_field(_b.id),
        "name": text_field(_b.name),
        "description": text_field(_b.description, nullable=True),
        "url": text_field(_b.url, nullable=True),
        "bucket": text_field(_b.bucket, nullable=True),
        "customerId": text_field(_b.customer_id),
        "state": text_field(_STATE_WORD),
        "createdAt": Field(_b.created_at, "datetime", sortable=True),
        "errorCount": Field(_b.error_count, "int", sortable=True),
    },
    tiebreak="id",
    default_order=(SortKey("createdAt"),),
)

#: ``GET /bot/admin``: the Talk reference's names and values — ``state`` the number (0
#: disabled, 1 enabled, 2 no-setup), ``last_error_date`` seconds since 1970.
ADMIN_BOTS = Entity(
    name="bot_admin",
    fields={
        "id": text_field(_b.id),
        "name": text_field(_b.name),
        "description": text_field(_b.description, nullable=True),
        "url": text_field(_b.url, nullable=True),
        "state": Field(_b.state, "int", sortable=True),
        "error_count": Field(_b.error_count, "int", sortable=True),
        "last_error_date": Field(epoch_seconds(_b.last_error_date), "int", sortable=True,
                                 nullable=True),
        "last_error_message": text_field(_b.last_error_message, nullable=True),
    },
    tiebreak="id",
    default_order=(SortKey("name"),),
)

#: ``GET /users?botId=``: a bot's chat users (``facebookId`` is ``externalId``'s alias).
BOT_USERS = Entity(
    name="bot_users",
    fields={
        "id": text_field(_u.id),
        "externalId": text_field(_u.external_id, nullable=True),
        "facebookId": text_field(_u.external_id, nullable=True),
        "customerId": text_field(_u.customer_id, nullable=True),
        "botStatus": text_field(_u.bot_status),
        "createdAt": Field(_u.created_at, "datetime", sortable=True),
    },
    tiebreak="id",
    default_order=(SortKey("createdAt"),),
)


class BotService:
    def __init__(self, ctx: Context, accounts: AccountService, buckets: BucketService,
                 objects: ObjectService, quotas: QuotaService) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.buckets = buckets
        self.objects = objects
        self.quotas = quotas
        # Imported here: the conversations module builds on this one's values and errors.
        from gateway.service.conversations import ConversationService

        #: Conversations and the bots enabled in them.
        self.conversations = ConversationService(ctx, self)

    # -- customers -------------------------------------------------------------------------

    async def _load_customer(self, customer_id: str) -> Customer | None:
        def unit(conn: Connection) -> Customer | None:
            row = repo.customer_by_id(conn, customer_id)
            return _customer(row, repo.bot_ids_of_customer(conn, row.id)) if row else None

        return await self.ctx.db.read(unit)

    async def own_customer(self, principal: Principal) -> Customer | None:
        def unit(conn: Connection) -> Customer | None:
            row = repo.customer_by_user(conn, principal.user_id)
            return _customer(row, repo.bot_ids_of_customer(conn, row.id)) if row else None

        return await self.ctx.db.read(unit)

    async def ensure_customer(self, principal: Principal,
                              fields: Mapping[str, Any] | None = None
                              ) -> tuple[Customer, bool]:
        """The caller's customer, created (from ``fields`` and the user's profile) when it
        does not exist yet; (customer, created)."""
        fields = fields or {}
        existing = await self.own_customer(principal)
        if existing is not None:
            return existing, False
        _given, external = _external_id(fields)
        name = _text(fields, "name", 256)
        email = _email(fields)
        attributes = _merge({}, {k: v for k, v in fields.items()
                                 if k not in _CUSTOMER_FIELDS})
        now = datetime.now(UTC)

        def unit(conn: Connection) -> None:
            user = repo.user_by_id(conn, principal.user_id)
            if user is None:
                raise NotFound("the calling user no longer exists")
            repo.insert_customer(conn, {
                "id": _new_id(), "user_id": principal.user_id,
                "name": name if name is not None else (user.display_name or user.name),
                "email": email if email is not None else user.email,
                "external_id": external, "attributes": attributes, "created_at": now})

        try:
            await self.ctx.db.write(unit)
        except IntegrityError:
            # Created concurrently by another request of the same user: that one wins.
            again = await self.own_customer(principal)
            if again is None:
                raise
            return again, False
        created = await self.own_customer(principal)
        assert created is not None
        return created, True

    async def get_customer(self, actor: Actor, customer_id: str) -> Customer:
        customer = await self._load_customer(customer_id)
        if customer is None:
            raise NotFound("Customer not found")
        if customer.user_id != actor.principal.user_id and not actor.admin:
            raise Forbidden("This customer is another user's")
        return customer

    async def update_customer(self, actor: Actor, customer_id: str,
                              fields: Mapping[str, Any]) -> Customer:
        current = await self.get_customer(actor, customer_id)
        _read_only(fields, "id", current.id)
        _read_only(fields, "bots", list(current.bots))
        _read_only(fields, "createdAt", iso_time(current.created_at))
        values: dict[str, Any] = {}
        if "name" in fields:
            values["name"] = _text(fields, "name", 256)
        if "email" in fields:
            values["email"] = _email(fields)
        given, external = _external_id(fields)
        if given:
            values["external_id"] = external
        values["attributes"] = _merge(current.attributes, {
            k: v for k, v in fields.items() if k not in _CUSTOMER_FIELDS})
        await self.ctx.db.write(lambda conn: repo.update_customer(conn, customer_id, values))
        return await self.get_customer(actor, customer_id)

    # -- bots: reading ---------------------------------------------------------------------

    def _quota(self, conn: Connection, bucket_name: str | None) -> dict[str, Any] | None:
        bucket = repo.bucket_by_name(conn, bucket_name) if bucket_name else None
        if bucket is None:
            return None
        limits = self.quotas.limits(bucket)
        return {"bytes": limits.max_bytes, "objects": limits.max_objects,
                "maxObjectSize": limits.max_object_size, "usedBytes": bucket.used_bytes,
                "usedObjects": bucket.used_objects}

    def _bots(self, conn: Connection, rows: Sequence[Row[Any]], *, full: bool = True
              ) -> list[Bot]:
        """Bots from their rows; ``full``: with admins, users and quota (the Control Tower
        answer needs them, the Talk lists do not)."""
        ids = [row.id for row in rows] if full else []
        admins, users = repo.bot_admin_ids(conn, ids), repo.bot_user_ids(conn, ids)
        return [Bot(row.id, row.customer_id, row.name, row.description, row.url, row.bucket,
                    row.invite_code, dict(row.attributes or {}), int(row.state),
                    int(row.error_count), row.last_error_date, row.last_error_message,
                    row.created_at, tuple(admins.get(row.id, ())), tuple(users.get(row.id, ())),
                    self._quota(conn, row.bucket) if full else None) for row in rows]

    async def load_bot(self, bot_id: str) -> tuple[Bot, str]:
        """The bot and its sealed secret; NotFound."""
        def unit(conn: Connection) -> tuple[Bot, str] | None:
            row = repo.bot_by_id(conn, bot_id)
            return (self._bots(conn, [row])[0], str(row.secret)) if row else None

        found = await self.ctx.db.read(unit)
        if found is None:
            raise NotFound("Bot not found")
        return found

    async def _role(self, actor: Actor, bot: Bot) -> str | None:
        """``owner``, ``admin`` (a bot admin or a gateway administrator) or None."""
        customer = await self.own_customer(actor.principal)
        if customer is not None and customer.id == bot.customer_id:
            return "owner"
        if actor.admin or (customer is not None and customer.id in bot.admins):
            return "admin"
        return None

    async def get_bot(self, actor: Actor, bot_id: str, customer_id: str | None = None) -> Bot:
        bot, _sealed = await self.load_bot(bot_id)
        if customer_id is not None and customer_id != bot.customer_id:
            raise Invalid("Invalid customerId: the bot is another customer's", "customerId")
        if await self._role(actor, bot) is None:
            raise Forbidden("Only the bot's owner and admins may see it")
        return bot

    async def list_bots(self, actor: Actor, *, filters: Mapping[str, str], sort: str,
                        descending: bool, limit: int, offset: int) -> tuple[list[Bot], int]:
        """The bots the caller owns or administers (every bot for an administrator)."""
        where: dict[str, Any] = dict(filters)
        if "state" in where:
            where["state"] = _state(where["state"])
        customer = None if actor.admin else await self.own_customer(actor.principal)
        if not actor.admin and customer is None:
            return [], 0

        def unit(conn: Connection) -> tuple[list[Bot], int]:
            rows, total = repo.list_bots(
                conn, visible_to=customer.id if customer else None, everyone=actor.admin,
                filters=where, sort=sort, descending=descending, limit=limit, offset=offset)
            return self._bots(conn, rows), total

        return await self.ctx.db.read(unit)

    async def bots_page(self, actor: Actor, query: Query) -> Page[Bot]:
        """A keyset page (:data:`BOTS`) of the bots :meth:`list_bots` lists."""
        customer = None if actor.admin else await self.own_customer(actor.principal)
        source = repo.visible_bots(customer.id if customer else None, everyone=actor.admin)

        def unit(conn: Connection) -> Page[Bot]:
            page = fetch_page(conn, BOTS, query, source)
            return Page(self._bots(conn, page.items), page.page_info, page.cursors)

        return await self.ctx.db.scan(unit)

    # -- bots: creating --------------------------------------------------------------------

    async def _owner_principal(self, customer: Customer) -> Principal:
        user = await self.ctx.db.read(lambda conn: repo.user_by_id(conn, customer.user_id))
        if user is None:
            raise NotFound("The customer's user no longer exists")
        return Principal(int(user.id), user.name, user.role)

    def _quota_changes(self, actor: Actor, value: Any,
                       current: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{bytes, objects, maxObjectSize}`` as QuotaService.set arguments. Only
        administrators raise a limit beyond the settings' default (or lift it). Limits
        equal to ``current`` (a bot's answer sent back) are left alone."""
        if not isinstance(value, Mapping):
            raise Invalid("quota is an object {bytes, objects, maxObjectSize}", "quota")
        unknown = set(value) - set(_QUOTA_FIELDS) - {"usedBytes", "usedObjects"}
        if unknown:
            raise Invalid(f"unknown quota field(s): {', '.join(sorted(unknown))}", "quota")
        s = self.ctx.settings
        defaults = {"bytes": s.default_quota_bytes, "objects": s.default_quota_objects,
                    "maxObjectSize": s.default_max_object_size}
        changes: dict[str, Any] = {}
        for name, arg in _QUOTA_FIELDS.items():
            if name not in value or (current is not None and current.get(name) == value[name]):
                continue
            limit = value[name]
            if limit is not None and limit != "default" and not (
                    isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0):
                raise Invalid(f"quota.{name} is an integer ≥ 0, null (unlimited) or "
                              "\"default\"", "quota")
            if name == "objects" and isinstance(limit, int) and limit < len(PACKAGE_LAYOUT):
                raise Invalid(f"quota.objects must hold the package layout "
                              f"({len(PACKAGE_LAYOUT)} objects)", "quota")
            default = defaults[name]
            beyond = default is not None and (limit is None or (
                isinstance(limit, int) and limit > default))
            if beyond and not actor.admin:
                raise Forbidden(f"Only administrators set quota.{name} above the default "
                                f"({default})")
            changes[arg] = limit
        return changes

    async def create_bot(self, actor: Actor, fields: Mapping[str, Any]) -> CreatedBot:
        name = _text(fields, "name", 58, nullable=False)
        assert name is not None
        if not _BOT_NAME.match(name):
            raise Invalid("name has 1 to 58 lowercase letters, digits and hyphens, and "
                          "starts and ends with a letter or digit", "name")
        bucket = name + PACKAGE_SUFFIX
        try:
            validate_bucket_name(bucket)
        except errors.InvalidBucketName:
            raise Invalid(f"{bucket} is not a valid bucket name", "name") from None
        description = _text(fields, "description", 4096)
        url = _url(fields.get("url"))
        state = _state(fields["state"]) if fields.get("state") is not None else STATE_ENABLED
        quota = self._quota_changes(actor, fields["quota"]) \
            if fields.get("quota") is not None else {}
        want_key = fields.get("s3Key", False)
        if not isinstance(want_key, bool):
            raise Invalid("s3Key is true or false", "s3Key")
        attributes = _merge({}, {k: v for k, v in fields.items() if k not in _BOT_FIELDS})
        customer = await self._customer_for_new_bot(actor, fields.get("customerId"))
        owner = await self._owner_principal(customer)
        if await self.ctx.db.read(lambda conn: repo.bot_by_name(conn, name)) is not None:
            raise AlreadyExists(f"A bot named {name!r} exists already")
        try:
            await self.buckets.create(owner, bucket)
        except (errors.BucketAlreadyExists, errors.BucketAlreadyOwnedByYou):
            raise AlreadyExists(f"The bucket {bucket} exists already") from None

        secret = secrets.token_urlsafe(32)
        key = (generate_access_key(), generate_secret_key()) if want_key else None
        bot_id, now = _new_id(), datetime.now(UTC)
        made: list[str] = []
        try:
            if quota:  # first: the layout must fit the bot's quota, not the default
                await self.quotas.set(bucket, **quota)
            for marker in PACKAGE_LAYOUT:
                await self.objects.put(owner, bucket, marker,
                                       DigestingStream(_empty_body(), expected_size=0),
                                       ObjectAttributes(content_type="application/x-directory"),
                                       size_hint=0)
                made.append(marker)

            def unit(conn: Connection) -> None:
                repo.insert_bot(conn, {
                    "id": bot_id, "customer_id": customer.id, "name": name,
                    "description": description, "url": url,
                    "secret": self.accounts.box.seal(secret), "bucket": bucket,
                    "invite_code": random_code(), "attributes": attributes, "state": state,
                    "error_count": 0, "created_at": now,
                    # Webhooks report what happens from now on, not the layout just written.
                    "delivered_seq": repo.current_change_seq(conn)})
                if key is not None:
                    repo.insert_scoped_access_key(conn, key[0], owner.user_id,
                                                  self.accounts.box.seal(key[1]), now, bucket)

            try:
                await self.ctx.db.write(unit)
            except IntegrityError:
                raise AlreadyExists(f"A bot named {name!r} exists already") from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_package(owner, bucket, made)
            raise
        bot, _sealed = await self.load_bot(bot_id)
        return CreatedBot(bot, secret, key)

    async def _customer_for_new_bot(self, actor: Actor, customer_id: Any) -> Customer:
        if customer_id is None or customer_id == "":
            return (await self.ensure_customer(actor.principal))[0]
        if not isinstance(customer_id, str):
            raise Invalid("customerId must be a string", "customerId")
        customer = await self._load_customer(customer_id)
        if customer is None:
            raise NotFound("Customer not found")
        if customer.user_id != actor.principal.user_id and not actor.admin:
            raise Forbidden("Bots are created for your own customer only")
        return customer

    async def _remove_package(self, owner: Principal, bucket: str, markers: Sequence[str]
                              ) -> None:
        """Undo a bot creation that failed half-way (best effort, logged)."""
        try:
            if markers:
                await self.objects.delete_many(owner, bucket, [(m, None) for m in markers])
            await self.buckets.delete(owner, bucket)
        except Exception:
            log.warning("could not remove the package bucket %s of a failed bot creation",
                        bucket, exc_info=True)

    # -- bots: changing --------------------------------------------------------------------

    async def update_bot(self, actor: Actor, bot_id: str, fields: Mapping[str, Any]
                         ) -> CreatedBot:
        """Merge ``fields`` into the bot. Special cases (the Control Tower reference):
        ``"admins": "me"`` with the bot's ``inviteCode`` and its owner's ``customerId`` adds
        the caller's customer to the bot's admins; ``"inviteCode": "new"`` and
        ``"secret": "new"`` regenerate them; ``"s3Key": true`` mints a package key."""
        bot, _sealed = await self.load_bot(bot_id)
        rest = dict(fields)
        if fields.get("admins") == "me":
            await self._join(actor, bot, fields)
            for name in ("admins", "inviteCode", "customerId"):
                rest.pop(name, None)
            bot, _sealed = await self.load_bot(bot_id)
        role = await self._role(actor, bot)
        if role is None:
            raise Forbidden("Only the bot's owner and admins may change it")
        for name, current in (("id", bot.id), ("customerId", bot.customer_id),
                              ("bucket", bot.bucket), ("users", list(bot.users)),
                              ("admins", list(bot.admins)),
                              ("createdAt", iso_time(bot.created_at))):
            _read_only(rest, name, current)
        if "name" in rest and rest["name"] != bot.name:
            raise Invalid("A bot cannot be renamed: its package bucket keeps its name", "name")
        values: dict[str, Any] = {}
        secret: str | None = None
        key: tuple[str, str] | None = None
        if "description" in rest:
            values["description"] = _text(rest, "description", 4096)
        if "url" in rest:
            url = _url(rest["url"])
            if url != bot.url:  # a new endpoint starts without an error streak
                values.update(url=url, error_count=0, next_attempt_at=None)
        if "state" in rest:
            values["state"] = _state(rest["state"])
        if "inviteCode" in rest and not _same_code(rest["inviteCode"], bot.invite_code):
            if rest["inviteCode"] != "new":
                raise Invalid('inviteCode can only be set to "new" (a fresh code)',
                              "inviteCode")
            values["invite_code"] = random_code()
        if "secret" in rest:
            if rest["secret"] != "new":
                raise Invalid('secret can only be set to "new" (a fresh secret)', "secret")
            secret = secrets.token_urlsafe(32)
            values["secret"] = self.accounts.box.seal(secret)
        quota = self._quota_changes(actor, rest["quota"], bot.quota) \
            if rest.get("quota") is not None else {}
        if rest.get("s3Key") not in (None, False, True):
            raise Invalid("s3Key is true or false", "s3Key")
        minting = rest.get("s3Key") is True
        if minting and role != "owner" and not actor.admin:
            raise Forbidden("Only the bot's owner mints keys for its package")
        if minting and bot.bucket is None:
            raise Invalid("The bot has no package bucket", "s3Key")
        values["attributes"] = _merge(bot.attributes, {
            k: v for k, v in rest.items() if k not in _BOT_FIELDS})
        # Everything is valid: now change things.
        if minting:
            key = await self._package_key(bot)
        if quota and bot.bucket is not None:
            try:
                await self.quotas.set(bot.bucket, **quota)
            except errors.NoSuchBucket:
                raise Invalid("The bot's package bucket no longer exists", "quota") from None
        if not await self.ctx.db.write(lambda conn: repo.update_bot(conn, bot_id, values)):
            raise NotFound("Bot not found")
        updated, _sealed = await self.load_bot(bot_id)
        return CreatedBot(updated, secret, key)

    async def _join(self, actor: Actor, bot: Bot, fields: Mapping[str, Any]) -> None:
        customer_id = fields.get("customerId")
        if not isinstance(customer_id, str) or not customer_id:
            raise Invalid("customerId (the bot owner's id) is required to join a bot",
                          "customerId")
        if customer_id != bot.customer_id:
            raise Invalid("Invalid customerId: it is not the bot owner's", "customerId")
        code = fields.get("inviteCode")
        if not isinstance(code, str) or bot.invite_code is None or not hmac.compare_digest(
                code.encode(), bot.invite_code.encode()):
            raise Forbidden("Invalid invite code")
        customer, _created = await self.ensure_customer(actor.principal)
        if customer.id != bot.customer_id:
            # A concurrent request of theirs may have joined first (PostgreSQL): fine.
            with suppress(IntegrityError):
                await self.ctx.db.write(lambda conn: repo.add_bot_admin(conn, bot.id,
                                                                        customer.id))

    async def _package_key(self, bot: Bot) -> tuple[str, str]:
        customer = await self._load_customer(bot.customer_id)
        assert customer is not None and bot.bucket is not None
        owner = await self._owner_principal(customer)
        access, secret = generate_access_key(), generate_secret_key()
        now, bucket = datetime.now(UTC), bot.bucket
        await self.ctx.db.write(lambda conn: repo.insert_scoped_access_key(
            conn, access, owner.user_id, self.accounts.box.seal(secret), now, bucket))
        return access, secret

    async def delete_bot(self, actor: Actor, bot_id: str) -> Bot:
        """The bot row, its admins, users and conversation links. The package bucket (and
        keys scoped to it) stay: its content is the customer's."""
        bot, _sealed = await self.load_bot(bot_id)
        if await self._role(actor, bot) != "owner" and not actor.admin:
            raise Forbidden("Only the bot's owner deletes it")
        if not await self.ctx.db.write(lambda conn: repo.delete_bot(conn, bot_id)):
            raise NotFound("Bot not found")
        return bot

    async def all_bots(self) -> list[Bot]:
        """Every bot (without admins, users and quota), for ``bot/admin``."""
        return await self.ctx.db.read(
            lambda conn: self._bots(conn, repo.all_bots(conn), full=False))

    async def admin_bots_page(self, query: Query) -> Page[Bot]:
        """A keyset page (:data:`ADMIN_BOTS`) of every bot, as :meth:`all_bots` has them."""
        def unit(conn: Connection) -> Page[Bot]:
            page = fetch_page(conn, ADMIN_BOTS, query, repo.visible_bots(None, everyone=True))
            return Page(self._bots(conn, page.items, full=False), page.page_info,
                        page.cursors)

        return await self.ctx.db.scan(unit)

    # -- bot users ---------------------------------------------------------------------------

    async def _managed_bot(self, actor: Actor, bot_id: Any,
                           customer_id: Any = None) -> Bot:
        if not isinstance(bot_id, str) or not bot_id:
            raise Invalid("botId is required", "botId")
        if customer_id is not None and not isinstance(customer_id, str):
            raise Invalid("customerId must be a string", "customerId")
        return await self.get_bot(actor, bot_id, customer_id or None)

    def _user_values(self, fields: Mapping[str, Any], current: BotUser | None,
                     bot: Bot) -> dict[str, Any]:
        if current is not None:
            _read_only(fields, "id", current.id)
            _read_only(fields, "createdAt", iso_time(current.created_at))
        _read_only(fields, "botId", bot.id)
        if fields.get("customerId") is not None and fields["customerId"] != bot.customer_id:
            raise Invalid("Invalid customerId: it is not the bot owner's", "customerId")
        values: dict[str, Any] = {}
        given, external = _external_id(fields)
        if given or current is None:
            values["external_id"] = external
        if "botStatus" in fields or current is None:
            values["bot_status"] = _bot_status(fields.get("botStatus") or "active")
        nested = fields.get("attributes")
        if nested is not None and not isinstance(nested, Mapping):
            raise Invalid("attributes must be an object", "attributes")
        changes = {k: v for k, v in fields.items() if k not in _USER_FIELDS}
        values["attributes"] = _merge(current.attributes if current else {},
                                      {**(nested or {}), **changes})
        return values

    async def create_user(self, actor: Actor, fields: Mapping[str, Any]
                          ) -> tuple[BotUser, bool]:
        """A chat user of a bot; an existing one with the same ``externalId`` is returned
        as it is. (user, created)."""
        bot = await self._managed_bot(actor, fields.get("botId"), fields.get("customerId"))
        values = self._user_values(fields, None, bot)
        external = values["external_id"]
        user_id, now = _new_id(), datetime.now(UTC)

        def unit(conn: Connection) -> tuple[BotUser, bool]:
            if external is not None:
                found = repo.bot_user_by_external_id(conn, bot.id, external)
                if found is not None:
                    return _bot_user(found), False
            repo.insert_bot_user(conn, {**values, "id": user_id, "bot_id": bot.id,
                                        "customer_id": bot.customer_id, "created_at": now})
            row = repo.bot_user(conn, bot.id, user_id)
            assert row is not None
            return _bot_user(row), True

        return await self.ctx.db.write(unit)

    async def get_user(self, actor: Actor, bot_id: Any, user_id: str,
                       customer_id: Any = None) -> BotUser:
        bot = await self._managed_bot(actor, bot_id, customer_id)
        row = await self.ctx.db.read(lambda conn: repo.bot_user(conn, bot.id, user_id))
        if row is None:
            raise NotFound("User not found for this bot")
        return _bot_user(row)

    async def list_users(self, actor: Actor, bot_id: Any, *, filters: Mapping[str, str],
                         sort: str, descending: bool, limit: int, offset: int,
                         customer_id: Any = None) -> tuple[list[BotUser], int]:
        bot = await self._managed_bot(actor, bot_id, customer_id)
        where = dict(filters)
        if "botStatus" in where:
            _bot_status(where["botStatus"])

        def unit(conn: Connection) -> tuple[list[BotUser], int]:
            rows, total = repo.list_bot_users(conn, bot.id, filters=where, sort=sort,
                                              descending=descending, limit=limit,
                                              offset=offset)
            return [_bot_user(r) for r in rows], total

        return await self.ctx.db.read(unit)

    async def users_page(self, actor: Actor, bot_id: Any, query: Query,
                         customer_id: Any = None) -> Page[BotUser]:
        """A keyset page (:data:`BOT_USERS`) of a bot's users."""
        bot = await self._managed_bot(actor, bot_id, customer_id)

        def unit(conn: Connection) -> Page[BotUser]:
            page = fetch_page(conn, BOT_USERS, query, repo.users_of_bot(bot.id))
            return Page([_bot_user(r) for r in page.items], page.page_info, page.cursors)

        return await self.ctx.db.scan(unit)

    async def update_users(self, actor: Actor, bot_id: Any, ids: Any,
                           update: Mapping[str, Any]) -> list[BotUser]:
        """The same change to several of a bot's users, all or none (NotFound names the
        ids that are not the bot's)."""
        if not isinstance(ids, list) or not ids or len(ids) > _MAX_IDS or not all(
                isinstance(i, str) for i in ids):
            raise Invalid(f"ids is a list of 1 to {_MAX_IDS} user ids", "ids")
        if not isinstance(update, Mapping):
            raise Invalid("update must be an object", "update")
        for name in ("id", "createdAt"):
            if name in update:
                raise Invalid(f"{name} cannot be changed", f"update.{name}")
        bot = await self._managed_bot(actor, bot_id)
        wanted = list(dict.fromkeys(ids))

        def unit(conn: Connection) -> list[BotUser]:
            rows = {r.id: _bot_user(r) for r in repo.bot_users_by_ids(conn, bot.id, wanted)}
            missing = [i for i in wanted if i not in rows]
            if missing:
                raise NotFound("Users not found for this bot: " + ", ".join(missing[:20]))
            for user_id in wanted:
                repo.update_bot_user(conn, user_id,
                                     self._user_values(update, rows[user_id], bot))
            return [_bot_user(r) for r in repo.bot_users_by_ids(conn, bot.id, wanted)]

        updated = await self.ctx.db.write(unit)
        order = {user_id: n for n, user_id in enumerate(wanted)}
        return sorted(updated, key=lambda u: order[u.id])

    async def update_user(self, actor: Actor, user_id: str, fields: Mapping[str, Any]
                          ) -> BotUser:
        changes = {k: v for k, v in fields.items() if k != "botId"}
        updated = await self.update_users(actor, fields.get("botId"), [user_id], changes)
        return updated[0]
