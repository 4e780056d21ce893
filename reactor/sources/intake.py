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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from loguru import logger

from reactor.errors import ReactorError
from reactor.events import Alarm, RowChange, Source
from reactor.sources.detect import AlarmTracker
from reactor.storage import queries
from reactor.storage.database import Database
from reactor.storage.statefile import Checkpoint

Emit = Callable[[Alarm], None]


def _pid(change: RowChange) -> int | None:
    image = change.after if change.after is not None else change.before
    value = image.get("process_id") if image else None
    return value if isinstance(value, int) else None


class Intake:
    def __init__(self, emit: Emit, database: Database | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 verify_replay: bool = False) -> None:
        self.emit = emit
        self.database = database
        self.verify_replay = verify_replay
        self.replay_until: Checkpoint | None = None  # set when resuming from a checkpoint
        self.tracker = AlarmTracker(clock)
        self.names: dict[int, str] = {}
        self.delivered = 0
        self._lookups: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def _deliver(self, alarm: Alarm) -> None:
        """Emit, after looking the name up when the stream's cache lacks it."""
        if alarm.process_name is None and self.database is not None:
            self._spawn(self._resolve_then_emit(alarm))
            return
        self.delivered += 1
        self.emit(alarm)

    async def _verify_then_emit(self, alarm: Alarm) -> None:
        """A replayed alarm: emitted only while its row is still in alarm."""
        assert self.database is not None
        pid = alarm.process_id
        try:
            status = await self.database.call(queries.fetch_status, pid)
        except ReactorError as exc:
            logger.warning("cannot check replayed alarm of process {} ({}); left to the next "
                           "sweep", pid, exc)
            self.tracker.forget(pid)
            return
        if status is None or status[0] != 1:
            logger.info("alarm of process {} at {} was set while reactor was not reading and "
                        "is no longer set: not acted on", pid, alarm.position)
            self.tracker.forget(pid)
            return
        if status[1] is not None:
            self.names[pid] = status[1]
        self.delivered += 1
        self.emit(Alarm(pid, status[1], alarm.source, alarm.detected_at, alarm.detected_mono,
                        alarm.position))

    async def _resolve_then_emit(self, alarm: Alarm) -> None:
        assert self.database is not None
        try:
            name = await self.database.call(queries.fetch_name, alarm.process_id)
        except ReactorError as exc:
            # not delivered after all: the next sweep finds it (with its name, or none)
            logger.warning("cannot look up process {} ({}); left to the next sweep",
                           alarm.process_id, exc)
            self.tracker.forget(alarm.process_id)
            return
        if name is not None:
            self.names[alarm.process_id] = name
            alarm = Alarm(alarm.process_id, name, alarm.source, alarm.detected_at,
                          alarm.detected_mono, alarm.position)
        self.delivered += 1
        self.emit(alarm)

    # ------------------------------------------------------------------ stream

    def on_batch(self, changes: list[RowChange], checkpoint: Checkpoint) -> None:
        """One committed transaction's rows, in commit order."""
        position = str(checkpoint)
        replayed = False
        if self.replay_until is not None:
            replayed = (checkpoint.file, checkpoint.pos) <= (self.replay_until.file,
                                                             self.replay_until.pos)
            if not replayed:
                self.replay_until = None
        verify = replayed and self.verify_replay and self.database is not None
        for change in changes:
            pid = _pid(change)
            if pid is None:
                continue
            if change.table == "PROCESE":
                if change.after is None:
                    self.names.pop(pid, None)
                else:
                    name = change.after.get("process_name")
                    if isinstance(name, str):
                        self.names[pid] = name
            elif self.tracker.stream_change(pid, change.before, change.after):
                alarm = Alarm(pid, self.names.get(pid), Source.BINLOG, position=position)
                if verify:
                    self._spawn(self._verify_then_emit(alarm))
                else:
                    self._deliver(alarm)

    # ------------------------------------------------------------------ poll / sweep

    def sweep_started(self) -> float:
        return self.tracker.now()

    def on_sweep(self, rows: Iterable[tuple[int, str | None]], started: float,
                 source: Source) -> list[int]:
        """Rows found in alarm by a query that began at `started`; returns the process ids
        of the alarms delivered."""
        rows = list(rows)
        for pid, name in rows:
            if name is not None:
                self.names[pid] = name
        fresh = self.tracker.sweep((pid for pid, _ in rows), started)
        names = dict(rows)
        for pid in fresh:
            # the sweep's LEFT JOIN already answered: a None name is an unknown process
            self.delivered += 1
            self.emit(Alarm(pid, names[pid], source))
        return fresh

    def settle(self, pid: int) -> None:
        """The consumer is done with this process's alarm (see AlarmTracker.settle)."""
        self.tracker.settle(pid)
