"""Put/Get/DeleteBucketEncryption: a bucket's default server-side encryption.

The document is S3's ``ServerSideEncryptionConfiguration`` with its one ``Rule``::

    <ServerSideEncryptionConfiguration>
      <Rule>
        <ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>
        </ApplyServerSideEncryptionByDefault>
        <BucketKeyEnabled>false</BucketKeyEnabled>
      </Rule>
    </ServerSideEncryptionConfiguration>

``AES256`` (SSE-S3) is the one algorithm; ``aws:kms`` is NotImplemented (no KMS), as for
PutObject (see ``gateway.service.sse.BucketEncryption``).
"""

from __future__ import annotations

from starlette.responses import Response

from gateway import errors
from gateway.s3.handlers.common import xml_response
from gateway.s3.request import S3Request
from gateway.s3.xml import children, el, local, parse
from gateway.service.sse import BucketEncryption


def _text(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def parse_configuration(body: bytes) -> BucketEncryption:
    """The rule of a ``ServerSideEncryptionConfiguration``; any other shape, a missing
    algorithm or more than one rule is MalformedXML, as S3 answers."""
    root = parse(body)
    if local(root.tag) != "ServerSideEncryptionConfiguration":
        raise errors.MalformedXML()
    rules = children(root, "Rule")
    if len(rules) != 1 or len(root) != 1:
        raise errors.MalformedXML()
    rule = rules[0]
    defaults = children(rule, "ApplyServerSideEncryptionByDefault")
    keys = children(rule, "BucketKeyEnabled")
    if len(defaults) != 1 or len(keys) > 1 or len(rule) != len(defaults) + len(keys):
        raise errors.MalformedXML()
    algorithm = kms_key = None
    for child in defaults[0]:
        name = local(child.tag)
        if name == "SSEAlgorithm" and algorithm is None:
            algorithm = _text(child.text) or ""
        elif name == "KMSMasterKeyID" and kms_key is None:
            kms_key = _text(child.text) or ""
        else:
            raise errors.MalformedXML()
    if not algorithm:
        raise errors.MalformedXML()
    bucket_key = (_text(keys[0].text) or "").lower() if keys else "false"
    if bucket_key not in ("true", "false"):
        raise errors.MalformedXML()
    return BucketEncryption.validated(algorithm, kms_key_id=kms_key,
                                      bucket_key_enabled=bucket_key == "true")


def configuration_xml(config: BucketEncryption) -> list[str]:
    return ["<Rule><ApplyServerSideEncryptionByDefault>" + el("SSEAlgorithm", config.algorithm)
            + "</ApplyServerSideEncryptionByDefault>"
            + el("BucketKeyEnabled", config.bucket_key_enabled) + "</Rule>"]


async def put_bucket_encryption(req: S3Request) -> Response:
    config = parse_configuration(await req.small_body())
    await req.gateway.buckets.set_encryption(req.principal, req.bucket, config)
    return Response(status_code=200)


async def get_bucket_encryption(req: S3Request) -> Response:
    config = await req.gateway.buckets.get_encryption(req.principal, req.bucket)
    return xml_response("ServerSideEncryptionConfiguration", configuration_xml(config))


async def delete_bucket_encryption(req: S3Request) -> Response:
    await req.gateway.buckets.set_encryption(req.principal, req.bucket, None)
    return Response(status_code=204)
