"""The alarm sources for the chosen mode, feeding one Intake.

    binlog mode: BinlogSource (push) + sweep at start (without waiting for the stream:
                 alarms already set are handled even while it cannot connect), after
                 every (re)connect, every check_interval, and when the stream shows a
                 statement it cannot decode
    poll mode:   a poll every check_interval (the same query as the sweep)

`ready` is set once the first source is connected and the first sweep or poll is done:
from then on no alarm can be missed. The start-up sweep runs alongside the stream's replay
from its checkpoint: an alarm still set may come from either, once.

When the server refuses the binlog dump for good (a grant revoked after the start-up
check): ERROR; mode=auto goes on polling, mode=binlog raises ServerNotSuitable.

Error handling: a failed sweep or poll is logged (a WARNING when the database is down, an
ERROR when it refuses: a grant or table missing) and retried with a capped backoff; a
refusal while priming at start is raised to the caller. The binlog source owns its own
reconnects (see binlog.py).
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger

from reactor.config import Config
from reactor.errors import BinlogRefused, ReactorError, ServerNotSuitable, TransientError
from reactor.events import Condition, Happening, Observers, Source
from reactor.retry import Backoff
from reactor.sources.binlog import BinlogSource
from reactor.sources.intake import Intake
from reactor.sources.preflight import choose_mode, inspect_server
from reactor.storage import queries
from reactor.storage.database import Database
from reactor.storage.statefile import Checkpoint, StateFile


def _level(exc: ReactorError) -> str:
    """Transient failures are warnings; a refusal (grant, table) needs an operator."""
    return "WARNING" if isinstance(exc, TransientError) else "ERROR"


class Monitor:
    def __init__(self, config: Config, database: Database, state: StateFile,
                 intake: Intake, observers: Observers | None = None) -> None:
        self.config = config
        self.observers = observers if observers is not None else Observers()
        self.database = database
        self.state = state
        self.intake = intake
        self.mode = ""
        self.folds_case = False  # lower_case_table_names: the binlog's table names are lower
        self.ready = asyncio.Event()
        self.sweeps = 0  # sweeps and polls done
        self.sweep_seconds = 0.0  # the time they took, in all
        self.last_sweep_at: float | None = None  # wall clock of the last one's end
        self.binlog: BinlogSource | None = None
        self._sweep_wanted = asyncio.Event()
        # the next sweep catches up after the stream was not reading (start, reconnect):
        # alarms it finds were set meanwhile, and the stream's replay may race it for them
        self._catching_up = False
        self._connected_once = False
        self._stopping = False
        self._stop_event = asyncio.Event()

    async def choose_mode(self) -> str:
        """Inspect the server and pick binlog or poll. Raises ServerNotSuitable (mode=binlog)
        and DatabaseUnavailable/DatabaseRefused when the server cannot be asked."""
        configured = self.config.monitor.mode
        report = None
        if configured != "poll":
            report = await self.database.call(inspect_server)
            self.folds_case = report.folds_case
        self.mode = choose_mode(configured, report)
        if self.mode == "poll" and configured == "auto" and report is not None:
            self.observers.begin(Condition.POLLING, "binlog not usable: "
                                 + "; ".join(report.missing))
        return self.mode

    @property
    def position(self) -> Checkpoint | None:
        return self.binlog.position if self.binlog else None

    def request_sweep(self, *, catch_up: bool = False) -> None:
        """Sweep now. catch_up: after a time the stream was not reading, so that what the
        sweep finds is expected, not a gap in the stream."""
        self._catching_up = self._catching_up or catch_up
        self._sweep_wanted.set()

    async def run(self) -> None:
        """Run the sources until stop() (the caller owns this task)."""
        if not self.mode:
            await self.choose_mode()
        if self.mode == "poll":
            logger.info("polling every {:g} s", self.config.monitor.check_interval)
            await self._poll_loop()
            return
        self.binlog = BinlogSource(
            self.config.database, self.state,
            folds_case=self.folds_case,
            observers=self.observers,
            on_batch=self.intake.on_batch,
            on_connected=self._on_connected,
            on_statement=self.request_sweep,
        )
        await self._prime()
        refused: list[BinlogRefused] = []
        self.request_sweep(catch_up=True)  # at start, whether or not the stream connects
        async with asyncio.TaskGroup() as tg:
            sweeper = tg.create_task(self._sweep_loop(), name="sweep")
            tg.create_task(self._stream(sweeper, refused), name="binlog")
        if not refused or self._stopping:
            return
        if self.config.monitor.mode == "binlog":
            logger.error("binlog stream refused: {}", refused[0])
            raise ServerNotSuitable(
                f"[monitor] mode = binlog, but the server refuses the binlog stream: "
                f"{refused[0]}")
        logger.error("binlog stream refused: {}; falling back to polling every {:g} s",
                     refused[0], self.config.monitor.check_interval)
        self.observers.begin(Condition.POLLING, f"binlog stream refused: {refused[0]}")
        self.mode = "poll"
        self.binlog = None
        await self._poll_loop()

    async def _stream(self, sweeper: asyncio.Task[None], refused: list[BinlogRefused]) -> None:
        """The binlog source; when the server refuses it for good, the sweeps end too."""
        assert self.binlog is not None
        try:
            await self.binlog.run()
        except BinlogRefused as exc:
            refused.append(exc)
            sweeper.cancel()

    async def _prime(self) -> None:
        """Fix the stream's start position, then load the name cache: every PROCESE change
        after that position is replayed by the stream, so the cache cannot go stale."""
        assert self.binlog is not None
        backoff = Backoff(0.1, 5.0)
        while not self._stopping:
            try:
                status = await self.database.call(queries.master_status)
                if status is not None:
                    if self.binlog.position is None:
                        self.binlog.position = Checkpoint(*status)
                    else:  # resuming: what lies up to here happened while nobody read
                        self.intake.replay_until = Checkpoint(*status)
                self.intake.names.update(await self.database.call(queries.fetch_names))
                return
            except TransientError as exc:
                delay = backoff.next()
                logger.warning("database unavailable at start: {}; retrying in {:.1f} s",
                               exc, delay)
                await self._pause(delay)

    def _on_connected(self, position: Checkpoint | None) -> None:
        if self._connected_once:
            logger.info("binlog stream reconnected at {}; sweeping", position)
        else:
            logger.info("binlog stream connected at {}", position)
        self._connected_once = True
        self.observers.end(Condition.STREAM_DOWN, f"binlog stream connected at {position}")
        self.request_sweep(catch_up=True)

    async def sweep(self, source: Source = Source.SWEEP, *, catch_up: bool = True) -> int:
        """One sweep/poll: deliver every row in alarm that is not already in hand. In binlog
        mode, alarms found by a sweep that is not catching up are a gap in the stream."""
        started = self.intake.sweep_started()
        began = time.monotonic()
        rows = await self.database.call(queries.fetch_alarmed)
        found = self.intake.on_sweep(rows, started, source)
        self.sweeps += 1
        self.sweep_seconds += time.monotonic() - began
        self.last_sweep_at = time.time()
        # alarms the stream did deliver, whose cycle failed, are retried: not a gap
        missed = [pid for pid in found if pid not in self.intake.tracker.retried]
        if missed and source is Source.SWEEP and self.binlog is not None and catch_up:
            logger.info("sweep found {} alarm(s) set while the stream was not reading",
                        len(missed))
        elif missed and source is Source.SWEEP and self.binlog is not None:
            # in binlog mode the stream delivers every alarm: a catch is a bug, or a server
            # setting the stream cannot read
            ids = sorted(missed)
            shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
            logger.warning("sweep found {} alarm(s) the stream had not delivered "
                           "(process ids {})", len(ids), shown)
            self.observers.happened(Happening.SWEEP_CAUGHT,
                                    f"{len(ids)} alarm(s) the stream had not delivered", ids)
        return len(found)

    async def _sweep_loop(self) -> None:
        interval = self.config.monitor.check_interval
        backoff = Backoff(0.2, min(5.0, interval) if interval >= 0.2 else 0.2)
        while not self._stopping:
            try:
                await asyncio.wait_for(self._sweep_wanted.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._sweep_wanted.clear()
            catch_up, self._catching_up = self._catching_up, False
            if self._stopping:
                return
            try:
                await self.sweep(Source.SWEEP, catch_up=catch_up)
            except ReactorError as exc:
                delay = backoff.next()
                logger.log(_level(exc), "sweep failed: {}; retrying in {:.1f} s", exc, delay)
                await self._pause(delay)
                self.request_sweep(catch_up=catch_up)
                continue
            backoff.reset()
            if self.binlog is not None and self.binlog.connected and not self.ready.is_set():
                self.ready.set()

    async def _poll_loop(self) -> None:
        interval = self.config.monitor.check_interval
        backoff = Backoff(min(0.2, interval), max(min(5.0, interval), min(0.2, interval)))
        failing = False
        while not self._stopping:
            try:
                await self.sweep(Source.POLL)
            except ReactorError as exc:
                delay = backoff.next()
                if not failing:
                    logger.log(_level(exc), "poll failed: {}; retrying", exc)
                failing = True
                await self._pause(delay)
                continue
            if failing:
                logger.info("poll succeeded again")
            failing = False
            backoff.reset()
            self.ready.set()
            await self._pause(interval)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stop() is called."""
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def stop(self) -> None:
        """Stop intake: no new alarms after this returns (in-flight work is the caller's)."""
        self._stopping = True
        self._stop_event.set()
        self._sweep_wanted.set()
        if self.binlog is not None:
            self.binlog.stop()
