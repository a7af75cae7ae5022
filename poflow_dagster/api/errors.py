"""Every error the API returns is JSON ``{"error": {"code", "message"}}`` with one line of text; never a
traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from poflow_dagster.domain.errors import PoflowError

log = logging.getLogger(__name__)

#: HTTP status for the ``PoflowError`` codes a request can cause; any other code is a 400.
_STATUS_BY_CODE = {
    "unknown_upload": 404,
    "file_too_large": 413,
    "upload_conflict": 409,
    # review and receiving (api/review_routes.py)
    "not_awaiting_review": 409,
    "invalid_match": 422,
    "unknown_match": 422,
    "receiving_off": 409,
    "over_receipt": 409,
    "not_synced": 409,
    "no_purchase_order": 409,
    "receipt_conflict": 409,
    "unknown_line": 422,
    "invalid_quantity": 422,
    "option_conflict": 422,
    "receipt_refused": 422,
    "receive_incomplete": 503,
    "invalid_idempotency_key": 400,
    "idempotency_key_reused": 422,
    "idempotency_in_progress": 409,
    "sync_off": 409,
    "not_drafted": 409,
}

_CODE_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "file_too_large", 415: "unsupported_media_type", 422: "invalid_request",
}


class ApiError(Exception):
    """An error response: HTTP ``status``, stable ``code``, one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = " ".join(message.split())
        self.headers = headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": " ".join(str(message).split())}}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors for our own errors, ``PoflowError``, HTTP errors, validation errors and anything else."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(PoflowError)
    async def _poflow_error(_request: Request, error: PoflowError) -> JSONResponse:
        return error_response(_STATUS_BY_CODE.get(error.code, 400), error.code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _CODE_BY_STATUS.get(error.status_code, f"http_{error.status_code}")
        return error_response(error.status_code, code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'query')}: {e.get('msg')}" for e in error.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal_error", f"{type(error).__name__}: the server could not do this")
