"""Who is asking: a per-merchant API token in ``Authorization: Bearer <token>``. Only the event stream
(``GET /api/events``) also takes ``?token=``, since ``EventSource`` cannot set headers; a token in any other
URL is ignored (it would land in logs, history and ``Referer``). No token, an unknown one or a revoked one
is a 401."""

from __future__ import annotations

from fastapi import Request

from poflow_dagster.api.errors import ApiError
from poflow_dagster.store.tokens import verify_token


def request_token(request: Request, *, allow_query: bool = False) -> str | None:
    """The token the request carries: the bearer header, else (only with ``allow_query``) ``?token=``."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (request.query_params.get("token") or None) if allow_query else None


def current_merchant(request: Request) -> str:
    """FastAPI dependency: the merchant id of the live token in the ``Authorization`` header, else a 401."""
    return _merchant(request, allow_query=False)


def stream_merchant(request: Request) -> str:
    """FastAPI dependency of ``GET /api/events``: like ``current_merchant`` but ``?token=`` works too."""
    return _merchant(request, allow_query=True)


def _merchant(request: Request, *, allow_query: bool) -> str:
    merchant_id = verify_token(request.app.state.db, request_token(request, allow_query=allow_query))
    if merchant_id is None:
        raise ApiError(401, "unauthorized", "a valid API token is required (poflow merchant token ID)",
                       headers={"WWW-Authenticate": "Bearer"})
    return merchant_id
