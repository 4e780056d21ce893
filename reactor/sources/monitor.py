"""The alarm sources for the chosen mode, feeding one Intake.

    binlog mode: BinlogSource (push) + sweep at start (without waiting for the stream:
                 alarms already set are handled even while it cannot connect), after
                 every (re)connect, every check_interval, at once when the stream shows
                 a change it cannot decode (a statement logged as SQL text, a compressed
                 event), within seconds after a failed name lookup or replay check
                 (backoff 0.2 s doubling to 5 s), and after a config reload
    poll mode:   a poll every check_interval (the same query as the sweep)

`ready` is set once the first source is connected and the first sweep or poll is done:
from then on no alarm can be missed. The start-up sweep runs alongside the stream's replay
from its checkpoint: an alarm still set may come from either, once.

A stream gap: in binlog mode the stream delivers every alarm, so one that a sweep finds
and the stream never delivered means a bug or a server setting the stream cannot read: a
WARNING with the count and the process ids, and a SWEEP_CAUGHT notice. Not for sweeps
that catch up after the stream was not reading (start, reconnect: INFO), nor for alarms
handed over again (failed cycles, refusals looked at again), nor for a stream that is only
behind: the sweep reads the server's position with its rows, and judges the alarms once
the stream has read that far (see gaps.py). An event the stream cannot decode is a WARNING
naming the setting (at most one a minute, with the count of the others) and an
EVENT_UNREADABLE notice; the sweep it asks for runs at once and again a second later (the
commit may become visible a moment after its binlog event).

When the server refuses the binlog dump for good (a grant revoked after the start-up
check): ERROR; mode=auto goes on polling, mode=binlog raises ServerNotSuitable.

Many hosts: with a `host` column in PROCESE (reactor/ownership.py) the sweep and the poll
select only this reactor's rows; the column is looked for at start, again after a schema
change of PROCESE goes by in the stream (before the next sweep, which runs at once), and
after a reload. The binlog may come from other servers than [database] ([binlog]): their
settings are checked at start (preflight.check_binlog_servers), rows are still read from
[database], and the sweep's position is then compared with the stream's by GTID.

Ownership: `run` owns the intake's lookups (Intake.run), the sweeps, the stream, and the
timers of delayed sweeps; after `stop` it returns once they are all ended.

Error handling: a failed sweep or poll is logged (a WARNING when the database is down, an
ERROR when it refuses: a grant or table missing) and retried with a capped backoff; a
refusal while priming at start is raised to the caller. The binlog source owns its own
reconnects (see binlog.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from loguru import logger

from reactor.config import Config
from reactor.errors import BinlogRefused, ReactorError, ServerNotSuitable, TransientError
from reactor.events import Condition, Happening, Observers, Source
from reactor.retry import Backoff
from reactor.sources.binlog import BinlogSource
from reactor.sources.gaps import GapJudge
from reactor.sources.intake import Intake
from reactor.sources.preflight import check_binlog_servers, choose_mode, inspect_server
from reactor.storage import queries
from reactor.storage.database import Database
from reactor.storage.positions import GtidState
from reactor.storage.statefile import Checkpoint, StateFile
from reactor.text import id_list

CONFIRM_DELAY = 1.0  # seconds to the second sweep after an undecodable change
UNREADABLE_QUIET = 60.0  # seconds between two WARNINGs about undecodable events


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
        self.owned = intake.owned  # whose rows (the intake's rule, shared)
        self._column_check = False  # PROCESE changed: look for its host column again
        # binlog servers the preflight found unsuitable are left out (None: not checked)
        self.binlog_servers = config.binlog_servers
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
        self.judge = GapJudge()
        self._stream_at: Checkpoint | None = None  # how far the stream has read
        self._retry = Backoff(0.2, 5.0)  # sweeps asked for by failed lookups
        self._retry_pending = False
        self._timers: set[asyncio.TimerHandle] = set()  # delayed sweeps, cancelled at stop
        self._unreadable_warned = -math.inf
        self._unreadable_quiet = 0  # undecodable events since the last WARNING
        intake.on_trouble = self._on_trouble
        intake.on_stream_alarm = self.judge.streamed

    async def choose_mode(self) -> str:
        """Inspect the server and pick binlog or poll. Raises ServerNotSuitable (mode=binlog)
        and DatabaseUnavailable/DatabaseRefused when the server cannot be asked."""
        configured = self.config.monitor.mode
        report = None
        try:
            await self.check_host_column()
        except TransientError as exc:  # down now: the first sweep asks, before anything
            logger.warning("cannot look for PROCESE's host column yet ({}); no alarm is "
                           "taken before it is known", exc)
        if configured != "poll":
            if self.config.binlog.separate(self.config.database):
                loop = asyncio.get_running_loop()
                report, self.binlog_servers = await loop.run_in_executor(
                    None, check_binlog_servers, self.config.binlog_servers,
                    self.config.binlog.gtid == "auto")
            else:
                report = await self.database.call(inspect_server)
            self.folds_case = report.folds_case
        self.mode = choose_mode(configured, report)
        if self.mode == "poll" and configured == "auto" and report is not None:
            self.observers.begin(Condition.POLLING, "binlog not usable: "
                                 + "; ".join(report.missing))
        return self.mode

    async def check_host_column(self) -> None:
        """Look for PROCESE's host column (start, a schema change, a reload); not for
        `reactor watch`, which acts on nothing and prints every alarm."""
        if not self.owned.host:
            return
        column = await self.database.call(queries.has_host_column)
        if column != self.owned.column or not self.owned.known:
            self.owned.column = column
            self.owned.known = True
            logger.info("acting on {}", self.owned.describe())

    def schema_changed(self) -> None:
        """A DDL on PROCESE went by in the stream: look for the column again, now."""
        self._column_check = True
        self.request_sweep()

    @property
    def position(self) -> Checkpoint | None:
        return self.binlog.position if self.binlog else None

    def request_sweep(self, *, catch_up: bool = False) -> None:
        """Sweep now. catch_up: after a time the stream was not reading, so that what the
        sweep finds is expected, not a gap in the stream."""
        self._catching_up = self._catching_up or catch_up
        self._sweep_wanted.set()

    async def run(self) -> None:
        """Run the sources until stop() (the caller owns this task). Raises what ends them
        otherwise (ServerNotSuitable, a refusal at start), once everything it owns ended."""
        if not self.mode:
            await self.choose_mode()
        failure: Exception | None = None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.intake.run(), name="intake")
            try:
                await self._sources()
            except Exception as exc:  # raised once the intake's lookups are ended too
                failure = exc
            finally:
                self.intake.close()
                self._cancel_timers()
        if failure is not None:
            raise failure

    async def _sources(self) -> None:
        if self.mode == "poll":
            logger.info("polling every {:g} s", self.config.monitor.check_interval)
            await self._poll_loop()
            return
        self.binlog = BinlogSource(
            self.binlog_servers, self.state,
            gtid=self.config.binlog.gtid == "auto",
            on_schema_change=self.schema_changed,
            folds_case=self.folds_case,
            observers=self.observers,
            on_batch=self.intake.on_batch,
            on_connected=self._on_connected,
            on_statement=self.request_sweep,
            on_progress=self._on_progress,
            on_unreadable=self._on_unreadable,
            on_position_lost=self._on_position_lost,
        )
        self.intake.on_safe = self.binlog.save
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
            await self._prime()  # the sweeps run meanwhile: a binlog server may be down
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
                status = await self.binlog.current_position()
                if self.binlog.position is None:
                    self.binlog.position = status
                else:  # resuming: what lies up to here happened while nobody read
                    self.intake.replay_until = status
                rows = await self.database.call(queries.fetch_processes, self.owned.column)
                self.intake.names.update({pid: name for pid, (name, _) in rows.items()})
                if self.owned.column:
                    self.intake.hosts.update({pid: host for pid, (_, host) in rows.items()})
                return
            except TransientError as exc:
                delay = backoff.next()
                logger.warning("database unavailable at start: {}; retrying in {:.1f} s",
                               exc, delay)
                await self._pause(delay)

    def _on_connected(self, position: Checkpoint | None) -> None:
        server = self.binlog.reading if self.binlog is not None else "-"
        where = position.describe() if position is not None else None
        if self._connected_once:
            logger.info("binlog stream reconnected at {} from {}; sweeping", where, server)
        else:
            logger.info("binlog stream connected at {} from {}", where, server)
        self._connected_once = True
        self.observers.end(Condition.STREAM_DOWN, f"binlog stream connected at {position}")
        self.request_sweep(catch_up=True)

    # ------------------------------------------------------------------ what the stream says

    def _on_progress(self, position: Checkpoint) -> None:
        """The stream has read (and handed over) everything up to `position`."""
        self._stream_at = position
        gaps = self.judge.progress(position)
        if gaps:
            self._gap(gaps, " once it had read as far as the sweep")

    def _on_unreadable(self, detail: str) -> None:
        """The stream met a change it cannot decode: sweep now, and once more a moment
        later; WARN (at most once a minute, counting the others)."""
        now = time.monotonic()
        if now - self._unreadable_warned >= UNREADABLE_QUIET:
            more = (f" ({self._unreadable_quiet} more since the last warning)"
                    if self._unreadable_quiet else "")
            logger.warning("binlog stream cannot read {}; sweeping now{}", detail, more)
            self.observers.happened(Happening.EVENT_UNREADABLE, detail)
            self._unreadable_warned, self._unreadable_quiet = now, 0
        else:
            self._unreadable_quiet += 1
        self.request_sweep()
        self._sweep_in(CONFIRM_DELAY, self.request_sweep)

    def _on_position_lost(self) -> None:
        """The stream starts over at the server's current position."""
        self._stream_at = None
        self.intake.replay_until = None
        self.intake.tracker.stream_restarted()
        unjudged = self.judge.forget()
        if unjudged:
            logger.info("{} alarm(s) a sweep found ahead of the stream cannot be checked "
                        "against it any more (process ids {})", len(unjudged), id_list(unjudged))

    def _gap(self, ids: list[int], when: str = "") -> None:
        # in binlog mode the stream delivers every alarm: a catch is a bug, or a server
        # setting the stream cannot read
        logger.warning("sweep found {} alarm(s) the stream had not delivered (process ids "
                       "{}){}", len(ids), id_list(ids), when)
        self.observers.happened(Happening.SWEEP_CAUGHT,
                                f"{len(ids)} alarm(s) the stream had not delivered", ids)

    # ------------------------------------------------------------------ sweeps

    def _on_trouble(self) -> None:
        """A name lookup or replay check failed: a sweep soon (the alarm was settled, so
        that the sweep hands it over again), with a backoff while that keeps happening."""
        if self._retry_pending or self._stopping:
            return
        self._retry_pending = True
        delay = self._retry.next()
        logger.info("sweeping in {:.1f} s for the alarm(s) not handed over", delay)

        def retry() -> None:
            self._retry_pending = False
            self.request_sweep()

        self._sweep_in(delay, retry)

    def _sweep_in(self, delay: float, then: Callable[[], None]) -> None:
        if self._stopping:
            return
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            then()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._retry_pending = False

    def reconfigured(self, config: Config) -> None:
        """A reloaded config (what may change live): used from the next sweep on, and
        refused alarms are looked at again by a sweep now."""
        self.config = config
        self._column_check = True  # a migration applied meanwhile is seen now
        waiting = self.intake.reconfigured()
        if waiting:
            logger.info("{} refused alarm(s) to look at again with the new config", waiting)
        self.request_sweep()

    async def sweep(self, source: Source = Source.SWEEP, *, catch_up: bool = True) -> int:
        """One sweep/poll: deliver every row in alarm that is not already in hand. In binlog
        mode, alarms new to a sweep that is not catching up are judged as a gap in the
        stream, or as the stream being behind (module docstring)."""
        started = self.intake.sweep_started()
        began = time.monotonic()
        streaming = self.binlog is not None and source is Source.SWEEP
        server_at: Checkpoint | None = None
        if self._column_check or (self.owned.host and not self.owned.known):
            self._column_check = False
            await self.check_host_column()
        # with the stream from another server, [database]'s file and offset are not
        # comparable with the stream's (the tracker and the gap judge compare offsets): not
        # read, and what the sweep finds is judged at once
        if streaming and not self.config.binlog.separate(self.config.database):
            assert self.binlog is not None
            rows, status = await self.database.call(queries.fetch_alarmed_at, self.owned,
                                                    self.binlog.use_gtid)
            server_at = Checkpoint(status[0], status[1],
                                   gtid=GtidState(status[2]) if status[2] else None) \
                if status else None
        else:
            rows = await self.database.call(queries.fetch_alarmed, self.owned)
        found = self.intake.on_sweep(rows, started, source, server_at)
        self.sweeps += 1
        self.sweep_seconds += time.monotonic() - began
        self.last_sweep_at = time.time()
        new = [pid for pid in found if pid not in self.intake.again]
        if not streaming or not new:
            return len(found)
        if catch_up:
            logger.info("sweep found {} alarm(s) set while the stream was not reading",
                        len(new))
            return len(found)
        gaps = self.judge.swept(new, server_at, self._stream_at)
        if gaps:
            self._gap(gaps)
        else:
            logger.debug("sweep found {} alarm(s) ahead of the stream (at {}, server at {}): "
                         "judged once it has read that far", len(new), self._stream_at,
                         server_at)
        return len(found)

    async def _sweep_loop(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while not self._stopping:
            interval = self.config.monitor.check_interval
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
                delay = min(backoff.next(), interval)
                logger.log(_level(exc), "sweep failed: {}; retrying in {:.1f} s", exc, delay)
                await self._pause(delay)
                self.request_sweep(catch_up=catch_up)
                continue
            backoff.reset()
            if not self._retry_pending:
                self._retry.reset()
            if self.binlog is not None and self.binlog.connected and not self.ready.is_set():
                self.ready.set()

    async def _poll_loop(self) -> None:
        backoff = Backoff(0.2, 5.0)
        failing = False
        while not self._stopping:
            interval = self.config.monitor.check_interval
            try:
                await self.sweep(Source.POLL)
            except ReactorError as exc:
                delay = min(backoff.next(), interval)
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
            try:  # the next poll: after check_interval, or at once when one is asked for
                await asyncio.wait_for(self._sweep_wanted.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._sweep_wanted.clear()

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
        self._cancel_timers()
        if self.binlog is not None:
            self.binlog.stop()
