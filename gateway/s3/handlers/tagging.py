"""Put/Get/DeleteObjectTagging, Put/Get/DeleteBucketTagging, and the Tagging XML document
(also what a POST form's ``tagging`` field holds)."""

from __future__ import annotations

from starlette.responses import Response

from gateway import errors
from gateway.s3.handlers.common import xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import el, local, parse
from gateway.service.tagging import TaggedObject, Tags


def parse_tag_pairs(body: bytes) -> list[tuple[str, str]]:
    """``<Tagging><TagSet><Tag><Key/><Value/></Tag>…</TagSet></Tagging>`` as (key, value)
    pairs in order, unvalidated (the service checks them as S3 does). Any other shape is
    ``MalformedXML``."""
    root = parse(body)
    if local(root.tag) != "Tagging" or len(root) != 1 or local(root[0].tag) != "TagSet":
        raise errors.MalformedXML()
    pairs: list[tuple[str, str]] = []
    for tag in root[0]:
        if local(tag.tag) != "Tag":
            raise errors.MalformedXML()
        fields: dict[str, str] = {}
        for child in tag:
            name = local(child.tag)
            if name not in ("Key", "Value") or name in fields or len(child):
                raise errors.MalformedXML()
            fields[name] = child.text or ""
        if len(fields) != 2:
            raise errors.MalformedXML()
        pairs.append((fields["Key"], fields["Value"]))
    return pairs


def tag_set_xml(tags: Tags) -> list[str]:
    return ["<TagSet>" + "".join(f"<Tag>{el('Key', k)}{el('Value', v)}</Tag>"
                                 for k, v in tags.items()) + "</TagSet>"]


def _version_headers(tagged: TaggedObject) -> dict[str, str]:
    return {"x-amz-version-id": tagged.version_id} if tagged.version_id is not None else {}


# -- objects -------------------------------------------------------------------------------

async def put_object_tagging(req: S3Request) -> Response:
    pairs = parse_tag_pairs(await req.small_body())
    tagged = await req.gateway.tagging.put_object_tags(
        req.principal, req.bucket, req.key, req.query.get("versionId"), pairs)
    return Response(status_code=200, headers=_version_headers(tagged))


async def get_object_tagging(req: S3Request) -> Response:
    tagged = await req.gateway.tagging.get_object_tags(req.principal, req.bucket, req.key,
                                                      req.query.get("versionId"))
    return xml_response("Tagging", tag_set_xml(tagged.tags), headers=_version_headers(tagged))


async def delete_object_tagging(req: S3Request) -> Response:
    tagged = await req.gateway.tagging.delete_object_tags(req.principal, req.bucket, req.key,
                                                         req.query.get("versionId"))
    return Response(status_code=204, headers=_version_headers(tagged))


# -- buckets -------------------------------------------------------------------------------

async def put_bucket_tagging(req: S3Request) -> Response:
    pairs = parse_tag_pairs(await req.small_body())
    await req.gateway.tagging.put_bucket_tags(req.principal, req.bucket, pairs)
    return Response(status_code=204)


async def get_bucket_tagging(req: S3Request) -> Response:
    tags = await req.gateway.tagging.get_bucket_tags(req.principal, req.bucket)
    return xml_response("Tagging", tag_set_xml(tags))


async def delete_bucket_tagging(req: S3Request) -> Response:
    await req.gateway.tagging.delete_bucket_tags(req.principal, req.bucket)
    return Response(status_code=204)
