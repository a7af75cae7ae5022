from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from poflow_dagster import config


class StorageResource(dg.ConfigurableResource):
    """Where uploads, the inbox and local state live (``POFLOW_HOME``)."""

    home: str = Field(default="", description="Directory; empty = POFLOW_HOME or ./.poflow.")

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() if self.home else config.poflow_home()
