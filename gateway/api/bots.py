"""The bot platform's JSON API: customers, bots, a bot's chat users (the Control Tower
reference), conversations and the bots enabled in them (the Talk bots reference).

- ``/v1/customers`` (POST: create-or-return the caller's), ``/v1/customers/{id}`` (GET, PUT)
- ``/v1/bots`` (POST, GET), ``/v1/bots/{id}`` (GET, PUT, DELETE)
- ``/v1/users`` (POST, GET ``?botId=``, PUT bulk), ``/v1/users/{id}`` (GET, PUT)
- ``/v1/conversations`` (POST, GET), ``/v1/conversations/{id}`` (GET),
  ``/v1/conversations/{id}/participants`` (POST), ``…/participants/{user}`` (DELETE)
- ``/v1/bot/admin`` (GET, administrators), ``/v1/bot/{conversation}`` (GET),
  ``/v1/bot/{conversation}/{botId}`` (POST enable, DELETE disable)

Reads need ``bots:read``, changes ``bots:write``; "administrator" means the admin role and a
credential with the ``admin`` permission. Access rules are the service's
(:mod:`gateway.service.bots`): an existing bot or customer the caller may not touch is
403 ``FORBIDDEN``, a missing one 404 ``NOT_FOUND``; a conversation the caller does not take
part in is 404, as in Talk. Lists take the overview's ``limit``/``offset``/``sort``/
``order``/``filter[field]=`` (:mod:`gateway.api.pagination`). ``/v1/bots``, ``/v1/users``,
``/v1/bot/admin`` and ``/v1/conversations`` also answer keyset pages when asked with
``cursor``/``where``/``order_by``/``total``, over the fieldPaths of
:data:`~gateway.service.bots.BOTS`, :data:`~gateway.service.bots.BOT_USERS`,
:data:`~gateway.service.bots.ADMIN_BOTS` and
:data:`~gateway.service.conversations.CONVERSATIONS`: the names and values their answers
show.

Secrets (a bot's webhook secret, a package S3 key) appear only in the answer that made
them, which is marked ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import Caller, gateway_of, ok, read_json, require_admin, require_caller
from gateway.api.errors import ApiError, validation_error
from gateway.api.pagination import (
    keyset_page,
    keyset_query,
    page_request,
    paged,
    paginate,
    wants_keyset,
)
from gateway.service.bots import (
    ADMIN_BOTS,
    BOT_USERS,
    BOTS,
    Actor,
    AlreadyExists,
    Bot,
    CreatedBot,
    Forbidden,
    Invalid,
    NotFound,
)
from gateway.service.conversations import CONVERSATIONS

if TYPE_CHECKING:
    from gateway.service.bots import BotService

_NO_STORE = {"Cache-Control": "no-store"}


@contextmanager
def _service_errors() -> Iterator[None]:
    try:
        yield
    except Forbidden as exc:
        raise ApiError(403, "FORBIDDEN", str(exc)) from None
    except NotFound as exc:
        raise ApiError(404, "NOT_FOUND", str(exc)) from None
    except AlreadyExists as exc:
        raise ApiError(409, "CONFLICT", str(exc)) from None
    except Invalid as exc:
        details = {"field": exc.field} if exc.field else {}
        raise validation_error(str(exc), **details) from None


def _actor(caller: Caller) -> Actor:
    return Actor(caller.principal, admin=caller.principal.is_admin and caller.has("admin"))


async def _caller(request: Request, permission: str) -> tuple[Actor, BotService]:
    caller = await require_caller(request, permission)
    return _actor(caller), gateway_of(request).bots


def _created(result: CreatedBot, status: int, message: str) -> JSONResponse:
    secret_inside = result.secret is not None or result.s3_key is not None
    return ok(result.as_dict(), status=status, message=message,
              headers=_NO_STORE if secret_inside else None)


# -- customers ---------------------------------------------------------------------------------


async def create_customer(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request, allow_empty=True)
    with _service_errors():
        customer, created = await bots.ensure_customer(actor.principal, body)
    return ok(customer.as_dict(), status=201 if created else 200,
              message="Customer created" if created else "Customer exists")


async def get_customer(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    with _service_errors():
        customer = await bots.get_customer(actor, request.path_params["customer_id"])
    return ok(customer.as_dict())


async def update_customer(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        customer = await bots.update_customer(actor, request.path_params["customer_id"], body)
    return ok(customer.as_dict(), message="Customer updated")


# -- bots --------------------------------------------------------------------------------------


async def create_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        result = await bots.create_bot(actor, body)
    return _created(result, 201, f"Bot created with its package bucket {result.bot.bucket}; "
                    "store its secret now: it is not shown again")


async def list_bots(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    if wants_keyset(request):
        query = keyset_query(request, BOTS)
        with _service_errors():
            keyset = await bots.bots_page(actor, query)
        return keyset_page([b.as_dict() for b in keyset.items], keyset.page_info)
    page = page_request(request, sortable=("id", "name", "createdAt", "state", "customerId"),
                        default_sort="createdAt",
                        filterable=("id", "name", "state", "customerId", "bucket", "url"))
    with _service_errors():
        found, total = await bots.list_bots(actor, filters=page.filters, sort=page.sort,
                                            descending=page.descending, limit=page.limit,
                                            offset=page.offset)
    return paged([b.as_dict() for b in found], total, page)


async def get_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    with _service_errors():
        bot = await bots.get_bot(actor, request.path_params["bot_id"],
                                 request.query_params.get("customerId") or None)
    return ok(bot.as_dict())


async def update_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        result = await bots.update_bot(actor, request.path_params["bot_id"], body)
    return _created(result, 200, "Bot updated")


async def delete_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    with _service_errors():
        bot = await bots.delete_bot(actor, request.path_params["bot_id"])
    return ok({"id": bot.id, "deleted": True, "bucket": bot.bucket},
              message=f"Bot deleted; its package bucket {bot.bucket} remains"
              if bot.bucket else "Bot deleted")


# -- a bot's users -----------------------------------------------------------------------------


async def create_user(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        user, created = await bots.create_user(actor, body)
    return ok(user.as_dict(), status=201 if created else 200,
              message="User created" if created else "User exists")


async def get_user(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    q = request.query_params
    with _service_errors():
        user = await bots.get_user(actor, q.get("botId"), request.path_params["user_id"],
                                   q.get("customerId") or None)
    return ok(user.as_dict())


_USER_FILTER_ALIASES = {"botStatus": "botStatus", "externalId": "externalId",
                        "facebookId": "externalId"}


async def list_users(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    q = request.query_params
    if wants_keyset(request):
        query = keyset_query(request, BOT_USERS, filter_aliases=_USER_FILTER_ALIASES)
        with _service_errors():
            users = await bots.users_page(actor, q.get("botId"), query,
                                          q.get("customerId") or None)
        return keyset_page([u.as_dict() for u in users.items], users.page_info)
    page = page_request(request, sortable=("id", "createdAt", "externalId", "botStatus"),
                        default_sort="createdAt",
                        filterable=("id", "externalId", "botStatus", "customerId"),
                        aliases=_USER_FILTER_ALIASES)
    with _service_errors():
        found, total = await bots.list_users(
            actor, q.get("botId"), filters=page.filters, sort=page.sort,
            descending=page.descending, limit=page.limit, offset=page.offset,
            customer_id=q.get("customerId") or None)
    return paged([u.as_dict() for u in found], total, page)


async def update_users(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    if "update" not in body:
        raise validation_error("update (the attributes to change) is required",
                               field="update")
    with _service_errors():
        users = await bots.update_users(actor, body.get("botId"), body.get("ids"),
                                        body["update"])
    return ok([u.as_dict() for u in users], message=f"{len(users)} user(s) updated")


async def update_user(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        user = await bots.update_user(actor, request.path_params["user_id"], body)
    return ok(user.as_dict(), message="User updated")


# -- conversations -----------------------------------------------------------------------------


async def create_conversation(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        conversation = await bots.conversations.create_conversation(
            actor, body.get("name"), body.get("participants"))
    return ok(conversation.as_dict(), status=201, message="Conversation created")


async def list_conversations(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    if wants_keyset(request):
        query = keyset_query(request, CONVERSATIONS)
        conversations = await bots.conversations.conversations_page(actor, query)
        return keyset_page([c.as_dict() for c in conversations.items],
                           conversations.page_info)
    page = page_request(request, sortable=("id", "name", "createdAt", "role", "owner"),
                        default_sort="createdAt", filterable=("id", "name", "role", "owner"))
    with _service_errors():
        found, total = await bots.conversations.list_conversations(
            actor, filters=page.filters, sort=page.sort, descending=page.descending,
            limit=page.limit, offset=page.offset)
    return paged([c.as_dict() for c in found], total, page)


async def get_conversation(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    with _service_errors():
        conversation = await bots.conversations.get_conversation(
            actor, request.path_params["conversation"])
    return ok(conversation.as_dict())


async def add_participant(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    body = await read_json(request)
    with _service_errors():
        conversation, added = await bots.conversations.add_participant(
            actor, request.path_params["conversation"], body.get("user"),
            body.get("role", "user"))
    return ok(conversation.as_dict(), status=201 if added else 200,
              message="Participant added" if added else "Participant's role changed")


async def remove_participant(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    user = request.path_params["user"]
    with _service_errors():
        conversation = await bots.conversations.remove_participant(
            actor, request.path_params["conversation"], user)
    if conversation is None:
        return ok(None, message="You left the conversation")
    return ok(conversation.as_dict(), message=f"{user} removed")


# -- bots in conversations (the Talk bots reference) -------------------------------------------


async def admin_bots(request: Request) -> JSONResponse:
    await require_admin(request)
    if wants_keyset(request):
        query = keyset_query(request, ADMIN_BOTS)
        found_page = await gateway_of(request).bots.admin_bots_page(query)
        return keyset_page([b.as_talk() for b in found_page.items], found_page.page_info)
    page = page_request(request, sortable=("id", "name", "state", "error_count"),
                        default_sort="name", filterable=("id", "name", "state", "url_hash"))
    found = await gateway_of(request).bots.all_bots()
    items, total = paginate([b.as_talk() for b in found], page)
    return paged(items, total, page)


async def conversation_bots(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:read")
    page = page_request(request, sortable=("id", "name", "state"), default_sort="name",
                        filterable=("id", "name", "state"))
    with _service_errors():
        found = await bots.conversations.conversation_bots(
            actor, request.path_params["conversation"])
    items, total = paginate(found, page)
    return paged(items, total, page)


def _talk_bot(bot: Bot, state: int) -> dict[str, Any]:
    return {"id": bot.id, "name": bot.name, "description": bot.description, "state": state}


async def enable_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    with _service_errors():
        bot, created = await bots.conversations.enable_in_conversation(
            actor, request.path_params["conversation"], request.path_params["bot_id"])
    return ok(_talk_bot(bot, 1), status=201 if created else 200,
              message="Bot enabled in the conversation" if created
              else "Bot already enabled in the conversation")


async def disable_bot(request: Request) -> JSONResponse:
    actor, bots = await _caller(request, "bots:write")
    with _service_errors():
        bot, removed = await bots.conversations.disable_in_conversation(
            actor, request.path_params["conversation"], request.path_params["bot_id"])
    return ok(_talk_bot(bot, 0), message="Bot disabled in the conversation" if removed
              else "Bot was not enabled in the conversation")


routes: list[BaseRoute] = [
    Route("/v1/customers", create_customer, methods=["POST"]),
    Route("/v1/customers/{customer_id}", get_customer, methods=["GET"]),
    Route("/v1/customers/{customer_id}", update_customer, methods=["PUT"]),
    Route("/v1/bots", create_bot, methods=["POST"]),
    Route("/v1/bots", list_bots, methods=["GET"]),
    Route("/v1/bots/{bot_id}", get_bot, methods=["GET"]),
    Route("/v1/bots/{bot_id}", update_bot, methods=["PUT"]),
    Route("/v1/bots/{bot_id}", delete_bot, methods=["DELETE"]),
    Route("/v1/users", create_user, methods=["POST"]),
    Route("/v1/users", list_users, methods=["GET"]),
    Route("/v1/users", update_users, methods=["PUT"]),
    Route("/v1/users/{user_id}", get_user, methods=["GET"]),
    Route("/v1/users/{user_id}", update_user, methods=["PUT"]),
    Route("/v1/conversations", create_conversation, methods=["POST"]),
    Route("/v1/conversations", list_conversations, methods=["GET"]),
    Route("/v1/conversations/{conversation}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation}/participants", add_participant,
          methods=["POST"]),
    Route("/v1/conversations/{conversation}/participants/{user}", remove_participant,
          methods=["DELETE"]),
    Route("/v1/bot/admin", admin_bots, methods=["GET"]),
    Route("/v1/bot/{conversation}", conversation_bots, methods=["GET"]),
    Route("/v1/bot/{conversation}/{bot_id}", enable_bot, methods=["POST"]),
    Route("/v1/bot/{conversation}/{bot_id}", disable_bot, methods=["DELETE"]),
]
