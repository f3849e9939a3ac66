"""Files shipped inside the package and served by the gateway itself: the JSON API's docs
page (:mod:`gateway.api.openapi`) and the web console (:mod:`gateway.console`).

Each file is read once and kept in memory with a strong ETag (a hash of its bytes), so a
browser revalidates with ``If-None-Match`` and gets a bodiless ``304``. Pages name their
assets with ``?v=<hash>`` (:func:`fill_versions`): such URLs change whenever the bytes do,
so they may be cached as immutable; anything requested without a version is revalidated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

#: For URLs that carry their content's hash.
IMMUTABLE = "public, max-age=31536000, immutable"
#: For pages and unversioned URLs: cache, but ask (ETag) before each use.
REVALIDATE = "no-cache"

#: File extension → media type, for the kinds of files a page is made of.
MEDIA_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json", ".txt": "text/plain",
    ".md": "text/plain", "": "text/plain",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    #: Quoted, as the header carries it.
    etag: str

    @property
    def version(self) -> str:
        """A short form of the hash, for ``?v=`` in the URLs naming this file."""
        return self.etag.strip('"')[:16]


def static_file(body: bytes, media_type: str) -> StaticFile:
    """``body`` served as ``media_type`` (given whole, charset included)."""
    return StaticFile(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def packaged(package: str, path: str, media_type: str | None = None) -> StaticFile:
    """The file at ``path`` (``/``-separated) inside ``package``; the media type from its
    extension unless given (text types get ``charset=utf-8``)."""
    data = resources.files(package).joinpath(*path.split("/")).read_bytes()
    if media_type is None:
        name = path.rsplit("/", 1)[-1]
        media_type = MEDIA_TYPES.get(name[name.rfind("."):] if "." in name else "",
                                     "application/octet-stream")
    if media_type.startswith("text/") or media_type == "image/svg+xml":
        media_type += "; charset=utf-8"
    return static_file(data, media_type)


def fill_versions(template: str, files: Iterable[tuple[str, StaticFile]]) -> str:
    """``template`` with each ``{{name}}`` replaced by that file's version."""
    for name, file in files:
        template = template.replace("{{" + name + "}}", file.version)
    return template


def serve(request: Request, file: StaticFile, cache_control: str,
          extra: dict[str, str] | None = None) -> Response:
    """``file``, or ``304`` when the request already holds it (``If-None-Match``)."""
    headers = {"ETag": file.etag, "Cache-Control": cache_control,
               "X-Content-Type-Options": "nosniff", **(extra or {})}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, headers=headers, media_type=file.media_type)
