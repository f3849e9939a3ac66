"""Small helpers every handler family uses."""

from __future__ import annotations

from email.utils import format_datetime

from starlette.responses import Response

from gateway.s3.xml import document, el
from gateway.types import Owner

XML = "application/xml"


def xml_response(root: str, children: list[str], *, status: int = 200,
                 headers: dict[str, str] | None = None) -> Response:
    return Response(document(root, children), status_code=status, headers=headers,
                    media_type=XML)


def http_date(value: object) -> str:
    return format_datetime(value, usegmt=True)  # type: ignore[arg-type]


def owner_fields(owner: Owner) -> str:
    return el("ID", owner.canonical_id) + el("DisplayName", owner.display_name)


def owner_xml(owner: Owner, element: str = "Owner") -> str:
    return f"<{element}>{owner_fields(owner)}</{element}>"
