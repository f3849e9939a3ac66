"""The web console (``/console``): a single-page app for users and admins, served from the
files in ``static/`` (Preact and htm vendored there: no CDN, no build step).

The page talks to the JSON API only, with a login session's bearer token that it keeps in
``sessionStorage``; the server side is nothing but these files. ``/console`` is the page
(its navigation lives in the URL's fragment, which never reaches the server), and
``/console/assets/<path>`` the files it loads.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.static_files import (
    IMMUTABLE,
    REVALIDATE,
    StaticFile,
    fill_versions,
    packaged,
    serve,
    static_file,
)

_PACKAGE = "gateway.console"
PAGE_PATH = "/console"
ASSET_PREFIX = PAGE_PATH + "/assets/"
#: The page's own scripts and styles only; presigned links are same-origin, and share
#: links are shown, not loaded.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_PAGE_HEADERS = {"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY",
                 "Referrer-Policy": "no-referrer"}


def _walk(directory: Traversable, prefix: str = "") -> list[str]:
    out: list[str] = []
    for entry in directory.iterdir():
        if entry.is_dir():
            out += _walk(entry, f"{prefix}{entry.name}/")
        elif entry.is_file():
            out.append(prefix + entry.name)
    return out


@cache
def assets() -> dict[str, StaticFile]:
    """Every file below ``static/`` but the page, by its path there."""
    names = _walk(resources.files(_PACKAGE).joinpath("static"))
    return {name: packaged(_PACKAGE, "static/" + name) for name in sorted(names)
            if name != "index.html"}


@cache
def page() -> StaticFile:
    html = resources.files(_PACKAGE).joinpath("static", "index.html").read_text("utf-8")
    return static_file(fill_versions(html, assets().items()).encode(),
                       "text/html; charset=utf-8")


async def console_page(request: Request) -> Response:
    return serve(request, page(), REVALIDATE, _PAGE_HEADERS)


async def console_slash(_request: Request) -> Response:
    """``/console/``: the page's relative asset URLs are written for ``/console``."""
    return RedirectResponse(PAGE_PATH, status_code=308)


async def console_asset(request: Request) -> Response:
    """An asset; immutable when asked for by the version the page names it with."""
    file = assets().get(request.path_params["path"])
    if file is None:
        return PlainTextResponse("Not Found", status_code=404)
    versioned = request.query_params.get("v") == file.version
    return serve(request, file, IMMUTABLE if versioned else REVALIDATE,
                 {"Cross-Origin-Resource-Policy": "same-origin"})


routes: list[BaseRoute] = [
    Route(PAGE_PATH, console_page, methods=["GET"]),
    Route(PAGE_PATH + "/", console_slash, methods=["GET"]),
    Route(ASSET_PREFIX + "{path:path}", console_asset, methods=["GET"]),
]
