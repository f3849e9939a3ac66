"""Small helpers every handler family uses."""

from __future__ import annotations

import hashlib
from email.utils import format_datetime

from starlette.responses import Response

from gateway.s3.xml import document, el

XML = "application/xml"


def xml_response(root: str, children: list[str], *, status: int = 200,
                 headers: dict[str, str] | None = None) -> Response:
    return Response(document(root, children), status_code=status, headers=headers,
                    media_type=XML)


def http_date(value: object) -> str:
    return format_datetime(value, usegmt=True)  # type: ignore[arg-type]


def canonical_user_id(user_id: int) -> str:
    """A stable 64-hex owner id in the shape S3 clients expect."""
    return hashlib.sha256(f"gateway-user:{user_id}".encode()).hexdigest()


def owner_xml(user_id: int, name: str) -> str:
    return "<Owner>" + el("ID", canonical_user_id(user_id)) + el("DisplayName", name) + "</Owner>"
