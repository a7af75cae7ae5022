"""``poflow serve``: the HTTP API for frontends (uploads, status, stats), per-merchant server-sent progress
events and one small web page. The app never runs Dagster jobs: ``upload_sensor`` (or a direct submit)
starts the runs; the API stores uploads and reads state."""

from __future__ import annotations

from poflow_dagster.api.app import create_app

__all__ = ["create_app"]
