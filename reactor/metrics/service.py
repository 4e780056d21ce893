"""What the daemon runs for `[metrics]`: the registry and its observer, the HTTP listener
and the textfile writer, started before READY and run as one task of the daemon's.

    service = MetricsService(config, daemon)      # daemon: a SnapshotSource
    observers.add(service.metrics)                # counters and histograms from the steps
    await service.start()                         # bind, first textfile write (ConfigError)
    tg.create_task(service.run())                 # serve / write until cancelled

Error handling: start() raises ConfigError naming `[metrics] listen` or `[metrics]
textfile` when the port is taken or the file cannot be written; after that nothing here
stops the daemon (see server.py and textfile.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from reactor.config import Config
from reactor.metrics.registry import Metrics
from reactor.metrics.server import MetricsServer, Routes, render_metrics
from reactor.metrics.snapshot import SnapshotSource
from reactor.metrics.status import document
from reactor.metrics.textfile import TextfileWriter


class MetricsService:
    def __init__(self, config: Config, source: SnapshotSource) -> None:
        self.config = config
        self.source = source
        self.metrics = Metrics()
        self.metrics.watch(source)
        cfg = config.metrics
        self.server: MetricsServer | None = None
        if cfg.listen is not None:
            routes = Routes(render_metrics(self.metrics.registry), self.status,
                            lambda: self.source.snapshot().problems())
            self.server = MetricsServer(cfg.listen[0], cfg.listen[1], routes)
        self.textfile: TextfileWriter | None = None
        if cfg.textfile:
            self.textfile = TextfileWriter(cfg.textfile, cfg.textfile_interval,
                                           self.metrics.registry)

    def status(self) -> dict[str, Any]:
        """The status document, from the daemon's memory."""
        return document(self.source.snapshot(), self.config, self.metrics.last,
                        self.metrics.caught)

    async def start(self) -> None:
        if self.textfile is not None:
            self.textfile.write_now()
        if self.server is not None:
            await self.server.start()

    async def run(self) -> None:
        """Serve and write until cancelled."""
        async with asyncio.TaskGroup() as tg:
            if self.server is not None:
                tg.create_task(self.server.serve(), name="metrics-http")
            if self.textfile is not None:
                tg.create_task(self.textfile.run(), name="metrics-textfile")
