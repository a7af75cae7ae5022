from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from poflow_dagster import config
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent


class ProgressResource(dg.ConfigurableResource):
    """Progress events for frontends: Redis pub/sub + stream when ``REDIS_URL`` is set, logs otherwise."""

    redis_url: str = Field(default="", description="Redis URL; empty = REDIS_URL or no bus.")
    _bus: ProgressBus | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._bus = ProgressBus(self.redis_url or config.redis_url())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._bus is not None:
            self._bus.close()

    def publish(self, event: ProgressEvent) -> None:
        assert self._bus is not None, "resource not set up"
        self._bus.publish(event)
