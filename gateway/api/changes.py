"""``GET /v1/storage/changes``: the change log, paged by an opaque cursor.

A bot that was down asks for everything after the cursor it kept, instead of re-listing
its bucket and diffing ETags. Parameters: ``bucket`` (required unless the caller is an
admin), ``prefix``, ``since`` (a cursor from an earlier answer; ``now`` starts at the head;
absent: the oldest change kept), ``limit`` (1 to 1000, default 100) and ``wait`` (seconds,
up to 30: when nothing is new, hold the request until a change arrives — long polling).

The answer's ``cursor`` is where to resume: after the last change listed, or at the head
of the log when the page is not full, so quiet buckets do not make the reader rescan.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import gateway_of, int_query, require_caller, set_resource
from gateway.api.errors import validation_error
from gateway.service import changes

MAX_WAIT = 30
POLL_SECONDS = 1.0


async def list_changes(request: Request) -> JSONResponse:
    caller = await require_caller(request, "storage:read")
    gw = gateway_of(request)
    params = request.query_params
    bucket = params.get("bucket") or None
    prefix = params.get("prefix", "")
    limit = int_query(request, "limit", 100, minimum=1, maximum=1000)
    wait = int_query(request, "wait", 0, minimum=0, maximum=MAX_WAIT)
    set_resource(request, bucket)
    if bucket is None:
        if not (caller.principal.is_admin and caller.has("admin")):
            raise validation_error("bucket is required", field="bucket")
    else:
        await gw.objects.bucket(caller.principal, bucket, write=False)
    since = params.get("since", "")
    db = gw.ctx.db
    if since == "now":
        after = await db.read(changes.head)
    elif since:
        try:
            after = changes.decode_cursor(since)
        except ValueError:
            raise validation_error("since is not a cursor from this feed", field="since") \
                from None
    else:
        after = 0
    deadline = time.monotonic() + wait
    while True:
        found, resume = await db.read(functools.partial(
            changes.page, after=after, limit=limit, bucket=bucket, prefix=prefix))
        remaining = deadline - time.monotonic()
        if found or remaining <= 0:
            break
        after = resume
        await gw.ctx.hub.wait(min(remaining, POLL_SECONDS))
    body: dict[str, Any] = {
        "changes": [c.as_event() for c in found],
        "cursor": changes.encode_cursor(resume),
        "has_more": len(found) == limit,
    }
    return JSONResponse(body)


routes: list[BaseRoute] = [
    Route("/v1/storage/changes", list_changes, methods=["GET"]),
]
