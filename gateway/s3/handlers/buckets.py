"""ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
Get/PutBucketVersioning."""

from __future__ import annotations

from starlette.responses import Response

from gateway import errors
from gateway.auth.policy import validate_acl
from gateway.s3.handlers.common import owner_xml, xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import S3_NS, child_text, el, iso8601, local, parse


async def list_buckets(req: S3Request) -> Response:
    buckets = await req.gateway.buckets.list(req.principal)
    items = [
        "<Bucket>" + el("Name", b.name) + el("CreationDate", iso8601(b.created_at))
        + el("BucketRegion", b.region) + "</Bucket>"
        for b in buckets
    ]
    return xml_response("ListAllMyBucketsResult", [
        owner_xml(await req.gateway.accounts.owner(req.principal.user_id)),
        "<Buckets>" + "".join(items) + "</Buckets>",
    ])


async def create_bucket(req: S3Request) -> Response:
    body = await req.small_body()
    location: str | None = None
    if body.strip():
        root = parse(body)
        if local(root.tag) != "CreateBucketConfiguration":
            raise errors.MalformedXML()
        location = child_text(root, "LocationConstraint") or None
    acl = validate_acl(req.headers.get("x-amz-acl"))
    await req.gateway.buckets.create(req.principal, req.bucket, location, acl)
    return Response(status_code=200, headers={"Location": f"/{req.bucket}"})


async def head_bucket(req: S3Request) -> Response:
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    return Response(status_code=200, headers={"x-amz-bucket-region": bucket.region})


async def delete_bucket(req: S3Request) -> Response:
    await req.gateway.buckets.delete(req.principal, req.bucket)
    return Response(status_code=204)


async def get_bucket_location(req: S3Request) -> Response:
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    # us-east-1 is reported as an empty constraint, as S3 does.
    value = "" if bucket.region == "us-east-1" else bucket.region
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<LocationConstraint xmlns="{S3_NS}">{value}</LocationConstraint>')
    return Response(body.encode(), media_type="application/xml")


async def get_bucket_versioning(req: S3Request) -> Response:
    bucket = await req.gateway.buckets.get(req.principal, req.bucket)
    # Never configured: an empty configuration, as S3 answers.
    return xml_response("VersioningConfiguration",
                        [el("Status", bucket.versioning)] if bucket.versioning else [])


async def put_bucket_versioning(req: S3Request) -> Response:
    root = parse(await req.small_body())
    if local(root.tag) != "VersioningConfiguration":
        raise errors.MalformedXML()
    status = next((c.text or "" for c in root if local(c.tag) == "Status"), None)
    mfa = next((c.text or "" for c in root if local(c.tag) == "MfaDelete"), None)
    if mfa is not None and mfa.strip() == "Enabled":
        raise errors.NotImplemented_("MFA delete is not supported by this gateway.")
    if status is None:
        return Response(status_code=200)  # nothing to change
    await req.gateway.buckets.set_versioning(req.principal, req.bucket, status.strip())
    return Response(status_code=200)
