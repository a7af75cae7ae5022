"""The FastAPI app of ``poflow serve``: ``create_app()``."""

from __future__ import annotations

import datetime as dt
import logging
import re
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from poflow_dagster.api.auth import current_merchant, stream_merchant
from poflow_dagster.api.errors import ApiError, install_error_handlers
from poflow_dagster.api.events import TableEventHub, event_stream
from poflow_dagster.api.page import PAGE_HTML
from poflow_dagster.api.review_routes import install_review_routes
from poflow_dagster.api.queries import LIST_STATUSES, list_uploads, merchant_stats, merchant_upload_status
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.api.upload_stream import receive_upload
from poflow_dagster.store.db import get_database
from poflow_dagster.run_submit import submit_upload_run

log = logging.getLogger(__name__)

Merchant = Annotated[str, Depends(current_merchant)]
#: The event stream's merchant: the bearer header or ``?token=`` (``EventSource`` cannot set headers).
StreamMerchant = Annotated[str, Depends(stream_merchant)]

#: Sent with every response: no framing (clickjacking), no ``Referer`` (a URL never leaks), no MIME sniffing.
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)

#: Worker threads the event streams may use at once for their short database calls (position, token re-check),
#: apart from the request handlers' pool so that a reconnect storm never starves uploads and status reads.
STREAM_THREADS = 32


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API on ``settings`` (default: the environment). The database is migrated on start; the
    progress bus is opened on first use and closed on shutdown."""
    settings = settings or ApiSettings.from_env()
    db = get_database(settings.database_url)
    buses: list = []

    def bus():
        if not buses:
            from poflow_dagster.store.progress_bus import ProgressBus

            buses.append(ProgressBus(settings.redis_url, db=db, namespace=settings.namespace))
        return buses[0]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await app.state.table_events.aclose()
        for opened in buses:
            opened.close()

    app = FastAPI(
        title="poflow API",
        version="1",
        description="Upload purchase orders, follow their progress live (server-sent events), read their status; "
        "review catalog matches and approve held POs, receive stock, preview a PO's Shopify sync (dry run). "
        "Every request carries a merchant's API token: `Authorization: Bearer <token>` "
        "(issue one with `poflow merchant token ID`).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.bus = bus
    app.state.stream_limiter = anyio.CapacityLimiter(STREAM_THREADS)
    #: Without Redis: one table poller per merchant, shared by its event streams.
    app.state.table_events = TableEventHub(bus, app.state.stream_limiter)
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    _redact_tokens_in_access_log()
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Last-Event-ID", "Content-Type", "Idempotency-Key"],
        )
    _routes(app, settings, db, bus)
    install_review_routes(app, settings, db)
    return app


#: The request body as /docs shows it (the handler streams it itself, so FastAPI cannot infer it).
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "the purchase order"}},
}}}}}


def _routes(app: FastAPI, settings: ApiSettings, db, bus) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        """The web page: uploads with live progress bars."""
        return HTMLResponse(PAGE_HTML, headers={"Cache-Control": "no-store"})

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        """Liveness and the database: ``{"status": "ok"}``."""
        from sqlalchemy import text

        with db.session() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "progress_bus": "redis" if settings.redis_url else "database"}

    @app.post("/api/uploads", status_code=201, tags=["uploads"], openapi_extra=_UPLOAD_BODY,
              responses={413: {"description": "over POFLOW_MAX_UPLOAD_MB"}})
    async def create_upload(
        request: Request,
        merchant_id: Merchant,
        merchant: Annotated[str | None, Query(description="the merchant the client means to upload for; another "
                                              "merchant's token is then refused (403 merchant_mismatch)")] = None,
    ) -> JSONResponse:
        """Store the multipart field ``file`` as the merchant's upload, like ``poflow upload``.

        Returns 201 ``{upload_id, merchant_id, duplicate_of, status, file, size_bytes, run}``; the same bytes
        again are recorded as a duplicate of the first upload (``status: duplicate``, no second PO). Its run starts at once: submitted to the
        Dagster webserver (``POFLOW_DAGSTER_URL``); ``run`` says ``{"outcome": "submitted", "run_id": …}``, or
        ``left_to_sensor`` when no webserver answered (``upload_sensor`` then starts it within seconds).
        Over ``POFLOW_MAX_UPLOAD_MB``: 413."""
        if merchant is not None and merchant != merchant_id:
            raise ApiError(403, "merchant_mismatch", f"this API token belongs to merchant {merchant_id!r}, "
                                                     f"not {merchant!r}")
        received = await receive_upload(request, settings.home, settings.max_upload_bytes)
        try:
            upload = await anyio.to_thread.run_sync(_register, db, settings, merchant_id, received)
        finally:
            received.path.unlink(missing_ok=True)
        if upload["duplicate_of"]:
            await anyio.to_thread.run_sync(_announce_duplicate, bus, merchant_id, upload)
            upload["run"] = None
        else:
            submitted = await anyio.to_thread.run_sync(submit_upload_run, db, upload["upload_id"])
            upload["run"] = {"outcome": submitted.outcome, "run_id": submitted.run_id, "detail": submitted.detail}
        return JSONResponse(upload, status_code=201)

    @app.get("/api/uploads", tags=["uploads"])
    def uploads(
        merchant_id: Merchant,
        status: Annotated[str | None, Query(description="received, pending (not started yet: received too), "
                                            "processing, completed, failed, needs_review or duplicate")] = None,
        since: Annotated[str | None, Query(description="7d, 24h, 90m or an ISO date/time")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page: the next, older "
                                            "uploads")] = None,
    ) -> dict:
        """The merchant's uploads, newest first, with progress and ETA; ``next_cursor`` (``null`` on the last
        page) as ``?cursor=`` gives the next page."""
        if status is not None and status not in LIST_STATUSES:
            raise ApiError(400, "invalid_status", f"status must be one of {', '.join(LIST_STATUSES)}")
        start = None
        if since:
            from poflow_dagster.report_view import parse_since

            start = parse_since(since, now=dt.datetime.now(dt.UTC))
        return list_uploads(db, merchant_id, status=status, since=start, limit=limit, cursor=cursor)

    @app.get("/api/uploads/{upload_id}", tags=["uploads"])
    def upload_status(upload_id: str, merchant_id: Merchant) -> dict:
        """The upload's status, exactly as ``poflow status ID --format json`` (workflow, ETA, stages).
        Another merchant's upload is a 404, like one that does not exist."""
        return merchant_upload_status(db, merchant_id, upload_id)

    @app.get("/api/events", tags=["events"], response_class=JSONResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})
    def events(request: Request, merchant_id: StreamMerchant):
        """Server-sent progress events of the merchant's uploads (``event: progress``, ``data`` = a
        ProgressEvent). Resume with ``Last-Event-ID`` or ``?last_event_id=``; ``?token=`` for EventSource."""
        return event_stream(request, merchant_id)

    @app.get("/api/stats", tags=["stats"])
    def stats(merchant_id: Merchant) -> dict:
        """Uploads by status, runs in progress, POs completed in the last 5 and 60 minutes."""
        return merchant_stats(db, merchant_id, now=dt.datetime.now(dt.UTC))


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every HTTP response (a plain ASGI wrapper, so the
    event stream's chunks pass through untouched)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _value in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _RedactTokens(logging.Filter):
    """``?token=`` (EventSource's way to authenticate) never reaches the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


def _redact_tokens_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in access.filters):
        access.addFilter(_RedactTokens())


def _register(db, settings: ApiSettings, merchant_id: str, received) -> dict:
    """Store and register the received file exactly as ``poflow upload`` does (source ``api``)."""
    from poflow_dagster.intake import store_file
    from poflow_dagster.store.merchants import validate_merchant_id
    from poflow_dagster.store.uploads import register_upload

    validate_merchant_id(merchant_id)
    stored = store_file(settings.home, received.path, original_filename=received.filename or "upload")
    upload = register_upload(db, merchant_id, stored, source="api")
    return {"upload_id": upload.id, "merchant_id": merchant_id, "duplicate_of": upload.duplicate_of, "status": upload.status,
            "file": upload.original_filename, "size_bytes": upload.size_bytes}


def _announce_duplicate(bus, merchant_id: str, upload: dict) -> None:
    """A byte-for-byte duplicate never runs: tell the merchant's listeners it is finished (best effort)."""
    try:
        from poflow_dagster.store.progress_bus import ProgressEvent

        bus().publish(ProgressEvent(
            upload_id=upload["upload_id"], merchant_id=merchant_id, run_id=None, status="duplicate", stage=None,
            percent=100, message=f"same bytes as upload {upload['duplicate_of']}; no new PO",
        ))
    except Exception as error:  # the upload is stored; a missing event is not worth a failed request
        log.warning("could not announce duplicate upload %s: %s", upload["upload_id"], error)
