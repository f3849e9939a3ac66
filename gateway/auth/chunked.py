"""Streaming decoder for ``Content-Encoding: aws-chunked`` request bodies.

Wire format (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html)::

    <hex-size>[;chunk-signature=<64 hex>]\\r\\n<data>\\r\\n      (repeated)
    0[;chunk-signature=<64 hex>]\\r\\n
    [<trailer-name>:<value>\\r\\n ...]                       (trailer modes)
    [x-amz-trailer-signature:<64 hex>\\r\\n]                  (signed trailer mode)
    \\r\\n

Decoded data is yielded as it arrives: the decoder never holds more than a framing line,
so memory stays bounded whatever the chunk size. A chunk's signature is checked when its
last byte has arrived, so a failure always surfaces before the iterator finishes and a
storage backend consuming the stream aborts without keeping anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator

from gateway.auth.sigv4 import ChunkSigner
from gateway.errors import GatewayError, IncompleteBody, InvalidRequest, SignatureDoesNotMatch

TRAILER_SIGNATURE = "x-amz-trailer-signature"
MAX_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIGNATURE = re.compile(rb"[0-9a-fA-F]{64}")
_TRAILER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")

_SIZE_LINE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


def _malformed(detail: str) -> GatewayError:
    return InvalidRequest(f"Malformed aws-chunked encoding: {detail}")


class _Decoder:
    def __init__(self, signer: ChunkSigner | None, trailers: dict[str, str],
                 max_chunk_size: int) -> None:
        self._signer = signer
        self._trailers = trailers
        self._max_chunk_size = max_chunk_size
        self._state = _SIZE_LINE
        self._line = bytearray()
        self._remaining = 0
        self._signature = ""
        self._hash = hashlib.sha256() if signer is not None else None
        self._trailer_bytes = 0
        self._trailer_lines: list[tuple[str, str]] = []
        self._trailer_signature: str | None = None
        self._blank_seen = False

    # Feeding ---------------------------------------------------------------------------
    def feed(self, piece: bytes) -> Iterator[bytes]:
        pos, end = 0, len(piece)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                out = piece if take == end and pos == 0 else piece[pos:pos + take]
                if self._hash is not None:
                    self._hash.update(out)
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._end_of_chunk_data()
                    self._state = _DATA_CR
                yield out
            elif state in (_DATA_CR, _DATA_LF):
                expected = 13 if state == _DATA_CR else 10
                if piece[pos] != expected:
                    raise _malformed("chunk data is not followed by CRLF (chunk size does "
                                     "not match the data sent)")
                pos += 1
                self._state = _DATA_LF if state == _DATA_CR else _SIZE_LINE
            elif state == _DONE:
                raise _malformed("data after the end of the aws-chunked body")
            else:
                newline = piece.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += piece[pos:stop]
                pos = stop
                if newline < 0:
                    if len(self._line) > MAX_LINE:
                        raise _malformed("chunk header or trailer line too long")
                    continue
                line = bytes(self._line)
                self._line.clear()
                if len(line) > MAX_LINE:
                    raise _malformed("chunk header or trailer line too long")
                if not line.endswith(b"\r\n"):
                    raise _malformed("line not terminated by CRLF")
                if state == _SIZE_LINE:
                    self._size_line(line[:-2])
                else:
                    self._trailer_line(line[:-2])

    def finish(self) -> None:
        if self._state == _DONE:
            return
        if self._state == _TRAILER and not self._line:
            # Tolerate a body that stops right after the final chunk or a complete trailer
            # line without the closing empty line.
            self._end_of_trailers()
            return
        raise IncompleteBody("The aws-chunked body ended before its final 0-size chunk "
                             "and trailer.")

    # Framing ---------------------------------------------------------------------------
    def _size_line(self, line: bytes) -> None:
        size_text, _, extensions = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_text):
            raise _malformed(f"invalid chunk size {size_text[:32]!r}")
        size = int(size_text, 16)
        if size > self._max_chunk_size:
            raise _malformed(f"chunk size {size} exceeds the maximum {self._max_chunk_size}")
        if self._signer is not None:
            name, _, value = extensions.partition(b"=")
            if name.strip() != b"chunk-signature" or not _SIGNATURE.fullmatch(value.strip()):
                raise SignatureDoesNotMatch("A chunk of a signed aws-chunked body is missing "
                                            "its chunk-signature.")
            self._signature = value.strip().decode()
        self._remaining = size
        if size == 0:
            self._end_of_chunk_data()
            self._state = _TRAILER
        else:
            self._state = _DATA

    def _end_of_chunk_data(self) -> None:
        if self._signer is not None and self._hash is not None:
            self._signer.verify_chunk(self._hash.digest(), self._signature)
            self._hash = hashlib.sha256()

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            if not self._blank_seen and not self._trailer_lines and self._trailer_signature is None:
                # Either the end of the body, or the (empty) data CRLF some clients send
                # after the final chunk before the trailers: decided by what follows.
                self._blank_seen = True
                return
            self._end_of_trailers()
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _malformed("trailer section too large")
        name_bytes, sep, value_bytes = line.partition(b":")
        name = name_bytes.decode("latin-1").strip().lower()
        if not sep or not _TRAILER_NAME.fullmatch(name):
            raise _malformed(f"invalid trailer line {line[:64]!r}")
        value = value_bytes.decode("latin-1").strip()
        if name == TRAILER_SIGNATURE:
            if self._trailer_signature is not None:
                raise _malformed("repeated x-amz-trailer-signature")
            self._trailer_signature = value
        else:
            if self._trailer_signature is not None:
                raise _malformed("trailer after x-amz-trailer-signature")
            self._trailer_lines.append((name, value))

    def _end_of_trailers(self) -> None:
        signer = self._signer
        if signer is not None:
            if self._trailer_lines and not signer.expects_trailer:
                raise _malformed("trailing headers sent without a -TRAILER x-amz-content-sha256")
            if signer.expects_trailer and (self._trailer_lines
                                           or self._trailer_signature is not None):
                if self._trailer_signature is None:
                    raise SignatureDoesNotMatch("The trailing headers of a signed aws-chunked "
                                                "body are missing x-amz-trailer-signature.")
                if not _SIGNATURE.fullmatch(self._trailer_signature.encode("latin-1")):
                    raise SignatureDoesNotMatch("The x-amz-trailer-signature of a signed "
                                                "aws-chunked body is not 64 hex digits.")
                canonical = "".join(f"{n}:{v}\n" for n, v in self._trailer_lines)
                signer.verify_trailer(canonical.encode("latin-1"), self._trailer_signature)
        for name, value in self._trailer_lines:
            self._trailers[name] = value
        self._state = _DONE


async def decode_aws_chunked(source: AsyncIterable[bytes], *, chunk_signer: ChunkSigner | None,
                             trailers: dict[str, str],
                             max_chunk_size: int = 16 * 1024 * 1024) -> AsyncIterator[bytes]:
    """Decode an aws-chunked body, verifying chunk (and trailer) signatures on the way.

    ``trailers`` is filled (lower-cased names) before the iterator finishes. Truncation
    raises IncompleteBody, malformed framing InvalidRequest, a bad signature
    SignatureDoesNotMatch.
    """
    decoder = _Decoder(chunk_signer, trailers, max_chunk_size)
    async for piece in source:
        if piece:
            for out in decoder.feed(piece):
                yield out
    decoder.finish()
