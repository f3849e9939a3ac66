"""Conversations (rooms), their participants, and the bots moderators enable in them (the
Talk bots reference).

A conversation is visible to its participants only: to anyone else it does not exist (404,
as in Talk). Its owner and moderators manage participants and enable or disable bots; any
participant may leave; the owner stays. Enabling needs a bot that is enabled on the server
(state 1); bots whose global state is no-setup are not even listed.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from gateway.metadata import repo
from gateway.metadata.models import conversation_members, conversations
from gateway.service.bots import (
    STATE_DISABLED,
    STATE_ENABLED,
    STATE_NAMES,
    STATE_NO_SETUP,
    Actor,
    Bot,
    Forbidden,
    Invalid,
    NotFound,
    iso_time,
    random_code,
    text_field,
)
from gateway.service.context import Context
from gateway.service.query import (
    Branch,
    Entity,
    Field,
    Leaf,
    Page,
    Query,
    SortKey,
    compile_where,
    fetch_page,
    order_clauses,
)

if TYPE_CHECKING:
    from gateway.service.bots import BotService

MEMBER_ROLES = ("moderator", "user")
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_MAX_PARTICIPANTS = 1000

#: ``GET /conversations``, as the caller sees them: ``role`` is the caller's role in each,
#: ``owner`` the owner's user name. Both the keyset pages and the offset list use it.
CONVERSATIONS = Entity(
    name="conversations",
    fields={
        "id": text_field(conversations.c.id),
        "name": text_field(conversations.c.name),
        "createdAt": Field(conversations.c.created_at, "datetime", sortable=True),
        "role": text_field(conversation_members.c.role),
        "owner": text_field(repo.conversation_owners.c.name),
    },
    tiebreak="id",
    default_order=(SortKey("createdAt"),),
)


def _offset_page(conn: Connection, source: Select[Any], filters: Mapping[str, str],
                 sort: str, descending: bool, limit: int, offset: int
                 ) -> tuple[list[Row[Any]], int]:
    """The overview's offset list over :data:`CONVERSATIONS`: ``filters`` are exact
    matches, ties in ``sort`` are broken by id in the same direction."""
    if filters:
        source = source.where(compile_where(CONVERSATIONS, Branch("and", tuple(
            Leaf(name, "eq", value) for name, value in filters.items()))))
    total = int(conn.execute(select(func.count()).select_from(
        source.order_by(None).subquery())).scalar_one())
    order = [SortKey(sort, descending)]
    if sort != CONVERSATIONS.tiebreak:
        order.append(SortKey(CONVERSATIONS.tiebreak, descending))
    rows = conn.execute(source.order_by(*order_clauses(CONVERSATIONS, order))
                        .limit(limit).offset(offset)).all()
    return list(rows), total


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    name: str
    owner: str
    created_at: datetime
    #: (user name, role), by name.
    participants: tuple[tuple[str, str], ...]
    bots: tuple[str, ...]
    #: The caller's role in it.
    role: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "token": self.id, "name": self.name, "owner": self.owner,
                "role": self.role, "createdAt": iso_time(self.created_at),
                "participants": [{"user": u, "role": r} for u, r in self.participants],
                "bots": list(self.bots)}


class ConversationService:
    def __init__(self, ctx: Context, bots: BotService) -> None:
        self.ctx = ctx
        self.bots = bots

    def _conversation(self, conn: Connection, conversation_id: str, user_id: int
                      ) -> Conversation | None:
        """The conversation as its participant ``user_id`` sees it; None for others."""
        row = repo.conversation_by_id(conn, conversation_id)
        role = repo.member_role(conn, conversation_id, user_id) if row else None
        if row is None or role is None:
            return None
        return self._conversations(conn, [row], {row.id: role})[0]

    @staticmethod
    def _conversations(conn: Connection, rows: Sequence[Row[Any]], roles: Mapping[str, str]
                       ) -> list[Conversation]:
        ids = [row.id for row in rows]
        members, bots = repo.conversation_members_of(conn, ids), \
            repo.conversation_bot_ids(conn, ids)
        out = []
        for row in rows:
            people = members[row.id]
            owner = next((m.name for m in people if m.user_id == row.owner_id), "")
            out.append(Conversation(row.id, row.name, owner, row.created_at,
                                    tuple((m.name, m.role) for m in people),
                                    tuple(bots[row.id]), roles[row.id]))
        return out

    async def _visible(self, actor: Actor, conversation_id: str) -> Conversation:
        found = await self.ctx.db.read(
            lambda conn: self._conversation(conn, conversation_id, actor.principal.user_id))
        if found is None:
            raise NotFound("Conversation not found")
        return found

    async def _moderated(self, actor: Actor, conversation_id: str) -> Conversation:
        conversation = await self._visible(actor, conversation_id)
        if conversation.role not in ("owner", "moderator"):
            raise Forbidden("Only the conversation's owner and moderators may do this")
        return conversation

    async def create_conversation(self, actor: Actor, name: Any,
                                  participants: Any = None) -> Conversation:
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise Invalid("name has 1 to 256 characters", "name")
        if participants is None:
            participants = []
        if not isinstance(participants, list) or len(participants) > _MAX_PARTICIPANTS:
            raise Invalid("participants is a list of {user, role}", "participants")
        wanted: dict[str, str] = {}
        for entry in participants:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("user"), str):
                raise Invalid("each participant is {user, role}", "participants")
            wanted[entry["user"]] = self._member_role(entry.get("role", "user"))
        conversation_id, now = random_code(12, _TOKEN_ALPHABET), datetime.now(UTC)
        owner_id = actor.principal.user_id

        def unit(conn: Connection) -> Conversation:
            members: dict[int, str] = {}
            for user_name, role in wanted.items():
                user = repo.user_by_name(conn, user_name)
                if user is None:
                    raise Invalid(f"No user {user_name!r}", "participants")
                members[int(user.id)] = role
            members[owner_id] = "owner"
            repo.insert_conversation(conn, {"id": conversation_id, "name": name.strip(),
                                            "owner_id": owner_id, "created_at": now},
                                     sorted(members.items()))
            found = self._conversation(conn, conversation_id, owner_id)
            assert found is not None
            return found

        return await self.ctx.db.write(unit)

    @staticmethod
    def _member_role(role: Any) -> str:
        if role not in MEMBER_ROLES:
            raise Invalid(f"role is one of {', '.join(MEMBER_ROLES)}", "role")
        return str(role)

    async def list_conversations(self, actor: Actor, *, filters: Mapping[str, str],
                                 sort: str, descending: bool, limit: int, offset: int
                                 ) -> tuple[list[Conversation], int]:
        """A page of the caller's conversations (fields of :data:`CONVERSATIONS`) and how
        many match."""
        source = repo.conversations_of_member(actor.principal.user_id)
        unknown = ({sort} | set(filters)) - set(CONVERSATIONS.fields)
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")

        def unit(conn: Connection) -> tuple[list[Conversation], int]:
            rows, total = _offset_page(conn, source, filters, sort, descending, limit, offset)
            return self._conversations(conn, rows, {r.id: r.member_role for r in rows}), total

        return await self.ctx.db.scan(unit)

    async def conversations_page(self, actor: Actor, query: Query) -> Page[Conversation]:
        """A keyset page (:data:`CONVERSATIONS`) of the caller's conversations."""
        source = repo.conversations_of_member(actor.principal.user_id)

        def unit(conn: Connection) -> Page[Conversation]:
            page = fetch_page(conn, CONVERSATIONS, query, source)
            return Page(self._conversations(conn, page.items,
                                            {r.id: r.member_role for r in page.items}),
                        page.page_info, page.cursors)

        return await self.ctx.db.scan(unit)

    async def get_conversation(self, actor: Actor, conversation_id: str) -> Conversation:
        return await self._visible(actor, conversation_id)

    async def add_participant(self, actor: Actor, conversation_id: str, user_name: Any,
                              role: Any = "user") -> tuple[Conversation, bool]:
        """Add a participant or change their role; (conversation, added)."""
        conversation = await self._moderated(actor, conversation_id)
        if not isinstance(user_name, str) or not user_name:
            raise Invalid("user is required", "user")
        member_role = self._member_role(role)
        caller_id = actor.principal.user_id

        def unit(conn: Connection) -> tuple[Conversation, bool]:
            user = repo.user_by_name(conn, user_name)
            if user is None:
                raise Invalid(f"No user {user_name!r}", "user")
            if user_name == conversation.owner:
                raise Invalid("The owner's role cannot change", "user")
            added = repo.set_member(conn, conversation_id, int(user.id), member_role)
            found = self._conversation(conn, conversation_id, caller_id)
            assert found is not None
            return found, added

        try:
            return await self.ctx.db.write(unit)
        except IntegrityError:  # added by a concurrent request (PostgreSQL): now a change
            return await self.ctx.db.write(unit)

    async def remove_participant(self, actor: Actor, conversation_id: str, user_name: str
                                 ) -> Conversation | None:
        """Moderators remove others; anyone may leave. None: the caller left."""
        conversation = await self._visible(actor, conversation_id)
        leaving = user_name == actor.principal.name
        if not leaving and conversation.role not in ("owner", "moderator"):
            raise Forbidden("Only the conversation's owner and moderators may do this")
        if user_name == conversation.owner:
            raise Invalid("The owner cannot leave or be removed", "user")
        caller_id = actor.principal.user_id

        def unit(conn: Connection) -> Conversation | None:
            user = repo.user_by_name(conn, user_name)
            if user is None or not repo.remove_member(conn, conversation_id, int(user.id)):
                raise NotFound(f"{user_name} is not a participant")
            return self._conversation(conn, conversation_id, caller_id)

        return await self.ctx.db.write(unit)

    # -- bots in conversations (the Talk bots reference) --------------------------------------

    async def conversation_bots(self, actor: Actor, conversation_id: str
                                ) -> list[dict[str, Any]]:
        """The bots a moderator can enable here (all but the no-setup ones), with
        ``state`` 1 when enabled in this conversation, else 0."""
        conversation = await self._moderated(actor, conversation_id)
        enabled = set(conversation.bots)
        rows = await self.ctx.db.read(repo.all_bots)
        return [{"id": r.id, "name": r.name, "description": r.description,
                 "state": STATE_ENABLED if r.id in enabled else STATE_DISABLED}
                for r in rows if r.state != STATE_NO_SETUP]

    async def _switchable(self, actor: Actor, conversation_id: str, bot_id: str) -> Bot:
        await self._moderated(actor, conversation_id)
        try:
            bot, _sealed = await self.bots.load_bot(bot_id)
        except NotFound:
            raise Invalid("Unknown bot id", "botId") from None
        if bot.state != STATE_ENABLED:
            raise Invalid(f"The bot is {STATE_NAMES.get(bot.state, bot.state)} on this "
                          "server", "botId")
        return bot

    async def enable_in_conversation(self, actor: Actor, conversation_id: str,
                                     bot_id: str) -> tuple[Bot, bool]:
        """(bot, newly enabled)."""
        bot = await self._switchable(actor, conversation_id, bot_id)
        now = datetime.now(UTC)
        try:
            created = await self.ctx.db.write(lambda conn: repo.enable_conversation_bot(
                conn, conversation_id, bot_id, now))
        except IntegrityError:  # enabled by a concurrent request (PostgreSQL)
            created = False
        return bot, created

    async def disable_in_conversation(self, actor: Actor, conversation_id: str,
                                      bot_id: str) -> tuple[Bot, bool]:
        """(bot, was enabled)."""
        bot = await self._switchable(actor, conversation_id, bot_id)
        removed = await self.ctx.db.write(lambda conn: repo.disable_conversation_bot(
            conn, conversation_id, bot_id))
        return bot, removed
