"""``poflow upload`` through a running ``poflow serve`` (``POFLOW_API_URL`` + ``POFLOW_API_TOKEN``).

Standard library only: the command then imports neither SQLAlchemy nor the app, needs no database credentials on
the uploader's machine, and returns in about a tenth of a second (the server stores, registers and submits the run;
its ``run`` answer is the same as ``POST /api/uploads``'s). The file is streamed, never read into memory.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.regular_file import open_regular

_CHUNK = 1024 * 1024
#: Seconds to wait for the server's answer (it stores the file and submits the run before answering).
TIMEOUT_SECONDS = 120.0


def api_upload_settings() -> tuple[str, str] | None:
    """``(base URL, token)`` when ``POFLOW_API_URL`` is set, else ``None`` (uploads go to the local database)."""
    url = (os.environ.get("POFLOW_API_URL") or "").strip().rstrip("/")
    if not url:
        return None
    token = (os.environ.get("POFLOW_API_TOKEN") or "").strip()
    if not token:
        raise PoflowError("no_api_token", "POFLOW_API_URL is set but POFLOW_API_TOKEN is not "
                                          "(issue one with `poflow merchant token ID` where the database is)")
    return url, token


def upload_through_api(base_url: str, token: str, path: Path, merchant_id: str) -> dict:
    """POST ``path`` as multipart field ``file`` to ``{base_url}/api/uploads?merchant=…`` and return the JSON answer
    (``upload_id``, ``duplicate_of``, ``status``, ``run``…). The server refuses (403 ``merchant_mismatch``) a token
    of another merchant. Errors become :class:`PoflowError` with the server's code, or ``api_unreachable``."""
    target = urllib.parse.urlsplit(base_url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise PoflowError("invalid_api_url", f"POFLOW_API_URL must be an http(s) URL, not {base_url!r}")
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        boundary = f"poflow-{secrets.token_hex(12)}"
        head, tail = _multipart_frame(boundary, path.name)
        connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(target.hostname, target.port, timeout=TIMEOUT_SECONDS)
        request_path = f"{target.path.rstrip('/')}/api/uploads?{urllib.parse.urlencode({'merchant': merchant_id})}"
        try:
            connection.putrequest("POST", request_path)
            connection.putheader("Authorization", f"Bearer {token}")
            connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            connection.putheader("Content-Length", str(len(head) + size + len(tail)))
            connection.putheader("Accept", "application/json")
            connection.endheaders()
            try:
                for chunk in _body(head, handle, tail):
                    connection.send(chunk)
            except OSError:  # the server may answer early (401, 403, 413) and close: read that answer if it came
                pass
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise PoflowError("api_unreachable", f"{base_url} did not take the upload: {_reason(error)}") from None
        finally:
            connection.close()
    return _answer(response.status, body)


def _multipart_frame(boundary: str, filename: str) -> tuple[bytes, bytes]:
    quoted = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{quoted}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8")
    return head, f"\r\n--{boundary}--\r\n".encode("ascii")


def _body(head: bytes, handle, tail: bytes) -> Iterator[bytes]:
    yield head
    while chunk := handle.read(_CHUNK):
        yield chunk
    yield tail


def _answer(status: int, body: bytes) -> dict:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        payload = None
    if status == 201 and isinstance(payload, dict) and payload.get("upload_id"):
        return payload
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("code"):
        raise PoflowError(str(error["code"]), str(error.get("message") or f"HTTP {status}"))
    raise PoflowError("api_error", f"the API answered HTTP {status} without a usable body")


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    return " ".join(str(error).split()) or type(error).__name__
