"""Object search: ``GET /api/v1/storage/buckets/{bucket}/search``.

The query parameters are those of the API-token and pagination reference (``where``,
``order_by``, ``cursor``, ``total``; see :mod:`gateway.service.query`), over the fields
``key``, ``size``, ``last_modified``, ``content_type``, ``etag`` and ``metadata.<name>``.
Whoever may list the bucket may search it: ``storage:read`` and the bucket access check of
the listing. Errors use the Storage API reference's flat shape, as every ``/v1/storage``
endpoint does.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.common import gateway_of, ok, require_caller, set_resource
from gateway.api.errors import validation_error
from gateway.service.query import (
    OBJECTS,
    ObjectMatch,
    QueryError,
    query_from_params,
    search_objects,
)

PREFIX = "/v1/storage"


def _item(match: ObjectMatch) -> dict[str, object]:
    # The listing's shapes: ISO 8601 UTC to the second, the ETag without quotes.
    return {"key": match.key, "size": match.size,
            "last_modified": match.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "etag": match.etag, "content_type": match.content_type,
            "metadata": match.metadata}


async def search(request: Request) -> Response:
    caller = await require_caller(request, "storage:read")
    name: str = request.path_params["bucket"]
    set_resource(request, name)
    gw = gateway_of(request)
    bucket = await gw.buckets.get(caller.principal, name)
    try:
        query = query_from_params(OBJECTS, request.query_params)
    except QueryError as exc:
        raise validation_error(str(exc), field=exc.part, reason=exc.reason) from None
    page = await gw.ctx.db.scan(lambda conn: search_objects(conn, bucket.id, query))
    return ok({"items": [_item(m) for m in page.items],
               "pageInfo": page.page_info.as_dict()})


routes: list[BaseRoute] = [
    Route(PREFIX + "/buckets/{bucket}/search", search, methods=["GET"]),
]
