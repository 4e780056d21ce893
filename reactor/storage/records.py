"""What the reactor writes to the database: alarm outcomes and the audit trail.

- clear(pid, note): alarma=0 and a note, only if the row is still in alarm;
- note(pid, note): a note, alarma untouched (failure, refusal, open breaker);
  both go through Outcomes (outcomes.py), which writes those of many cycles at once;
- audit(step): one REACTOR_AUDIT row per step of a cycle (the Store listens to the
  Observers fan-out), buffered and written in batches by `run()` (its `at` is the time of
  the step, not of the write). A quiet flow's rows wait AUDIT_FLUSH_INTERVAL to share a
  statement; in a burst (rows kept coming since the last write began) a write begins every
  AUDIT_BURST_INTERVAL, or as soon as AUDIT_BATCH rows wait: a storm's 5,000 rows are about
  20 statements, not 100 (each a commit, and a binlog event the stream reads back; in the
  storm benchmark this cuts MariaDB's CPU beside systemd by a third).

Ownership: with a `host` column in PROCESE, the clear and the note of a row whose host is
no longer this reactor's (moved while its cycle ran) change nothing: both statements carry
the condition of reactor/ownership.py (outcomes.owned_sql, one fragment for every write
of STATUS_PROCESS).

Error handling: clear/note retry transient errors (database down, a row lock held past
the lock wait timeout) with a capped backoff for up to RECORD_RETRY_FOR seconds, then give
up with an ERROR (the alarm stays set; the pipeline keeps retrying a clear in the
background, and a later sweep brings back a failure). Audit rows wait in memory while the
database is down, up to AUDIT_BUFFER_MAX rows (then the oldest are dropped, with an ERROR).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time

import pymysql.cursors
from loguru import logger

from reactor.errors import ReactorError, TransientError
from reactor.events import Condition, Notice, Step
from reactor.ownership import Ownership
from reactor.retry import Backoff
from reactor.storage.database import Database
from reactor.storage.gathering import Gathering
from reactor.storage.outcomes import Outcomes
from reactor.text import one_line

DETAIL_MAX = 255
RECORD_RETRY_FOR = 30.0
AUDIT_BUFFER_MAX = 100_000
# audit rows waiting above which new cycles wait (Store.room) while the database is up: a
# storm must not run ahead of its own audit trail, nor fill memory with it
AUDIT_HIGH_WATER = 5_000
AUDIT_FLUSH_INTERVAL = 0.05  # s the rows of a quiet flow wait for company
AUDIT_BURST_INTERVAL = 0.25  # s between the starts of two writes in a burst
AUDIT_BATCH = 1_000  # rows waiting that are written without waiting more
HOST = socket.gethostname()[:64]

AUDIT_SQL = ("INSERT INTO REACTOR_AUDIT (at, host, cycle, process_id, process_name, unit, step, "
             "source, latency_ms, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def audit_params(row: Step, host: str = HOST) -> tuple[object, ...]:
    """A step as the parameters of AUDIT_SQL (`host`: the reactor's [monitor] host)."""
    return (dt.datetime.fromtimestamp(row.at), host[:64], row.cycle, row.process_id,
            (row.process_name or "")[:100] or None, row.unit, row.step, row.source,
            None if row.latency_ms is None else round(row.latency_ms, 3),
            one_line(row.detail, DETAIL_MAX))


def _insert_audit(cur: pymysql.cursors.Cursor, rows: list[tuple[object, ...]]) -> None:
    cur.executemany(AUDIT_SQL, rows)


class Store:
    def __init__(self, database: Database, owned: Ownership | None = None) -> None:
        self.database = database
        self.owned = owned  # the rows this reactor may write (None: all)
        self.outcomes = Outcomes(database, owned)  # clears and notes, many cycles at once
        self._rows: list[Step] = []
        self._signal = Gathering()  # audit rows buffered -> the writer (_audit_loop)
        self._written = asyncio.Event()  # set after each flush (rows written or not)
        self._stopping = False
        self.audit_writes = 0  # audit statements sent (written or not)

    async def _record(self, pid: int, note: str, clear: bool, what: str) -> bool | None:
        """The write's answer, or None when the database stayed unavailable (given up)."""
        backoff = Backoff(0.1, 2.0)
        deadline = time.monotonic() + RECORD_RETRY_FOR
        while True:
            try:
                return await self.outcomes.write(pid, note, clear=clear)
            except TransientError as exc:
                if time.monotonic() >= deadline or self._stopping:
                    logger.error("could not {} for process {} ({}); the alarm stays set",
                                 what, pid, exc)
                    return None
                delay = backoff.next()
                logger.warning("cannot {} for process {} yet ({}); retrying in {:.1f} s",
                               what, pid, exc, delay)
                await asyncio.sleep(delay)

    async def clear(self, pid: int, note: str) -> bool | None:
        """alarma=0 + note when still in alarm: True; False when it was not in alarm;
        None when the database stayed unavailable."""
        return await self._record(pid, note, True, "clear the alarm")

    async def note(self, pid: int, note: str) -> bool | None:
        return await self._record(pid, note, False, "write the note")

    async def clear_many(self, items: list[tuple[int, str]]) -> dict[int, bool | None]:
        """One try of clear() for each (pid, note), batched: True cleared, False not in
        alarm, None not written (database unavailable, row locked). Raises a permanent
        ReactorError (grant or table missing)."""
        return await self.outcomes.write_many(items, clear=True)

    async def room(self) -> None:
        """Until the audit rows waiting are under AUDIT_HIGH_WATER, or the database is
        down (then they wait in memory, up to AUDIT_BUFFER_MAX, and cycles go on: restarts
        must not stop because the audit trail cannot be written)."""
        while len(self._rows) > AUDIT_HIGH_WATER and not self._stopping and \
                Condition.DATABASE_DOWN not in self.database.observers.active:
            self._written.clear()
            await self._written.wait()

    # an Observer of the fan-out: every step becomes an audit row
    def on_step(self, step: Step) -> None:
        self.audit(step)

    def on_notice(self, notice: Notice) -> None:
        pass  # notices are reactor's own state, not a process's: the log has them

    def audit(self, row: Step) -> None:
        self._rows.append(row)
        if len(self._rows) > AUDIT_BUFFER_MAX:
            dropped = len(self._rows) - AUDIT_BUFFER_MAX
            del self._rows[:dropped]
            logger.error("audit buffer full while the database is unavailable: dropped {} "
                         "oldest row(s)", dropped)
        self._signal.arrived(len(self._rows) >= AUDIT_BATCH)

    async def flush(self) -> bool:
        """Write every buffered audit row; False (rows kept) when the database is down."""
        try:
            return await self._flush()
        finally:
            self._written.set()

    async def _flush(self) -> bool:
        if not self._rows:
            return True
        rows, self._rows = self._rows, []
        self.audit_writes += 1
        try:
            host = self.owned.host if self.owned is not None and self.owned.host else HOST
            await self.database.call(_insert_audit, [audit_params(r, host) for r in rows])
        except TransientError as exc:
            self._rows[:0] = rows
            logger.warning("audit rows not written yet ({}): {} waiting", exc, len(self._rows))
            return False
        except ReactorError as exc:  # refused: table or grant missing; retrying cannot help
            logger.error("{} audit row(s) dropped: {} (see sql/setup.sql, sql/grants.sql)",
                         len(rows), exc)
            return True
        return True

    async def run(self) -> None:
        """Write outcomes and audit rows, in batches, until stop(); a final flush of the
        audit rows is the caller's."""
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.outcomes.run(), name="outcomes")
            try:
                await self._audit_loop()
            finally:
                writer.cancel()

    async def _audit_loop(self) -> None:
        backoff = Backoff(0.2, 5.0)
        loop = asyncio.get_running_loop()
        last = -AUDIT_BURST_INTERVAL  # loop time the last write began
        while not self._stopping:
            await self._signal.arrival()
            now = loop.time()
            burst = now - last < AUDIT_BURST_INTERVAL  # rows again soon after the last write
            await self._gather(last + AUDIT_BURST_INTERVAL if burst
                               else now + AUDIT_FLUSH_INTERVAL)
            last = loop.time()
            if await self.flush():
                backoff.reset()
            else:
                await asyncio.sleep(backoff.next())
                self._signal.arrived()

    async def _gather(self, until: float) -> None:
        """Wait until loop time `until`, AUDIT_BATCH rows, or stop()."""
        if len(self._rows) < AUDIT_BATCH and not self._stopping and \
                until > asyncio.get_running_loop().time():
            await self._signal.until(until)

    def stop(self) -> None:
        self._stopping = True
        self._signal.arrived(complete=True)  # wakes the writer, gathering or not
        self._written.set()
