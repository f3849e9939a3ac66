"""A streaming reader of ``multipart/form-data`` bodies for browser form uploads.

S3's POST Object puts the file last: every text field before it is read (small, bounded),
then the file's bytes are handed on as they arrive, never accumulated. Fields after the
file are ignored, as S3 does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from gateway import errors

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS_BYTES = 1024 * 1024
#: RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise errors.InvalidRequest(
            "Bucket POST must be of the enclosure-type multipart/form-data")
    if len(boundary) > MAX_BOUNDARY:
        raise errors.MalformedPOSTRequest()
    return boundary


class FormReader:
    def __init__(self, source: AsyncIterator[bytes], boundary: bytes) -> None:
        self._source = source
        self._fields: dict[str, str] = {}
        self._total = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._in_file = False
        self._file_done = False
        self._ended = False
        self.filename: str | None = None
        self.file_content_type: str | None = None
        self._pending: deque[bytes] = deque()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    # -- parser callbacks ------------------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        if self._file_done or self._in_file:
            return  # parts after the file are ignored
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name.lower() == "file":
            self._in_file = True
            raw = params.get(b"filename", b"").decode("utf-8", "replace")
            # Browsers send a bare name; old ones a whole path.
            self.filename = raw.replace("\\", "/").rsplit("/", 1)[-1] or None
            kind = self._headers.get(b"content-type")
            self.file_content_type = kind.decode("latin-1") if kind else None
        else:
            self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and not self._file_done:
            self._pending.append(bytes(data[start:end]))
        elif self._field_name is not None and not self._file_done:
            self._field_value += data[start:end]
            self._total += end - start
            if len(self._field_value) > MAX_FIELD_BYTES or self._total > MAX_FIELDS_BYTES:
                raise errors.InvalidRequest("A form field is too large.")

    def _part_end(self) -> None:
        if self._in_file and not self._file_done:
            self._file_done = True
        elif self._field_name is not None and not self._file_done:
            self._fields[self._field_name] = self._field_value.decode("utf-8", "replace")
            self._field_name = None

    def _end(self) -> None:
        self._ended = True

    # -- reading ---------------------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except errors.GatewayError:
            raise
        except Exception as exc:
            raise errors.MalformedPOSTRequest() from exc

    async def fields(self) -> dict[str, str]:
        """Every text field before the file; the file's name and type are known after."""
        while not self._in_file:
            if self._ended:
                raise errors.InvalidArgument("POST requires exactly one file upload per "
                                             "request.", name="file", value="0")
            chunk = await anext(self._source, None)
            if chunk is None:
                raise errors.MalformedPOSTRequest()
            self._feed(chunk)
        return dict(self._fields)

    async def file(self) -> AsyncIterator[bytes]:
        while True:
            while self._pending:
                yield self._pending.popleft()
            if self._file_done:
                break
            chunk = await anext(self._source, None)
            if chunk is None:
                raise errors.IncompleteBody()
            self._feed(chunk)
        async for _ in self._source:  # what follows the file is read and ignored
            pass
