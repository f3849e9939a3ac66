"""Put/Get/DeleteBucketCors, Put/GetBucketAcl, Put/GetObjectAcl."""

from __future__ import annotations

from starlette.responses import Response

from gateway import errors
from gateway.auth.policy import validate_acl
from gateway.s3 import cors
from gateway.s3.handlers.common import owner_fields, xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import el, local, parse
from gateway.types import Owner

_XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


async def put_bucket_cors(req: S3Request) -> Response:
    rules = cors.parse_rules(await req.small_body())
    await req.gateway.buckets.set_cors(req.principal, req.bucket, rules)
    return Response(status_code=200)


async def get_bucket_cors(req: S3Request) -> Response:
    bucket = await req.gateway.buckets.owned(req.principal, req.bucket)
    if not bucket.cors:
        raise errors.NoSuchCORSConfiguration(fields={"BucketName": req.bucket})
    return xml_response("CORSConfiguration", cors.rules_xml(bucket.cors))


async def delete_bucket_cors(req: S3Request) -> Response:
    await req.gateway.buckets.set_cors(req.principal, req.bucket, None)
    return Response(status_code=204)


def _policy_xml(owner_record: Owner, acl: str) -> list[str]:
    owner = owner_fields(owner_record)
    grants = [f'<Grant><Grantee {_XSI} xsi:type="CanonicalUser">{owner}</Grantee>'
              "<Permission>FULL_CONTROL</Permission></Grant>"]
    group = {"public-read": (ALL_USERS, ["READ"]),
             "public-read-write": (ALL_USERS, ["READ", "WRITE"]),
             "authenticated-read": (AUTHENTICATED_USERS, ["READ"])}.get(acl)
    if group is not None:
        uri, permissions = group
        grants += [f'<Grant><Grantee {_XSI} xsi:type="Group">{el("URI", uri)}</Grantee>'
                   f"{el('Permission', p)}</Grant>" for p in permissions]
    return [f"<Owner>{owner}</Owner>",
            "<AccessControlList>" + "".join(grants) + "</AccessControlList>"]


async def _requested_acl(req: S3Request) -> str:
    """A canned ACL from ``x-amz-acl``, or the canned ACL an AccessControlPolicy body
    amounts to (only the grants canned ACLs can express are understood)."""
    if "x-amz-acl" in req.headers:
        return validate_acl(req.headers["x-amz-acl"])
    if any(name.startswith("x-amz-grant-") for name in req.headers):
        raise errors.NotImplemented_("Explicit grants are not supported; use x-amz-acl.")
    body = await req.small_body()
    if not body.strip():
        raise errors.MissingSecurityHeader("An ACL needs x-amz-acl or a body.")
    root = parse(body)
    if local(root.tag) != "AccessControlPolicy":
        raise errors.MalformedXML()
    grants: set[tuple[str, str]] = set()
    for node in root.iter():
        if local(node.tag) != "Grant":
            continue
        uri = next((c.text or "" for c in node.iter() if local(c.tag) == "URI"), "")
        permission = next((c.text or "" for c in node if local(c.tag) == "Permission"), "")
        if uri:
            grants.add((uri.strip(), permission.strip()))
    if (ALL_USERS, "WRITE") in grants:
        return "public-read-write"
    if (ALL_USERS, "READ") in grants:
        return "public-read"
    if (AUTHENTICATED_USERS, "READ") in grants:
        return "authenticated-read"
    return "private"


async def put_bucket_acl(req: S3Request) -> Response:
    await req.gateway.buckets.set_acl(req.principal, req.bucket, await _requested_acl(req))
    return Response(status_code=200)


async def get_bucket_acl(req: S3Request) -> Response:
    bucket = await req.gateway.buckets.owned(req.principal, req.bucket)
    owner = await req.gateway.accounts.owner(bucket.owner_id)
    return xml_response("AccessControlPolicy", _policy_xml(owner, bucket.acl))


async def put_object_acl(req: S3Request) -> Response:
    acl = await _requested_acl(req)
    await req.gateway.objects.set_acl(req.principal, req.bucket, req.key, acl,
                                      req.query.get("versionId"))
    return Response(status_code=200)


async def get_object_acl(req: S3Request) -> Response:
    bucket, obj = await req.gateway.objects.get_acl(req.principal, req.bucket, req.key,
                                                    req.query.get("versionId"))
    owner = await req.gateway.accounts.owner(bucket.owner_id)
    return xml_response("AccessControlPolicy", _policy_xml(owner, obj.acl))
