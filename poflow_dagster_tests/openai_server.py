"""A local OpenAI chat-completions server for tests and benchmarks (real HTTP, no mocks).

``POST /v1/chat/completions`` answers in the OpenAI wire format (``id``,
``object: "chat.completion"``, ``choices[0].message.content`` as a JSON string,
``message.refusal``, ``finish_reason``, ``usage``). What it answers is scripted: a
*behaviour* callable receives the parsed request body and returns a :class:`Reply`
(content, refusal, truncation, an HTTP error such as 429 with ``Retry-After`` /
``retry-after-ms``, 500/503, malformed JSON, a delay longer than the client's timeout).
:func:`fail_first` scripts faults per request ("the first N tries of each window fail,
then it answers"). Every request is recorded with its size and server-side start/end
times, so tests can check what was sent (images, model, ``response_format``), whether
calls overlapped, and how long a client waited before retrying. Page images come back from a
request with :func:`image_payloads` (declared MIME type and bytes) or :func:`decoded_images` (opened
with Pillow, whatever the format, after checking the bytes are what the data URL declares).

Use the ``openai_server`` pytest fixture (import it into a test module), or
``start_openai_server()`` as a context manager (benchmarks).
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "API_KEY",
    "FaultScript",
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "decoded_images",
    "estimated_prompt_tokens",
    "fail_first",
    "image_payloads",
    "image_urls",
    "max_overlap",
    "openai_server",
    "request_text",
    "start_openai_server",
]

#: The key the server accepts (anything else -> HTTP 401).
API_KEY = "sk-test-poflow-0123456789"


@dataclass
class Reply:
    """One scripted answer. ``content`` may be a dict (sent as a JSON string) or raw text."""

    content: dict[str, Any] | str | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None
    delay: float = 0.0
    prompt_tokens: int = 100
    completion_tokens: int = 50

    @classmethod
    def json(cls, payload: dict[str, Any], **kwargs: Any) -> Reply:
        """A normal answer whose content is ``payload`` serialised as JSON."""
        return cls(content=payload, **kwargs)

    @classmethod
    def truncated(cls, payload: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
        """``finish_reason: "length"`` with the first half of the JSON (cut mid-way)."""
        text = json.dumps(payload or {"po_number": "PO-1", "lines": [{"sku": "A"}]})
        return cls(content=text[: len(text) // 2], finish_reason="length", **kwargs)

    @classmethod
    def refused(cls, text: str = "I'm sorry, I can't help with that.", **kwargs: Any) -> Reply:
        return cls(content=None, refusal=text, **kwargs)

    @classmethod
    def malformed(cls, text: str = '{"po_number": "PO-1", "lines": [', **kwargs: Any) -> Reply:
        return cls(content=text, **kwargs)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "0", *, retry_after_ms: str | None = None, **kwargs: Any) -> Reply:
        """HTTP 429 with ``Retry-After`` (seconds or an HTTP date) and/or ``retry-after-ms`` (None = left out)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        return cls(status=429, headers=headers, error_code="rate_limit_exceeded", **kwargs)

    @classmethod
    def slow(cls, payload: dict[str, Any], delay: float, **kwargs: Any) -> Reply:
        """A normal answer sent only after ``delay`` seconds (longer than the client's timeout -> it times out)."""
        return cls(content=payload, delay=delay, **kwargs)

    @classmethod
    def error(cls, status: int, code: str | None = None, **kwargs: Any) -> Reply:
        return cls(status=status, error_code=code, **kwargs)


Behaviour = Callable[[dict[str, Any]], Reply]


class FaultScript:
    """A behaviour whose first ``count`` requests per key fail with ``failure``, then ``then`` answers.

    ``key(body)`` groups requests (e.g. by the pages a window carries), so "each window is rate
    limited twice, then answered" is one script; the default key puts all requests in one group,
    and a key of ``None`` exempts a request (always ``then``). ``failure`` is a :class:`Reply` or a
    behaviour (to vary the fault). Thread-safe.
    """

    def __init__(
        self,
        count: int,
        failure: Reply | Behaviour,
        then: Behaviour,
        key: Callable[[dict[str, Any]], Any] = lambda body: "all",
    ) -> None:
        self.count = count
        self.failure = failure
        self.then = then
        self.key = key
        self.seen: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        group = self.key(body)
        if group is None:
            return self.then(body)
        with self._lock:
            tries = self.seen[group] = self.seen.get(group, 0) + 1
        if tries > self.count:
            return self.then(body)
        return self.failure(body) if callable(self.failure) else self.failure


def fail_first(
    count: int, failure: Reply | Behaviour, then: Behaviour, key: Callable[[dict[str, Any]], Any] = lambda body: "all"
) -> FaultScript:
    """``count`` failures (per ``key`` group), then ``then``: see :class:`FaultScript`."""
    return FaultScript(count, failure, then, key)


@dataclass
class RecordedRequest:
    """A request the server received (body parsed from JSON) and when it was served."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started: float
    finished: float = 0.0
    status: int = 0
    size: int = 0  # bytes of the request body


class OpenAIServer:
    """Handle on a running server: its ``base_url``, the ``behaviour`` and the ``requests``."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        self._lock = threading.Lock()
        self.behaviour: Behaviour = lambda body: Reply.json({})
        self.requests: list[RecordedRequest] = []

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def completion_requests(self) -> list[RecordedRequest]:
        """Requests to ``/v1/chat/completions`` in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]


def completion_body(reply: Reply, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object for a 200 reply."""
    content = json.dumps(reply.content) if isinstance(reply.content, dict) else reply.content
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": reply.refusal},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def error_body(status: int, code: str | None, message: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    text = message or f"scripted HTTP {status}"
    return {"error": {"message": text, "type": "scripted_error", "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        record = RecordedRequest(self.path, dict(self.headers.items()), body, started, size=len(raw))
        self.server.handle.record(record)
        status, headers, payload = self._answer(body)
        record.finished, record.status = time.monotonic(), status
        try:
            self._send(status, headers, payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (its timeout): nothing to answer

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Status, extra headers and JSON payload for one request."""
        if not self.path.rstrip("/").endswith("/v1/chat/completions"):
            return 404, {}, error_body(404, "not_found", f"no route {self.path}")
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return 401, {}, error_body(401, "invalid_api_key", "Incorrect API key provided")
        reply = self.server.handle.behaviour(body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            return reply.status, reply.headers, error_body(reply.status, reply.error_code)
        return 200, reply.headers, completion_body(reply, str(body.get("model", "")))

    def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    handle: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up are expected here; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def start_openai_server(behaviour: Behaviour | None = None) -> Iterator[OpenAIServer]:
    """Run the server on a free localhost port in a background thread."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.handle = OpenAIServer(httpd)
    if behaviour is not None:
        httpd.handle.behaviour = behaviour
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.handle
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh local chat-completions server (set ``.behaviour`` in the test)."""
    with start_openai_server() as server:
        yield server


# --- helpers for inspecting recorded requests --------------------------------------------


def _user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            parts.extend(part for part in content if isinstance(part, dict))
    return parts


def request_text(body: dict[str, Any]) -> str:
    """All text the user message carries (joined by newlines)."""
    return "\n".join(part.get("text", "") for part in _user_parts(body) if part.get("type") == "text")


def image_urls(body: dict[str, Any]) -> list[str]:
    """The ``image_url.url`` of every image part in the user message."""
    return [
        part["image_url"]["url"]
        for part in _user_parts(body)
        if part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)
    ]


def image_payloads(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    """``(MIME type, bytes)`` of every ``data:<type>;base64,<data>`` image URL in the user message."""
    payloads = []
    for url in image_urls(body):
        header, _, data = url.partition(",")
        if not (header.startswith("data:") and header.endswith(";base64")):
            raise AssertionError(f"not a base64 data URL: {url[:40]!r}")
        payloads.append((header[len("data:"):-len(";base64")], base64.b64decode(data, validate=True)))
    return payloads


def decoded_images(body: dict[str, Any]) -> list[Any]:
    """Every image of the request opened with Pillow (loaded), after checking its bytes are of the declared type."""
    from PIL import Image

    images = []
    for mime_type, data in image_payloads(body):
        image = Image.open(io.BytesIO(data))
        image.load()
        if Image.MIME.get(image.format or "") != mime_type:
            raise AssertionError(f"the data URL says {mime_type}, the bytes are {image.format}")
        images.append(image)
    return images


#: Prompt tokens a high-detail page image costs (OpenAI's 512-px tiles for a letter page at 150 dpi: ~765).
TOKENS_PER_IMAGE = 765


def estimated_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens a real model would bill for a request, roughly: every message's text / 4, plus
    :data:`TOKENS_PER_IMAGE` per image (for usage proportional to what was sent)."""
    system = sum(len(m["content"]) for m in body.get("messages", []) if isinstance(m.get("content"), str))
    return (system + len(request_text(body))) // 4 + TOKENS_PER_IMAGE * len(image_urls(body))


def max_overlap(requests: list[RecordedRequest]) -> int:
    """Largest number of requests being served at the same moment."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
