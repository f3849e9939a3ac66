"""``/v1/admin``: bucket quotas and usage.

Setting a limit is for admins. A bucket's own quota and usage may also be read by whoever
may read the bucket (its owner, grantees), so a bot can see how close it is to its limit.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import (
    gateway_of,
    int_query,
    ok,
    read_json,
    require_admin,
    require_caller,
)
from gateway.api.errors import validation_error
from gateway.types import MAX_SQL_INT

_LIMITS = ("max_bytes", "max_objects", "max_object_size")


async def list_quotas(request: Request) -> JSONResponse:
    await require_admin(request)
    limit = int_query(request, "limit", 20, minimum=1, maximum=100)
    offset = int_query(request, "offset", 0)
    usages = await gateway_of(request).quotas.list_all()
    page = usages[offset:offset + limit]
    return ok({"buckets": [u.as_dict() for u in page], "total": len(usages),
               "limit": limit, "offset": offset})


async def get_quota(request: Request) -> JSONResponse:
    caller = await require_caller(request, "storage:read")
    name = request.path_params["bucket"]
    gw = gateway_of(request)
    if not caller.principal.is_admin:
        await gw.objects.bucket(caller.principal, name, write=False)
    return ok((await gw.quotas.get(name)).as_dict())


async def put_quota(request: Request) -> JSONResponse:
    await require_admin(request)
    body = await read_json(request)
    unknown = sorted(set(body) - set(_LIMITS))
    if unknown:
        raise validation_error(f"unknown field(s): {', '.join(unknown)}; the limits are "
                               f"{', '.join(_LIMITS)}", fields=unknown)
    changes: dict[str, Any] = {}
    for name in _LIMITS:
        if name not in body:
            continue
        value = body[name]
        valid = value is None or value == "default" or (
            isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= MAX_SQL_INT)
        if not valid:
            raise validation_error(
                f"{name} must be an integer from 0 to {MAX_SQL_INT}, null (unlimited) or "
                "\"default\"", field=name)
        changes[name] = value
    usage = await gateway_of(request).quotas.set(request.path_params["bucket"], **changes)
    return ok(usage.as_dict(), message="Quota updated")


async def usage_by_user(request: Request) -> JSONResponse:
    await require_admin(request)
    return ok({"users": await gateway_of(request).quotas.usage_by_user()})


routes: list[BaseRoute] = [
    Route("/v1/admin/quotas", list_quotas, methods=["GET"]),
    Route("/v1/admin/buckets/{bucket}/quota", get_quota, methods=["GET"]),
    Route("/v1/admin/buckets/{bucket}/quota", put_quota, methods=["PUT"]),
    Route("/v1/admin/usage", usage_by_user, methods=["GET"]),
]
