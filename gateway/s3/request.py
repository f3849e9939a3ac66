"""The per-request context S3 handlers receive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from gateway import errors
from gateway.auth.chunked import decode_aws_chunked
from gateway.auth.sigv4 import AuthContext, PayloadMode
from gateway.checksums import DigestingStream, checksum_request
from gateway.headers import content_length
from gateway.s3.routing import Operation
from gateway.s3.xml import MAX_XML_BODY
from gateway.types import Principal

if TYPE_CHECKING:
    from gateway.core import Gateway


@dataclass(slots=True)
class S3Request:
    request: Request
    gateway: Gateway
    operation: Operation
    principal: Principal
    auth: AuthContext | None  # None: an anonymous request
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ","
    query: dict[str, str]
    request_id: str

    @property
    def bucket(self) -> str:
        assert self.operation.bucket is not None
        return self.operation.bucket

    @property
    def key(self) -> str:
        assert self.operation.key is not None
        return self.operation.key

    async def raw_stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives on the wire, without empty chunks."""
        async for chunk in self.request.stream():
            if chunk:
                yield chunk

    def body(self, default_checksum: str | None = None) -> tuple[DigestingStream, int | None]:
        """The decoded body, verified while it streams, and its announced size.
        ``default_checksum``: the algorithm to compute when the request names none (a
        multipart upload's); a request naming another one is refused."""
        headers = self.headers
        trailers: dict[str, str] = {}
        mode = self.auth.payload_mode if self.auth is not None else PayloadMode.UNSIGNED
        chunk_signer = self.auth.chunk_signer if self.auth is not None else None
        chunked = mode.is_aws_chunked or "aws-chunked" in headers.get(
            "content-encoding", "").lower()
        source: AsyncIterator[bytes] = self.raw_stream()
        if chunked:
            source = decode_aws_chunked(source, chunk_signer=chunk_signer, trailers=trailers)
            decoded = headers.get("x-amz-decoded-content-length")
            try:
                expected = int(decoded) if decoded is not None else None
            except ValueError:
                raise errors.InvalidArgument("x-amz-decoded-content-length is not a number",
                                             name="x-amz-decoded-content-length") from None
        else:
            expected = content_length(headers)
        algorithm, expected_checksum, _trailer = checksum_request(headers)
        if algorithm is None:
            algorithm = default_checksum
        elif default_checksum is not None and algorithm != default_checksum:
            raise errors.InvalidRequest(
                f"Checksum Type mismatch occurred, expected checksum Type: "
                f"{default_checksum.lower()}, actual checksum type: {algorithm.lower()}")
        stream = DigestingStream(
            source,
            expected_size=expected,
            content_md5=headers.get("content-md5"),
            content_sha256=(self.auth.content_sha256
                            if self.auth is not None and mode is PayloadMode.SIGNED else None),
            checksum_algorithm=algorithm,
            expected_checksum=expected_checksum,
            trailers=trailers,
        )
        return stream, expected

    async def small_body(self, limit: int = MAX_XML_BODY) -> bytes:
        """A bounded control body (XML), verified like any other; larger ones are refused."""
        stream, expected = self.body()
        if expected is not None and expected > limit:
            raise errors.MaxMessageLengthExceeded(fields={"MaxMessageLengthBytes": str(limit)})
        parts: list[bytes] = []
        total = 0
        async for chunk in stream:
            total += len(chunk)
            if total > limit:
                raise errors.MaxMessageLengthExceeded(
                    fields={"MaxMessageLengthBytes": str(limit)})
            parts.append(chunk)
        return b"".join(parts)
