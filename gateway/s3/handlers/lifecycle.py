"""Put/Get/DeleteBucketLifecycleConfiguration (``?lifecycle``).

The XML is read into S3's API shape (``Rules``, ``Filter.And.Tags``, …; repeated elements
become lists) with its texts as given, refusing elements the schema does not have; the
service checks the values (``gateway.service.lifecycle_rules``) and stores the rules, which
are rendered back from their stored form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element

from starlette.responses import Response

from gateway import errors
from gateway.checksums import checksum_request
from gateway.s3.handlers.common import xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import el, local, parse

#: Per element: its children, as name -> (key in the API shape, the child's own element
#: type or None for a text, whether it repeats).
_Child = tuple[str, str | None, bool]
_SCHEMA: dict[str, dict[str, _Child]] = {
    "LifecycleConfiguration": {"Rule": ("Rules", "Rule", True)},
    "Rule": {
        "ID": ("ID", None, False),
        "Prefix": ("Prefix", None, False),
        "Status": ("Status", None, False),
        "Filter": ("Filter", "Filter", False),
        "Expiration": ("Expiration", "Expiration", False),
        "Transition": ("Transitions", "Transition", True),
        "NoncurrentVersionTransition": ("NoncurrentVersionTransitions",
                                        "NoncurrentVersionTransition", True),
        "NoncurrentVersionExpiration": ("NoncurrentVersionExpiration",
                                        "NoncurrentVersionExpiration", False),
        "AbortIncompleteMultipartUpload": ("AbortIncompleteMultipartUpload",
                                           "AbortIncompleteMultipartUpload", False),
    },
    "Filter": {
        "Prefix": ("Prefix", None, False),
        "Tag": ("Tag", "Tag", False),
        "ObjectSizeGreaterThan": ("ObjectSizeGreaterThan", None, False),
        "ObjectSizeLessThan": ("ObjectSizeLessThan", None, False),
        "And": ("And", "And", False),
    },
    "And": {
        "Prefix": ("Prefix", None, False),
        "Tag": ("Tags", "Tag", True),
        "ObjectSizeGreaterThan": ("ObjectSizeGreaterThan", None, False),
        "ObjectSizeLessThan": ("ObjectSizeLessThan", None, False),
    },
    "Tag": {"Key": ("Key", None, False), "Value": ("Value", None, False)},
    "Expiration": {"Days": ("Days", None, False), "Date": ("Date", None, False),
                   "ExpiredObjectDeleteMarker": ("ExpiredObjectDeleteMarker", None, False)},
    "Transition": {"Days": ("Days", None, False), "Date": ("Date", None, False),
                   "StorageClass": ("StorageClass", None, False)},
    "NoncurrentVersionTransition": {
        "NoncurrentDays": ("NoncurrentDays", None, False),
        "NewerNoncurrentVersions": ("NewerNoncurrentVersions", None, False),
        "StorageClass": ("StorageClass", None, False)},
    "NoncurrentVersionExpiration": {
        "NoncurrentDays": ("NoncurrentDays", None, False),
        "NewerNoncurrentVersions": ("NewerNoncurrentVersions", None, False)},
    "AbortIncompleteMultipartUpload": {
        "DaysAfterInitiation": ("DaysAfterInitiation", None, False)},
}


def _read(node: Element, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    schema = _SCHEMA[kind]
    for child in node:
        entry = schema.get(local(child.tag))
        if entry is None:
            raise errors.MalformedXML()
        name, child_kind, repeated = entry
        if child_kind is None:
            if len(child):  # a text element holding elements
                raise errors.MalformedXML()
            value: Any = child.text or ""
        else:
            value = _read(child, child_kind)
        if repeated:
            out.setdefault(name, []).append(value)
        elif name in out:
            raise errors.MalformedXML()
        else:
            out[name] = value
    return out


def parse_configuration(body: bytes) -> list[dict[str, Any]]:
    """The rules of a ``LifecycleConfiguration`` document, texts unchecked."""
    root = parse(body)
    if local(root.tag) != "LifecycleConfiguration":
        raise errors.MalformedXML()
    rules: list[dict[str, Any]] = _read(root, "LifecycleConfiguration").get("Rules", [])
    return rules


def _tag_xml(tag: Mapping[str, str]) -> str:
    return f"<Tag>{el('Key', tag['Key'])}{el('Value', tag['Value'])}</Tag>"


def _filter_xml(flt: Mapping[str, Any]) -> str:
    inner = ""
    if "And" in flt:
        both = flt["And"]
        inner = ("<And>" + el("Prefix", both.get("Prefix"))
                 + "".join(_tag_xml(t) for t in both.get("Tags", []))
                 + el("ObjectSizeGreaterThan", both.get("ObjectSizeGreaterThan"))
                 + el("ObjectSizeLessThan", both.get("ObjectSizeLessThan")) + "</And>")
    elif "Tag" in flt:
        inner = _tag_xml(flt["Tag"])
    else:
        inner = (el("Prefix", flt.get("Prefix"))
                 + el("ObjectSizeGreaterThan", flt.get("ObjectSizeGreaterThan"))
                 + el("ObjectSizeLessThan", flt.get("ObjectSizeLessThan")))
    return f"<Filter>{inner}</Filter>"


def _action_xml(name: str, values: Mapping[str, Any] | None, fields: tuple[str, ...]) -> str:
    if values is None:
        return ""
    return f"<{name}>" + "".join(el(f, values.get(f)) for f in fields) + f"</{name}>"


def rule_xml(rule: Mapping[str, Any]) -> str:
    """One stored rule as S3 renders it (a legacy top-level Prefix stays one)."""
    parts = [el("ID", rule["ID"])]
    if "Filter" in rule:
        parts.append(_filter_xml(rule["Filter"]))
    else:
        parts.append(el("Prefix", rule.get("Prefix", "")))
    parts.append(el("Status", rule["Status"]))
    parts.append(_action_xml("Expiration", rule.get("Expiration"),
                             ("Days", "Date", "ExpiredObjectDeleteMarker")))
    parts.append(_action_xml("NoncurrentVersionExpiration",
                             rule.get("NoncurrentVersionExpiration"),
                             ("NoncurrentDays", "NewerNoncurrentVersions")))
    parts.append(_action_xml("AbortIncompleteMultipartUpload",
                             rule.get("AbortIncompleteMultipartUpload"),
                             ("DaysAfterInitiation",)))
    return "<Rule>" + "".join(parts) + "</Rule>"


async def put_bucket_lifecycle(req: S3Request) -> Response:
    # S3 requires an integrity check on this body: Content-MD5 or an x-amz-checksum-*.
    if req.headers.get("content-md5") is None and checksum_request(req.headers)[0] is None:
        raise errors.InvalidRequest("Missing required header for this request: Content-MD5")
    rules = parse_configuration(await req.small_body())  # the digest is checked on the way
    await req.gateway.lifecycle.put(req.principal, req.bucket, rules)
    return Response(status_code=200)


async def get_bucket_lifecycle(req: S3Request) -> Response:
    rules = await req.gateway.lifecycle.get(req.principal, req.bucket)
    return xml_response("LifecycleConfiguration", [rule_xml(rule) for rule in rules])


async def delete_bucket_lifecycle(req: S3Request) -> Response:
    await req.gateway.lifecycle.delete(req.principal, req.bucket)
    return Response(status_code=204)
