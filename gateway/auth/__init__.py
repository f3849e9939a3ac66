"""Authentication: who sent a request, and is its body what they signed.

``sigv4`` verifies AWS Signature Version 4 (header and presigned), ``chunked`` decodes and
verifies aws-chunked bodies. Body digests (Content-MD5, x-amz-checksum-*) live in
``gateway.checksums``.
"""

from gateway.auth.chunked import decode_aws_chunked
from gateway.auth.sigv4 import (
    AuthContext,
    ChunkSigner,
    PayloadMode,
    RequestView,
    SecretLookup,
    authenticate,
)

__all__ = [
    "AuthContext",
    "ChunkSigner",
    "PayloadMode",
    "RequestView",
    "SecretLookup",
    "authenticate",
    "decode_aws_chunked",
]
