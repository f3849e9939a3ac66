"""Authentication: who sent a request, and is its body what they signed.

``sigv4`` verifies AWS Signature Version 4 (header and presigned), ``sigv2`` SigV2 presigned
(query-string) URLs, ``postpolicy`` browser form uploads (POST Object, SigV4 and SigV2),
``chunked`` decodes and verifies aws-chunked bodies. Body digests (Content-MD5,
x-amz-checksum-*) live in ``gateway.checksums``.

:func:`authenticate_request` is the one entry point for S3 requests.
"""

from __future__ import annotations

from datetime import datetime

from gateway.auth.chunked import decode_aws_chunked
from gateway.auth.postpolicy import VerifiedPost, check_content_length, verify_post_form
from gateway.auth.sigv2 import authenticate_v2_query, query_signed_headers
from gateway.auth.sigv4 import (
    AuthContext,
    ChunkSigner,
    PayloadMode,
    RequestView,
    SecretLookup,
    authenticate,
    has_v2_query,
    has_v4_query,
    parse_query,
)


async def authenticate_request(request: RequestView, lookup_secret: SecretLookup, *,
                               now: datetime | None = None,
                               virtual_host_bucket: str | None = None,
                               max_skew_seconds: int = 900) -> AuthContext | None:
    """Verify an S3 request, whichever signature it carries.

    SigV2 query-string requests (``AWSAccessKeyId``/``Signature``/``Expires``) go to
    :mod:`~gateway.auth.sigv2`; everything else (SigV4 header or presigned, anonymous, and
    the refused SigV2 ``Authorization: AWS`` header) to :func:`~gateway.auth.sigv4.authenticate`,
    which also rejects mixed mechanisms with InvalidArgument. ``virtual_host_bucket`` is the
    bucket named by the Host header of a virtual-host-style request (SigV2 signs
    ``/bucket/key`` whatever the addressing style). Returns None for an anonymous request.
    """
    if request.query:
        params = parse_query(request.query)
        if (has_v2_query(params) and not has_v4_query(params)
                and not any(name.lower() == "authorization" for name, _ in request.headers)):
            return await authenticate_v2_query(request, lookup_secret, now=now,
                                               virtual_host_bucket=virtual_host_bucket)
    return await authenticate(request, lookup_secret, now=now,
                              max_skew_seconds=max_skew_seconds)


__all__ = [
    "AuthContext",
    "ChunkSigner",
    "PayloadMode",
    "RequestView",
    "SecretLookup",
    "VerifiedPost",
    "authenticate",
    "authenticate_request",
    "authenticate_v2_query",
    "check_content_length",
    "decode_aws_chunked",
    "query_signed_headers",
    "verify_post_form",
]
