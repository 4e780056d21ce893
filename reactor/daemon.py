"""`reactor run`: who owns what, start-up order, readiness, and an orderly stop.

    start:    config -> logging -> state file -> database check (mode) -> D-Bus
    run:      one TaskGroup owns the pipeline, the alerts, the audit writer, the sources
              (monitor), the heartbeat (watchdog pings + STATUS=) and, with [metrics], the
              listener and textfile writer (bound before READY); READY=1 once the first
              sweep after the source connected is done and the bus is connected
    stop:     SIGTERM/SIGINT -> stop intake (the source's last boundary becomes the
              checkpoint) -> drain in-flight cycles (shutdown_timeout) -> send grouped
              alerts (a short drain; the rest stays in the spool) -> flush audit rows
              -> close bus and database -> write the state file

Lifecycle lines are fixed strings (tests and operators grep for them):
    "reactor {version} starting", "ready: ...", "stopping: intake closed",
    "stopped: {n} cycle(s) run, {m} cancelled"
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

from loguru import logger

from reactor import __version__
from reactor.actions.pipeline import Pipeline
from reactor.actions.systemd import Systemd
from reactor.alerts.dispatcher import build_alerts
from reactor.config import Config
from reactor.events import Alarm, Observers, Source
from reactor.metrics.service import MetricsService
from reactor.metrics.snapshot import CycleSnapshot, Snapshot, SourceSnapshot
from reactor.notify import Notifier
from reactor.sources.intake import Intake
from reactor.sources.monitor import Monitor
from reactor.storage.database import Database
from reactor.storage.records import Store
from reactor.storage.statefile import StateFile

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates when there is no watchdog


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.state = StateFile(config.monitor.state_file)
        # every stage reports its steps and notices here; the audit writer listens first
        self.observers = Observers()
        self.database = Database(config.database, observers=self.observers)
        self.systemd = Systemd(config.systemd, self.observers)
        self.store = Store(self.database)
        self.observers.add(self.store)
        # alerts (when a sink is configured) hear the same steps and notices
        self.alerts = build_alerts(config, self.state, self.observers)
        if self.alerts is not None:
            self.observers.add(self.alerts)
        self.intake = Intake(self._submit, self.database, verify_replay=True)
        self.pipeline = Pipeline(
            config, self.systemd, self.store, self.state,
            settle=self.intake.settle, is_active=self.intake.tracker.is_active,
            observers=self.observers,
        )
        self.monitor = Monitor(config, self.database, self.state, self.intake,
                               self.observers)
        self._stop = asyncio.Event()
        self.started_at = time.time()
        # [metrics]: counters from the steps, /metrics /status.json /healthz, textfile
        self.metrics: MetricsService | None = None
        if config.metrics.enabled:
            self.metrics = MetricsService(config, self)
            self.observers.add(self.metrics.metrics)
            if self.alerts is not None:
                self.metrics.metrics.watch_alerts(self.alerts)

    def _submit(self, alarm: Alarm) -> None:
        self.pipeline.submit(alarm)

    def stop(self) -> None:
        self._stop.set()

    def status_line(self) -> str:
        c = self.pipeline.counters
        where = f" at {self.monitor.position}" if self.monitor.position else ""
        return (f"mode={self.monitor.mode}{where}; alarms={self.intake.delivered} "
                f"restarted={c.restarted} failed={c.failed} refused={c.refused} "
                f"coalesced={c.coalesced} in_flight={self.pipeline.in_flight}")

    def snapshot(self) -> Snapshot:
        """The daemon's state now, read-only, for metrics, /status.json and /healthz."""
        b = self.monitor.binlog
        c = self.pipeline.counters
        return Snapshot(
            version=__version__, pid=os.getpid(), configured_mode=self.config.monitor.mode,
            started_at=self.started_at, ready=self.monitor.ready.is_set(),
            source=SourceSnapshot(
                mode=self.monitor.mode,
                connected=None if b is None else b.connected,
                position=str(b.position) if b is not None and b.position else None,
                seconds_behind_source=None if b is None else b.seconds_behind,
                seconds_since_last_event=time.monotonic() - b.last_event_at
                if b is not None and b.last_event_at else None,
                reconnects=0 if b is None else b.reconnects,
                transactions=0 if b is None else b.transactions,
                sweeps=self.monitor.sweeps, sweep_seconds=self.monitor.sweep_seconds,
                last_sweep_at=self.monitor.last_sweep_at),
            bus_connected=self.systemd.connected,
            conditions={k.value: n.detail for k, n in self.observers.active.items()},
            in_flight=tuple(CycleSnapshot(a.process_id, a.process_name, a.source.value,
                                          a.detected_at, issued)
                            for a, issued in self.pipeline.cycles_in_flight()),
            breakers=dict(self.pipeline.breakers), names=dict(self.intake.names),
            counters={"alarms": self.intake.delivered, "cycles": c.cycles,
                      "restarted": c.restarted, "failed": c.failed, "refused": c.refused,
                      "skipped": c.skipped, "coalesced": c.coalesced},
            dbus_calls=dict(self.systemd.calls), database_calls=dict(self.database.calls))

    @contextlib.asynccontextmanager
    async def _opened(self, doing: str, *,
                      check_server: bool) -> AsyncIterator[asyncio.TaskGroup]:
        """The state file held, (the server checked,) the bus connected and the pipeline
        taking cycles; on the way out, audit rows flushed and everything closed again."""
        logger.info("reactor {} {} (config {})", __version__, doing, self.config.path)
        self.state.acquire()
        try:
            if check_server:
                await self.monitor.choose_mode()
            await self.systemd.connect()
            async with asyncio.TaskGroup() as tg:
                # outcomes and audit rows: the cycles of `run` and of `sweep --once` write them
                tg.create_task(self.store.run(), name="store")
                cycles = tg.create_task(self.pipeline.run(), name="pipeline")
                alerts = self.alerts
                alerting = tg.create_task(alerts.run(), name="alerts") if alerts else None
                await self.pipeline.started.wait()
                yield tg
                self.pipeline.close()
                await cycles
                if alerts and alerting:  # after the cycles: their last alerts go out too
                    alerts.close()
                    await alerting
                # only now: outcomes of the cycles that finished while stopping still retry
                # a database that is briefly away
                self.store.stop()
            await self.store.flush()
        finally:
            self.monitor.stop()
            await self.systemd.close()
            self.database.close()
            self.state.close()

    async def serve(self) -> int:
        """Run until stop(). Raises the start-up errors (database, server, bus) to the CLI."""
        async with self._opened("starting", check_server=True) as tg:
            metrics = None
            if self.metrics is not None:  # before READY: a taken port fails the start
                await self.metrics.start()
                metrics = tg.create_task(self.metrics.run(), name="metrics")
            source = tg.create_task(self.monitor.run(), name="sources")
            beat = tg.create_task(self._heartbeat(), name="heartbeat")
            await self._until_ready(source)
            if self.monitor.ready.is_set():
                logger.info("ready: mode={} bus={} position={}", self.monitor.mode,
                            self.systemd.describe(), self.monitor.position or "-")
                self.notifier.ready(self.status_line())
            await self._stop.wait()
            logger.info("stopping: intake closed")
            self.notifier.stopping("stopping: finishing in-flight restarts")
            self.monitor.stop()
            await source
            beat.cancel()
            if metrics is not None:
                metrics.cancel()
        logger.info("stopped: {} cycle(s) run, {} cancelled", self.pipeline.counters.cycles,
                    self.pipeline.cancelled)
        return 0

    async def sweep_once(self) -> int:
        """One sweep, every alarm found handled to the end; the number of failed cycles."""
        async with self._opened("sweeping once", check_server=False):
            found = await self.monitor.sweep(Source.SWEEP)
            logger.info("sweep found {} alarm(s)", found)
            await self.pipeline.wait_idle()
        c = self.pipeline.counters
        logger.info("sweep done: {} restarted, {} failed, {} refused, {} skipped",
                    c.restarted, c.failed, c.refused, c.skipped)
        return c.failed + c.refused + c.skipped

    async def _until_ready(self, source: asyncio.Task[None]) -> None:
        ready = asyncio.ensure_future(self.monitor.ready.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({ready, stop, source}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stop.cancel()

    async def _heartbeat(self) -> None:
        """Watchdog pings and STATUS= from the event loop itself: a stalled loop stops them,
        and systemd restarts the service."""
        interval = self.notifier.watchdog_interval or STATUS_INTERVAL
        last_status = 0.0
        while True:
            if self.notifier.watchdog_interval:
                self.notifier.watchdog()
            now = time.monotonic()
            if now - last_status >= STATUS_INTERVAL and self.monitor.ready.is_set():
                self.notifier.status(self.status_line())
                last_status = now
            await asyncio.sleep(interval)
