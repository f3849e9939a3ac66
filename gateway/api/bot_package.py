"""``/v1/bots/{id}/package``: a bot's package bucket as one tar archive.

- ``GET`` streams every object of the package as a tar (``?format=tar.gz``: gzip-compressed),
  in key order, content types and metadata in PAX records (:mod:`gateway.service.package_archive`).
- ``POST`` takes such an archive (tar or tar.gz, told apart by its first bytes) and makes the
  package hold its objects all at once, or changes nothing: ``?mode=replace`` (the default)
  removes the keys the archive lacks, ``?mode=merge`` keeps them.

Who may: the bot's owner (the customer's user), its admins, or a gateway administrator (the
admin role and a credential with the ``admin`` permission, as in the bots API); the
credential needs ``bots:read`` to export, ``bots:write`` and ``storage:write`` to import.
Every imported member passes the package rules an upload of it would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import Caller, gateway_of, ok, require, require_caller
from gateway.api.errors import validation_error
from gateway.headers import content_length
from gateway.service.package_archive import MODES, PackageArchiveService

if TYPE_CHECKING:
    from gateway.core import Gateway

PATH = "/v1/bots/{bot_id}/package"
_FORMATS = {"tar": ("application/x-tar", ".tar"), "tar.gz": ("application/gzip", ".tar.gz")}


def _service(gw: Gateway) -> PackageArchiveService:
    """Stateless, so made per request; imports pass the package rules uploads pass."""
    return PackageArchiveService(gw.ctx, gw.quotas, gw.packages)


def _administrator(caller: Caller) -> bool:
    """A gateway administrator: the role and a credential with the admin permission."""
    return caller.principal.is_admin and caller.has("admin")


async def export_package(request: Request) -> Response:
    caller = await require_caller(request, "bots:read")
    fmt = request.query_params.get("format") or "tar"
    if fmt not in _FORMATS:
        raise validation_error("format is tar or tar.gz", field="format")
    service = _service(gateway_of(request))
    bucket = await service.package_for(caller.principal, request.path_params["bot_id"],
                                       admin=_administrator(caller))
    media_type, suffix = _FORMATS[fmt]
    headers = {"Content-Disposition": f'attachment; filename="{bucket.name}{suffix}"'}
    if request.method == "HEAD":
        return Response(media_type=media_type, headers=headers)
    return StreamingResponse(service.export(bucket, compress=fmt == "tar.gz"),
                             media_type=media_type, headers=headers)


async def import_package(request: Request) -> JSONResponse:
    caller = await require_caller(request, "bots:write")
    require(caller, "storage:write")
    mode = request.query_params.get("mode") or "replace"
    if mode not in MODES:
        raise validation_error("mode is replace or merge", field="mode")
    service = _service(gateway_of(request))
    bucket = await service.package_for(caller.principal, request.path_params["bot_id"],
                                       admin=_administrator(caller))
    result = await service.import_archive(
        bucket, request.stream(), principal=caller.principal,
        mode="merge" if mode == "merge" else "replace",
        declared_size=content_length(request.headers))
    message = f"Imported {result.imported} objects into {result.bucket}"
    if result.deleted:
        message += f"; removed {result.deleted} the archive did not hold"
    return ok(result.as_dict(), message=message)


routes: list[BaseRoute] = [
    Route(PATH, export_package, methods=["GET", "HEAD"]),
    Route(PATH, import_package, methods=["POST"]),
]
