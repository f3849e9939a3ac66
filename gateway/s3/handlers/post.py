"""POST Object: browser form uploads signed by a POST policy (SigV4 or SigV2)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode, urlsplit

from starlette.responses import Response

from gateway.auth.postpolicy import check_content_length, verify_post_form
from gateway.checksums import DigestingStream
from gateway.headers import object_attributes
from gateway.s3.form import FormReader, boundary_of
from gateway.s3.handlers.common import xml_response
from gateway.s3.handlers.tagging import parse_tag_pairs
from gateway.s3.request import S3Request
from gateway.s3.xml import el
from gateway.service import changes
from gateway.service.encryption import response_headers, write_encryption_from_headers
from gateway.service.tagging import validate_tags
from gateway.types import Principal

#: What a redirect URL keeps as it is: RFC 3986 reserved and unreserved characters, and '%'
#: (escapes already made).
_URL_SAFE = ":/?#[]@!$&'()*+,;=-._~%"
#: Form fields that describe the object (as request headers would).
_OBJECT_FIELDS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-amz-storage-class", "x-amz-acl")


async def _limited(source: AsyncIterator[bytes],
                   bounds: tuple[int, int] | None) -> AsyncIterator[bytes]:
    """Enforce the policy's content-length-range while streaming: too large fails at once,
    too small at the end, before the backend keeps anything."""
    size = 0
    async for chunk in source:
        size += len(chunk)
        if bounds is not None and size > bounds[1]:
            check_content_length(bounds, size)
        yield chunk
    check_content_length(bounds, size)


def _request_length(req: S3Request) -> int | None:
    try:
        return int(req.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _attributes_from(fields: dict[str, str], file_type: str | None) -> dict[str, str]:
    lowered = {name.lower(): value for name, value in fields.items()}
    headers = {name: lowered[name] for name in _OBJECT_FIELDS if name in lowered}
    headers.update({name: value for name, value in lowered.items()
                    if name.startswith("x-amz-meta-")})
    if "acl" in lowered:
        headers["x-amz-acl"] = lowered["acl"]
    if "content-type" not in headers and file_type:
        headers["content-type"] = file_type
    return headers


async def post_object(req: S3Request) -> Response:
    reader = FormReader(req.raw_stream(), boundary_of(req.headers.get("content-type", "")))
    fields = await reader.fields()

    principals: dict[str, Principal] = {}

    async def lookup_secret(access_key: str) -> str | None:
        principal, secret = await req.gateway.accounts.lookup(access_key)
        if principal is not None:
            principals[access_key] = principal
        return secret

    verified = await verify_post_form(fields, bucket=req.bucket, filename=reader.filename,
                                      lookup_secret=lookup_secret)
    principal = principals[verified.access_key]
    # Form fields are text, not headers: checked and encoded as header text first.
    attrs = object_attributes(_attributes_from(fields, reader.file_content_type), text=True)
    tagging = next((v for name, v in fields.items() if name.lower() == "tagging"), None)
    if tagging is not None:  # a Tagging XML document, as S3 takes it in a form
        attrs = dataclasses.replace(
            attrs, tags=validate_tags(parse_tag_pairs(tagging.encode()), "object") or None)
    # ``x-amz-server-side-encryption`` and the SSE-C fields, as the headers of a PUT.
    encryption = write_encryption_from_headers(fields)
    body = DigestingStream(_limited(reader.file(), verified.content_length_range))
    # The file is smaller than the whole form: the quota holds the form's length.
    record = await req.gateway.objects.put(principal, req.bucket, verified.key, body, attrs,
                                           size_bound=_request_length(req),
                                           event=changes.EVENT_POST, encryption=encryption)

    host = req.headers.get("host", "")
    location = f"{req.request.url.scheme}://{host}/{req.bucket}/{quote(verified.key)}"
    headers = {"ETag": record.quoted_etag, "Location": location,
               **response_headers(record.encryption)}
    lowered = {name.lower(): value for name, value in verified.fields.items()}
    redirect = lowered.get("success_action_redirect") or lowered.get("redirect")
    if redirect:
        # A header carries printable ASCII only: the rest is percent-encoded, as browsers do.
        redirect = quote(redirect.strip(), safe=_URL_SAFE)
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        sep = "&" if urlsplit(redirect).query else "?"
        target = redirect + sep + urlencode({"bucket": req.bucket, "key": verified.key,
                                             "etag": record.quoted_etag})
        return Response(status_code=303, headers={**headers, "Location": target})
    # Any other value (the object is stored by now) is answered 204, as S3 documents.
    status = lowered.get("success_action_status", "204")
    if status == "201":
        return xml_response("PostResponse", [
            el("Location", location), el("Bucket", req.bucket), el("Key", verified.key),
            el("ETag", record.quoted_etag)], status=201, headers=headers)
    if status == "200":
        return Response(status_code=200, headers=headers)
    return Response(status_code=204, headers=headers)
