"""`reactor run`: who owns what, start-up order, readiness, reload, and an orderly stop.

    start:    config -> logging -> state file -> database check (mode) -> D-Bus
    run:      one TaskGroup owns the pipeline, the alerts, the store (outcomes and audit
              rows), the fleet row (REACTOR_FLEET, every fleet_interval), the sources
              (monitor: the stream, the sweeps, the intake's lookups),
              the heartbeat (watchdog pings + STATUS=) and, with [metrics], the listener
              and textfile writer (bound before READY); READY=1 once the first sweep after
              the source connected is done and the bus is connected
    reload:   SIGHUP -> the config file read again; what may change live is used from now
              on, the rest waits for a restart (reload.py); refused alarms looked at again
    stop:     stop intake (the stream ends; the checkpoint is the last boundary whose
              alarms were handed on) -> cancel the cycles whose restart was not issued
              (their alarms stay set) -> drain those issued (shutdown_timeout) -> send
              grouped alerts (a short drain; the rest stays in the spool) -> flush audit
              rows -> fleet row 'stopped' -> close bus and database -> write the state file

Every way out takes the stop path: SIGTERM or SIGINT; a second SIGINT (urgent: the issued
cycles are cancelled too, audit rows and the checkpoint are still written; exit 130); the
alarm source failing (mode=binlog and the server refuses the stream; a refusal at start)
or an unexpected error in any task it owns: logged as an ERROR, the stop runs, then
`serve` raises the cause (the CLI maps it to its exit status).

Lifecycle lines are fixed strings (tests and operators grep for them):
    "reactor {version} starting", "ready: ...", "stopping: intake closed",
    "stopped: {n} cycle(s) run, {m} cancelled", "config reloaded ...",
    "config reload refused: ..."
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from loguru import logger

from reactor import __version__
from reactor.actions.pipeline import Pipeline
from reactor.actions.systemd import Systemd
from reactor.config import Config, LoggingConfig, load_config
from reactor.errors import ConfigError, ReactorError
from reactor.events import Alarm, Observers, Source
from reactor.metrics.service import MetricsService
from reactor.metrics.snapshot import CycleSnapshot, Snapshot, SourceSnapshot
from reactor.notify import Notifier
from reactor.ownership import Ownership
from reactor.reload import live_config
from reactor.sources.intake import Intake
from reactor.sources.monitor import Monitor
from reactor.storage.database import Database
from reactor.storage.fleet import FleetRow, FleetState
from reactor.storage.records import Store
from reactor.storage.statefile import StateFile

if TYPE_CHECKING:
    from reactor.alerts.dispatcher import Alerts

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates when there is no watchdog
EXIT_INTERRUPTED = 130  # the stop was urgent (a second SIGINT): cycles were cut short


def _cause(exc: BaseException) -> BaseException:
    """The first of the reactor's own errors inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [_cause(e) for e in exc.exceptions]
        return next((e for e in inner if isinstance(e, ReactorError)), inner[0])
    return exc


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None, *,
                 relog: Callable[[LoggingConfig], None] = lambda cfg: None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.relog = relog  # sets logging up again after a reload changed [logging]
        self.state = StateFile(config.monitor.state_file)
        # every stage reports its steps and notices here; the audit writer listens first
        self.observers = Observers()
        self.database = Database(config.database, observers=self.observers)
        self.systemd = Systemd(config.systemd, self.observers)
        # whose rows this reactor acts on and writes (the host column is looked for at start)
        self.owned = Ownership(config.monitor.host, config.monitor.take_unassigned)
        self.store = Store(self.database, self.owned)
        self.observers.add(self.store)
        # alerts (when a sink is configured) hear the same steps and notices
        self.alerts: Alerts | None = None
        if config.alerts.sinks:  # the sinks' HTTP and SMTP clients only when there are some
            from reactor.alerts.dispatcher import build_alerts

            self.alerts = build_alerts(config, self.state, self.observers)
        if self.alerts is not None:
            self.observers.add(self.alerts)
        self.intake = Intake(self._submit, self.database, verify_replay=True,
                             owned=self.owned)
        self.pipeline = Pipeline(
            config, self.systemd, self.store, self.state,
            settle=self.intake.settle, is_active=self.intake.tracker.is_active,
            refused=self.intake.refused, observers=self.observers,
        )
        # the last clears of a storm go out at once, not SPACING later (outcomes.py)
        self.store.outcomes.writers = self.pipeline.cycles_running
        self.monitor = Monitor(config, self.database, self.state, self.intake,
                               self.observers)
        self.fleet = FleetRow(self.database, self.owned, config.monitor.fleet_interval,
                              lambda: self.fleet_state("running"), self.observers)
        self._stop = asyncio.Event()
        self._urgent = False
        self._failure: BaseException | None = None
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

    def stop(self, *, urgent: bool = False) -> None:
        """Stop in order; urgent (a second SIGINT): without waiting for cycles in flight."""
        if urgent:
            self._urgent = True
            self.pipeline.close(urgent=True)  # cuts a drain already waiting short
        self._stop.set()

    def status_line(self) -> str:
        c = self.pipeline.counters
        where = f" at {self.monitor.position}" if self.monitor.position else ""
        return (f"mode={self.monitor.mode}{where}; alarms={self.intake.delivered} "
                f"restarted={c.restarted} failed={c.failed} refused={c.refused} "
                f"coalesced={c.coalesced} in_flight={self.pipeline.in_flight}")

    def fleet_state(self, state: str) -> FleetState:
        """This reactor's REACTOR_FLEET row."""
        b = self.monitor.binlog
        cp = b.position if b is not None else None
        return FleetState(
            state=state, version=__version__, pid=os.getpid(), mode=self.monitor.mode,
            binlog_server=b.reading if b is not None else None,
            position=str(cp) if cp is not None else None,
            gtid=str(cp.gtid) if cp is not None and cp.gtid is not None else None,
            seconds_behind=b.seconds_behind if b is not None else None,
            in_flight=self.pipeline.in_flight)

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

    # ------------------------------------------------------------------ reload

    def reload(self) -> bool:
        """Read the config file again (SIGHUP). True when the new one is in use."""
        path = self.config.path
        if self._stop.is_set():
            logger.warning("config reload ignored: stopping")
            return False
        logger.info("reloading the config from {}", path)
        try:
            new = load_config(path)
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("config reload refused: {}: {}", path, problem)
            logger.error("config reload refused: the running config stays in force")
            return False
        live, held = live_config(self.config, new)
        for key in held:
            logger.warning("config reload: {} changed, which needs a restart "
                           "(systemctl restart reactor); the running value stays until then",
                           key)
        if live.logging != self.config.logging:
            try:
                self.relog(live.logging)
            except ConfigError as exc:  # a log file it cannot open: back to the old one
                self.relog(self.config.logging)
                for problem in exc.problems:
                    logger.error("config reload refused: {}: {}", path, problem)
                return False
        self.config = live
        self.systemd.cfg = live.systemd  # the same bus; its timeouts apply to the next calls
        self.pipeline.reconfigure(live)
        self.monitor.reconfigured(live)
        self.fleet.recheck()
        logger.info("config reloaded: {} process section(s)", len(live.processes))
        return True

    # ------------------------------------------------------------------ lifecycle

    async def _guard(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run a task the daemon owns; its failure stops the daemon in order (the cause is
        raised by serve() afterwards) instead of tearing down every other task."""
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - every failure takes the ordered stop
            cause = _cause(exc)
            if isinstance(cause, ReactorError):
                logger.error("{} failed: {}; stopping", what, cause)
            else:
                logger.opt(exception=exc).error("{} failed unexpectedly; stopping", what)
            if self._failure is None:
                self._failure = cause
            self._stop.set()

    @contextlib.asynccontextmanager
    async def _opened(self, doing: str, *,
                      check_server: bool) -> AsyncIterator[asyncio.TaskGroup]:
        """The state file held, (the server checked,) the bus connected and the pipeline
        taking cycles; on the way out, cycles stopped, audit rows flushed and everything
        closed again."""
        logger.info("reactor {} {} (config {})", __version__, doing, self.config.path)
        self.state.acquire()
        try:
            if check_server:
                await self.monitor.choose_mode()
            await self.systemd.connect()
            async with asyncio.TaskGroup() as tg:
                # outcomes and audit rows: the cycles of `run` and of `sweep --once` write them
                tg.create_task(self._guard(self.store.run(), "store"), name="store")
                cycles = tg.create_task(self._guard(self.pipeline.run(), "pipeline"),
                                        name="pipeline")
                alerts = self.alerts
                alerting = tg.create_task(self._guard(alerts.run(), "alerts"),
                                          name="alerts") if alerts else None
                await self.pipeline.started.wait()
                try:
                    yield tg
                finally:
                    self.monitor.stop()
                    self.pipeline.close(urgent=self._urgent)
                    await cycles
                    if alerts and alerting:  # after the cycles: their last alerts go out too
                        alerts.close()
                        await alerting
                    # only now: outcomes of the cycles that finished while stopping still
                    # retry a database that is briefly away
                    self.store.stop()
            await self.store.flush()
            if check_server:  # `run`, not `sweep --once`: the row says it stopped
                await self.fleet.stopped(self.fleet_state("stopped"))
        finally:
            self.monitor.stop()
            await self.systemd.close()
            self.database.close()
            self.state.close()

    async def serve(self) -> int:
        """Run until stop() or a failure. Raises the start-up errors (database, server,
        bus) to the CLI, and after the ordered stop the error that caused it."""
        async with self._opened("starting", check_server=True) as tg:
            metrics = None
            if self.metrics is not None:  # before READY: a taken port fails the start
                await self.metrics.start()
                metrics = tg.create_task(self._guard(self.metrics.run(), "metrics"),
                                         name="metrics")
            fleet = tg.create_task(self._guard(self.fleet.run(), "fleet row"), name="fleet")
            source = tg.create_task(self._guard(self.monitor.run(), "alarm source"),
                                    name="sources")
            beat = tg.create_task(self._guard(self._heartbeat(), "heartbeat"),
                                  name="heartbeat")
            await self._until_ready(source)
            if self.monitor.ready.is_set() and not self._stop.is_set():
                logger.info("ready: mode={} bus={} position={}", self.monitor.mode,
                            self.systemd.describe(), self.monitor.position or "-")
                self.notifier.ready(self.status_line())
            await self._stop.wait()
            logger.info("stopping: intake closed")
            self.notifier.stopping("stopping: finishing in-flight restarts")
            self.monitor.stop()
            await source
            self.fleet.stop()
            await fleet
            beat.cancel()
            if metrics is not None:
                metrics.cancel()
        logger.info("stopped: {} cycle(s) run, {} cancelled", self.pipeline.counters.cycles,
                    self.pipeline.cancelled)
        if self._failure is not None:
            raise self._failure
        return EXIT_INTERRUPTED if self._urgent else 0

    async def sweep_once(self) -> int:
        """One sweep, every alarm found handled to the end; the number of failed cycles."""
        async with self._opened("sweeping once", check_server=False):
            await self.monitor.check_host_column()  # a fleet: only this host's rows
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
