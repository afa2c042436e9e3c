"""The API in the workers' supervisor (``esmd run`` with several worker processes).

The supervisor runs no mapping: it serves the API, writes changes to the store, and reports
states from the workers' status reports. Each worker follows the store (Control's sync) and
applies the change itself within about a second, so every process converges on the same set.
"""

from __future__ import annotations

from aiohttp import web

from service.api.control import Control, Observe
from service.api.routes import Api
from service.api.store import SqliteMappingStore
from service.config import EsmdConfig, MappingConfig
from service.mapping import Mapping
from service.metrics import Metrics


class StoreOnly:
    """The supervisor's Runner: mappings are described, never run (the workers run them)."""

    def __init__(self, esmd: EsmdConfig) -> None:
        self.esmd = esmd
        self.metrics = Metrics()

    def start_mapping(self, config: MappingConfig) -> Mapping:
        return Mapping(config, self.esmd, self.metrics)

    async def retire_mapping(self, mapping: Mapping) -> None:
        return None


class SupervisedApi:
    def __init__(self, config: EsmdConfig) -> None:
        self.config = config
        self.control: Control | None = None

    async def open(self, observe: Observe) -> list[web.RouteDef]:
        """Open the store and return the API's routes for the supervisor's server."""
        assert self.config.api is not None
        runner = StoreOnly(self.config)
        self.control = Control(
            self.config, runner, SqliteMappingStore(self.config.api_store_path), observe
        )
        await self.control.open([runner.start_mapping(m) for m in self.config.mappings])
        return Api(self.config.api, self.control).routes()

    async def close(self) -> None:
        if self.control is not None:
            await self.control.close()
