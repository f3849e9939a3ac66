"""The ceiling: a bare Starlette app on the same uvicorn settings as the gateway.

It does the least any object server must: GET answers 4 KiB (``/big/<n>``: n bytes, streamed
in 1 MiB chunks), HEAD the same headers without a body, PUT reads the body to the end and
drops it. No authentication, no metadata, no disk. ``make bench`` reports the gateway's
figures as ratios of this app's, measured in the same run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

SMALL = b"x" * 4096
_CHUNK = bytes(1024 * 1024)


async def _zeros(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        n = min(len(_CHUNK), size - sent)
        yield _CHUNK if n == len(_CHUNK) else _CHUNK[:n]
        sent += n


async def read(request: Request) -> Response:
    path = request.url.path
    if path.startswith("/big/"):
        size = int(path.rsplit("/", 1)[1])
        return StreamingResponse(_zeros(size), headers={"Content-Length": str(size)},
                                 media_type="application/octet-stream")
    return Response(SMALL, media_type="application/octet-stream",
                    headers={"ETag": '"0123456789abcdef0123456789abcdef"'})


async def write(request: Request) -> Response:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return Response(b"", headers={"ETag": '"0123456789abcdef0123456789abcdef"'})


app = Starlette(routes=[Route("/{path:path}", read, methods=["GET", "HEAD"]),
                        Route("/{path:path}", write, methods=["PUT", "POST"])])
