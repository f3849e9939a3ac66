"""Test-side aws-chunked encoder, written from the AWS documentation only.

botocore produces unsigned aws-chunked bodies (STREAMING-UNSIGNED-PAYLOAD-TRAILER) but not
signed ones, so the tests encode signed bodies here, independently of ``gateway.auth``:

- https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
- https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def derive_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Signing:
    key: bytes
    amz_date: str  # 20130524T000000Z
    scope: str  # 20130524/us-east-1/s3/aws4_request
    seed_signature: str  # the Signature of the request's Authorization header

    @classmethod
    def from_authorization(cls, authorization: str, amz_date: str, secret: str) -> Signing:
        fields = dict(part.strip().split("=", 1)
                      for part in authorization.split(" ", 1)[1].split(","))
        _access_key, date, region, service, terminal = fields["Credential"].split("/")
        return cls(derive_key(secret, date, region, service), amz_date,
                   f"{date}/{region}/{service}/{terminal}", fields["Signature"])


def chunk_signature(signing: Signing, previous: str, data: bytes) -> str:
    return _sign(signing.key, "\n".join([
        "AWS4-HMAC-SHA256-PAYLOAD", signing.amz_date, signing.scope, previous,
        EMPTY_SHA256, hashlib.sha256(data).hexdigest()]))


def trailer_signature(signing: Signing, previous: str,
                      trailers: Sequence[tuple[str, str]]) -> str:
    canonical = "".join(f"{name}:{value}\n" for name, value in trailers)
    return _sign(signing.key, "\n".join([
        "AWS4-HMAC-SHA256-TRAILER", signing.amz_date, signing.scope, previous,
        hashlib.sha256(canonical.encode()).hexdigest()]))


def encode(data: bytes, *, chunk_size: int = 64 * 1024, signing: Signing | None = None,
           trailers: Sequence[tuple[str, str]] | None = None) -> bytes:
    """An aws-chunked body: signed when ``signing`` is given, with ``trailers`` if any.

    Signed + trailers is STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, signed alone
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD, unsigned + trailers STREAMING-UNSIGNED-PAYLOAD-TRAILER.
    """
    assert chunk_size > 0
    out = bytearray()
    previous = signing.seed_signature if signing else ""
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for piece in pieces:
        out += f"{len(piece):x}".encode()
        if signing is not None:
            previous = chunk_signature(signing, previous, piece)
            out += f";chunk-signature={previous}".encode()
        out += b"\r\n"
        if piece:
            out += piece + b"\r\n"
    for name, value in trailers or ():
        out += f"{name}:{value}\r\n".encode()
    if trailers and signing is not None:
        out += f"x-amz-trailer-signature:{trailer_signature(signing, previous, trailers)}\r\n"\
            .encode()
    out += b"\r\n"
    return bytes(out)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
