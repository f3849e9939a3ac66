"""Render a GatewayError as S3 does: an XML ``<Error>`` with the right status and headers."""

from __future__ import annotations

from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.s3.xml import document, el


def error_response(exc: GatewayError, *, resource: str, request_id: str,
                   head: bool = False) -> Response:
    headers = dict(exc.headers)
    headers["x-amz-request-id"] = request_id
    if exc.status == 304 or head:
        # No body: 304 never has one, and HEAD answers carry only status and headers.
        if exc.status != 304:
            headers["x-amz-error-code"] = exc.code
        return Response(status_code=exc.status, headers=headers)
    parts = [el("Code", exc.code), el("Message", exc.message)]
    parts.extend(el(name, value) for name, value in exc.fields.items())
    parts.append(el("Resource", exc.resource or resource))
    parts.append(el("RequestId", request_id))
    body = document("Error", parts, namespace=False)
    return Response(body, status_code=exc.status, headers=headers,
                    media_type="application/xml")
