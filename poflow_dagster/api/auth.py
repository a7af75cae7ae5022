"""Who is asking: a per-merchant API token, ``Authorization: Bearer <token>`` or ``?token=`` (``EventSource``
cannot set headers). No token, an unknown one or a revoked one is a 401."""

from __future__ import annotations

from fastapi import Request

from poflow_dagster.api.errors import ApiError
from poflow_dagster.store.tokens import verify_token


def request_token(request: Request) -> str | None:
    """The token the request carries: the bearer header first, else the ``token`` query parameter."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("token") or None


def current_merchant(request: Request) -> str:
    """FastAPI dependency: the merchant id of a live token, else a 401."""
    merchant_id = verify_token(request.app.state.db, request_token(request))
    if merchant_id is None:
        raise ApiError(401, "unauthorized", "a valid API token is required (poflow merchant token ID)",
                       headers={"WWW-Authenticate": "Bearer"})
    return merchant_id
