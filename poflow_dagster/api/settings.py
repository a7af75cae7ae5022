"""The API's configuration, from the environment (each with an embedded default)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from poflow_dagster import config

DEFAULT_MAX_UPLOAD_MB = 50.0


@dataclass(frozen=True)
class ApiSettings:
    """What ``create_app`` needs: where uploads go, the database, the progress bus, limits, CORS."""

    home: Path
    database_url: str
    redis_url: str | None
    namespace: str | None
    max_upload_bytes: int
    cors_origins: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> ApiSettings:
        """``POFLOW_HOME``, ``POFLOW_DATABASE_URL``, ``REDIS_URL``, ``POFLOW_REDIS_NAMESPACE``,
        ``POFLOW_MAX_UPLOAD_MB`` (default 50) and ``POFLOW_API_CORS_ORIGINS`` (comma-separated; unset = no CORS)."""
        origins = [o.strip() for o in (os.environ.get("POFLOW_API_CORS_ORIGINS") or "").split(",") if o.strip()]
        return cls(
            home=config.poflow_home(),
            database_url=config.database_url(),
            redis_url=config.redis_url(),
            namespace=os.environ.get("POFLOW_REDIS_NAMESPACE") or None,
            max_upload_bytes=max_upload_bytes(),
            cors_origins=origins,
        )


def max_upload_bytes() -> int:
    """``POFLOW_MAX_UPLOAD_MB`` (a positive number of MiB, default 50) in bytes; a bad value means the default."""
    raw = (os.environ.get("POFLOW_MAX_UPLOAD_MB") or "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        megabytes = DEFAULT_MAX_UPLOAD_MB
    if not megabytes > 0:
        megabytes = DEFAULT_MAX_UPLOAD_MB
    return int(megabytes * 1024 * 1024)
