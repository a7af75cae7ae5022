from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from poflow_dagster import config
from poflow_dagster.store.db import Database
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent


class ProgressResource(dg.ConfigurableResource):
    """Progress events for frontends: a per-merchant Redis stream + live channel when ``REDIS_URL`` is set
    (keys under ``POFLOW_REDIS_NAMESPACE``), else the app database's ``progress_events`` table."""

    redis_url: str = Field(default="", description="Redis URL; empty = REDIS_URL, or no Redis (events go to the "
                                                   "database).")
    namespace: str = Field(default="", description="Redis key prefix; empty = POFLOW_REDIS_NAMESPACE or one derived "
                                                   "from the app database URL.")
    _buses: dict[str, ProgressBus] = PrivateAttr(default_factory=dict)

    def bus_for(self, database: Database) -> ProgressBus:
        """The bus that numbers and stores this database's uploads' events (one per database, kept while the
        resource is set up)."""
        bus = self._buses.get(database.url)
        if bus is None:
            bus = self._buses[database.url] = ProgressBus(
                self.redis_url or config.redis_url(), database, self.namespace or None
            )
        return bus

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for bus in self._buses.values():
            bus.close()
        self._buses.clear()

    def publish(self, event: ProgressEvent, database: Database) -> ProgressEvent:
        """Publish ``event`` (best effort; returns it with its ``seq``)."""
        return self.bus_for(database).publish(event)
