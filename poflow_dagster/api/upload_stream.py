"""Receive a multipart upload by streaming it to a temporary file under ``POFLOW_HOME`` (never into memory),
stopping with a 413 as soon as the raw body passes the size limit (plus room for the framing), whatever part
the bytes are in and whether or not the request stated its length."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from poflow_dagster.api.errors import ApiError

#: Room for the multipart framing (boundaries, part headers, small extra fields) on top of the file's limit.
_FRAMING_ALLOWANCE = 64 * 1024
#: At most this many parts in one body (the file and a few form fields); more is a 400 ``too_many_parts``.
MAX_PARTS = 5


@dataclass(frozen=True)
class ReceivedFile:
    """The uploaded file, on disk (the caller deletes it) with the name the client gave it."""

    path: Path
    filename: str
    size: int


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"the upload is over the {limit} byte limit (POFLOW_MAX_UPLOAD_MB)")


class _FilePart:
    """Collects the field ``file`` of a multipart body into ``handle``; other fields are ignored."""

    def __init__(self, handle, limit: int) -> None:
        self.handle, self.limit = handle, limit
        self.size = 0
        self.filename: str | None = None
        self.found = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self.parts = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _part_begin(self) -> None:
        self._headers, self._in_file = {}, False
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, "too_many_parts", f"a multipart body may have at most {MAX_PARTS} parts")

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and not self.found:
            self._in_file, self.found = True, True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.size += end - start
        if self.size > self.limit:
            raise _too_large(self.limit)
        self.handle.write(data[start:end])

    def _part_end(self) -> None:
        self._in_file = False


async def receive_upload(request: Request, home: Path, limit: int) -> ReceivedFile:
    """Stream the request's multipart field ``file`` to ``home/uploads/.api-incoming/``.

    A stated ``Content-Length`` over the limit is refused before reading; otherwise the raw body's bytes are
    counted as they arrive (chunked bodies and every part included) and reading stops once they pass the limit
    plus a framing allowance. Errors: ``file_too_large`` (413), ``too_many_parts`` (400),
    ``invalid_upload`` (400). No temporary file is left behind on an error.
    """
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send the file as multipart/form-data in the field 'file'")
    stated = request.headers.get("content-length")
    body_limit = limit + _FRAMING_ALLOWANCE
    if stated and stated.isdigit() and int(stated) > body_limit:
        raise _too_large(limit)
    folder = home / "uploads" / ".api-incoming"
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="api-", delete=False)
    part = _FilePart(handle, limit)
    try:
        with handle:
            parser = MultipartParser(boundary, part.callbacks())
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_limit:
                    raise _too_large(limit)
                parser.write(chunk)
            parser.finalize()
    except ApiError:
        os.unlink(handle.name)
        raise
    except Exception as error:  # a malformed body
        os.unlink(handle.name)
        raise ApiError(400, "invalid_upload", f"the multipart body could not be read: {error}") from None
    if not part.found:
        os.unlink(handle.name)
        raise ApiError(400, "invalid_upload", "no multipart field 'file' in the request")
    return ReceivedFile(path=Path(handle.name), filename=part.filename or "upload", size=part.size)
