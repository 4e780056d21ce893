"""Intake: row changes (stream) and alarmed rows (poll, sweep) -> Alarms, each once, named.

Keeps the process-name cache: loaded at start, kept current by PROCESE row changes in the
stream (so a rename is seen in commit order, before any later alarm) and by every sweep.
An alarm whose id is not in the cache is looked up in PROCESE before it is delivered;
when PROCESE has no such id the alarm is delivered with process_name=None (unknown).

Replay: when the stream resumes from a checkpoint, the transactions up to the server's
position at start (`replay_until`) happened while no reactor was reading. With
`verify_replay` (the daemon), an alarm among them is delivered only if its row is still in
alarm now: one set and reset while reactor was stopped, or one a crashed reactor had
already handled but not yet checkpointed, restarts nothing. `reactor watch` shows them
all: it reports what happened.

Checkpoints: a stream position is declared safe (`on_safe`) once every alarm of the
transactions up to it has been handed on: while a lookup or a replay check is in flight,
no later position is declared safe. `reactor watch --state-file` thus never checkpoints a
row it has not printed.

Refusals heal: an alarm the consumer refused (`refused(pid, name)`: unknown id, invalid
name, unit not allowed) is left alone by later sweeps while nothing it was judged on has
changed, and looked at again when its PROCESE row changes in the stream, when a sweep
reads another name for it, or after the config was reloaded (`reconfigured`). So a refused
alarm heals without anyone touching `alarma`, and an unchanged refusal does not rewrite its
note and audit rows at every sweep.

Ownership (many hosts, one database: reactor/ownership.py): with a `host` column in
PROCESE, an alarm of a row this reactor does not own is dropped here, before the pipeline
(no step, no audit row, no note, no clear). The host of each process comes with its name:
loaded at start, kept current by PROCESE row changes in the stream, and read with every
lookup and replay check. A row whose host changes to this reactor's while its alarm is set
is taken at once (like a refusal that heals).

Lookups and replay checks are tasks of the intake's own TaskGroup (`run`, until `close`).

Error handling: a lookup or replay check that fails (database down or refusing) is logged
(WARNING), the alarm is settled (a sweep delivers it again if it is still set) and
`on_trouble` asks the caller for a prompt sweep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from loguru import logger

from reactor.errors import ReactorError
from reactor.events import Alarm, NameChange, RowChange, Source
from reactor.ownership import Ownership
from reactor.sources.detect import AlarmTracker, is_alarm, is_clear
from reactor.storage import queries
from reactor.storage.database import Database
from reactor.storage.statefile import Checkpoint
from reactor.text import id_list

Emit = Callable[[Alarm], None]


def _processes(pids: list[int]) -> str:
    """`process 7`, or `processes 7, 9, ...` (20 ids at most)."""
    if len(pids) == 1:
        return f"process {pids[0]}"
    return "processes " + id_list(pids)


class Intake:
    def __init__(self, emit: Emit, database: Database | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 verify_replay: bool = False, owned: Ownership | None = None) -> None:
        self.emit = emit
        self.database = database
        # whose alarms to take (None: every one, as `reactor watch` prints them all)
        self.owned = owned if owned is not None else Ownership("", column=False)
        self.hosts: dict[int, str | None] = {}  # PROCESE.host per process (with the column)
        self.verify_replay = verify_replay
        self.replay_until: Checkpoint | None = None  # set when resuming from a checkpoint
        self.tracker = AlarmTracker(clock)
        self.names: dict[int, str] = {}
        self.delivered = 0
        # hooks the owner sets: a position is safe to checkpoint; a lookup failed (sweep
        # soon); the stream showed a 0 -> 1 (delivered or not)
        self.on_safe: Callable[[Checkpoint], None] = lambda cp: None
        # the emitted alarms are out of the consumer's buffers (`reactor watch` flushes its
        # output once per transaction, before that transaction's position is safe)
        self.on_emitted: Callable[[], None] = lambda: None
        self.on_trouble: Callable[[], None] = lambda: None
        self.on_stream_alarm: Callable[[int], None] = lambda pid: None
        self.generation = 0  # of the config the consumer judges with
        self._refused: dict[int, tuple[str | None, int]] = {}  # pid -> (name, generation)
        self._tg: asyncio.TaskGroup | None = None
        self._closed = asyncio.Event()
        self._lookups: set[asyncio.Task[None]] = set()
        self._latest: Checkpoint | None = None  # the last boundary handed in

    # ------------------------------------------------------------------ ownership

    async def run(self) -> None:
        """Own the lookups until close(); those still in flight then are cancelled (their
        alarms stay set; the next start finds them)."""
        self._closed.clear()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await self._closed.wait()
            finally:
                self._tg = None
                for task in list(self._lookups):
                    task.cancel()

    def close(self) -> None:
        self._closed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], pids: list[int]) -> None:
        """Run a lookup of these alarms (one task for a whole transaction's)."""
        if self._tg is None:  # not running (stopping): a sweep finds them while they are set
            coro.close()
            for pid in pids:
                self.tracker.settle(pid)
            return
        task = self._tg.create_task(self._held(coro, pids), name=f"lookup-{pids[0]}")
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _held(self, coro: Coroutine[Any, Any, None], pids: list[int]) -> None:
        """One lookup; positions are safe again once none is in flight. A cancelled one
        (stopping) declares nothing: its alarms were not handed on."""
        try:
            await coro
        except Exception:  # a bug: the alarms stay set for a sweep, the intake goes on
            logger.exception("handing on the alarm of {} failed", _processes(pids))
            for pid in pids:
                self.tracker.settle(pid)
        task = asyncio.current_task()
        if task is not None:
            self._lookups.discard(task)
        if not self._lookups and self._latest is not None:
            self.on_emitted()
            self.on_safe(self._latest)

    # ------------------------------------------------------------------ delivery

    def _mine(self, pid: int, host: str | None) -> bool:
        """Whether this reactor owns the row; an alarm it does not own is let go here (a
        row that moves to this host later is taken then: _name_changed)."""
        if self.owned.owns(host):
            return True
        self.tracker.forget(pid)
        logger.debug("alarm of process {} is for host {}: not ours", pid, host)
        return False

    def _failed(self, pids: list[int], doing: str, exc: ReactorError) -> None:
        logger.warning("cannot {} ({}); sweeping again shortly", doing, exc)
        for pid in pids:
            self.tracker.settle(pid)  # a sweep delivers it again while it is set
        self.on_trouble()

    async def _verify_then_emit(self, alarms: list[Alarm], *, replayed: bool = True) -> None:
        """Replayed or re-examined alarms (one query for them all): each emitted only while
        its row is still in alarm and this reactor's, with the name PROCESE has now."""
        assert self.database is not None
        pids = [a.process_id for a in alarms]
        try:
            statuses = await self.database.call(queries.fetch_statuses, pids,
                                                self.owned.column)
        except ReactorError as exc:
            self._failed(pids, f"check the alarm of {_processes(pids)}", exc)
            return
        for alarm in alarms:
            pid = alarm.process_id
            status = statuses.get(pid)
            if status is not None and self.owned.column:
                self.hosts[pid] = status[2]
            if status is not None and status[0] == 1 and not self._mine(pid, status[2]):
                continue
            if status is None or status[0] != 1:
                if replayed:
                    logger.info("alarm of process {} at {} was set while reactor was not "
                                "reading and is no longer set: not acted on", pid,
                                alarm.position)
                else:
                    logger.info("alarm of process {} looked at again is no longer set", pid)
                self.tracker.forget(pid)
                continue
            if status[1] is not None:
                self.names[pid] = status[1]
            self.delivered += 1
            self.emit(Alarm(pid, status[1], alarm.source, alarm.detected_at,
                            alarm.detected_mono, alarm.position))

    async def _resolve_then_emit(self, alarms: list[Alarm]) -> None:
        """Alarms whose name (or host) the cache lacks: looked up in PROCESE (one query),
        then emitted if this reactor's."""
        assert self.database is not None
        pids = [a.process_id for a in alarms]
        try:
            rows = await self.database.call(queries.fetch_processes_of, pids,
                                            self.owned.column)
        except ReactorError as exc:
            self._failed(pids, f"look up {_processes(pids)}", exc)
            return
        for alarm in alarms:
            pid = alarm.process_id
            name, host = rows.get(pid, (None, None))
            if self.owned.column:
                self.hosts[pid] = host
            if not self._mine(pid, host):
                continue
            if name is not None:
                self.names[pid] = name
                alarm = Alarm(pid, name, alarm.source, alarm.detected_at, alarm.detected_mono,
                              alarm.position)
            self.delivered += 1
            self.emit(alarm)

    # ------------------------------------------------------------------ stream

    def on_batch(self, changes: list[RowChange], checkpoint: Checkpoint) -> None:
        """One committed transaction's rows, in commit order (or only its boundary). Its
        alarms are detected together, at its commit's arrival: they share one timestamp."""
        position = str(checkpoint)
        replayed = False
        if self.replay_until is not None:
            replayed = checkpoint.key() <= self.replay_until.key()
            if not replayed:
                self.replay_until = None
        verify = replayed and self.verify_replay and self.database is not None
        at, mono, at_key = time.time(), time.monotonic(), checkpoint.key()
        stream_change = self.tracker.stream_change
        names, hosts, column = self.names, self.hosts, self.owned.column
        check: list[Alarm] = []  # replayed: handed on if still in alarm (one query for all)
        unnamed: list[Alarm] = []  # name or host not cached: looked up (one query for all)
        for change in changes:
            if isinstance(change, NameChange):
                self._name_changed(change, position)
                continue
            pid = change.pid
            if is_alarm(change.before, change.after):
                self.on_stream_alarm(pid)
            elif is_clear(change.before, change.after):
                self._refused.pop(pid, None)
            if stream_change(pid, change.before, change.after, at_key):
                self._refused.pop(pid, None)
                alarm = Alarm(pid, names.get(pid), Source.BINLOG, at, mono, position)
                if verify:
                    check.append(alarm)
                elif self.database is not None and (
                        alarm.process_name is None or (column and pid not in hosts)):
                    unnamed.append(alarm)
                elif self._mine(pid, hosts.get(pid)):
                    self.delivered += 1
                    self.emit(alarm)
        if check:
            self._spawn(self._verify_then_emit(check), [a.process_id for a in check])
        if unnamed:
            self._spawn(self._resolve_then_emit(unnamed), [a.process_id for a in unnamed])
        self._latest = checkpoint
        self.on_emitted()
        if not self._lookups:
            self.on_safe(checkpoint)

    def _name_changed(self, change: NameChange, position: str) -> None:
        pid, name, host = change.pid, change.name, change.host
        was_mine = self.owned.owns(self.hosts.get(pid))
        if name is None:  # the row was deleted
            self.names.pop(pid, None)
            self.hosts.pop(pid, None)
        else:
            self.names[pid] = name
            self.hosts[pid] = host
            if self.owned.column and not was_mine and self.owned.owns(host) \
                    and self.tracker.take(pid):
                # moved to this host: its alarm, if set, is ours now
                logger.info("process {} moved to this host ({}): its alarm, if set, is taken",
                            pid, host)
                self._spawn(self._verify_then_emit(
                    [Alarm(pid, name, Source.BINLOG, position=position)], replayed=False),
                    [pid])
                return
        refusal = self._refused.get(pid)
        if refusal is not None and refusal[0] != name and self.tracker.redeliver(pid):
            # a refused alarm whose row changed: looked at again, if it is still set
            del self._refused[pid]
            logger.info("PROCESE row of process {} changed: its refused alarm is looked at "
                        "again", pid)
            self._spawn(self._verify_then_emit(
                [Alarm(pid, name, Source.BINLOG, position=position)], replayed=False), [pid])

    # ------------------------------------------------------------------ poll / sweep

    def sweep_started(self) -> float:
        return self.tracker.now()

    @property
    def again(self) -> set[int]:
        """Of the last sweep's deliveries, those that were retries (a failed cycle, a
        failed lookup, a refusal looked at again), not alarms new to it."""
        return self.tracker.again

    def on_sweep(self, rows: Iterable[tuple[int, str | None]], started: float,
                 source: Source, server_at: Checkpoint | None = None) -> list[int]:
        """Rows found in alarm by a query that began at `started` (and the server's binlog
        position read after them, if known); returns the process ids of the alarms
        delivered."""
        rows = list(rows)
        for pid, name in rows:
            if name is not None:
                self.names[pid] = name
        names = dict(rows)
        for pid in [p for p in self._refused if p not in names]:
            del self._refused[pid]  # no longer in alarm
        fresh = self.tracker.sweep(
            names, started,
            hold=lambda pid: self._refused.get(pid) == (names[pid], self.generation),
            seen_at=server_at.key() if server_at is not None else None)
        for pid in fresh:
            self._refused.pop(pid, None)
            # the sweep's LEFT JOIN already answered: a None name is an unknown process
            self.delivered += 1
            self.emit(Alarm(pid, names[pid], source))
        return fresh

    # ------------------------------------------------------------------ the consumer's word

    def settle(self, pid: int) -> None:
        """The consumer is done with this process's alarm (see AlarmTracker.settle)."""
        self._refused.pop(pid, None)
        self.tracker.settle(pid)

    def refused(self, pid: int, name: str | None) -> None:
        """The consumer refused this alarm, judging `name` with the current config: left
        alone until the row or the config changes."""
        self._refused[pid] = (name, self.generation)
        self.tracker.settle(pid)

    def reconfigured(self) -> int:
        """The consumer judges with a new config: refusals are looked at again by the next
        sweep. Returns how many are waiting for it."""
        self.generation += 1
        return len(self._refused)
