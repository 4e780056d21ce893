"""The outcome of each cycle in STATUS_PROCESS: clears and notes of many cycles per statement.

A storm ends hundreds of cycles a second; one UPDATE each would cost the database (and the
reactor's PyMySQL threads) a round trip per cycle. Cycles call `Outcomes.write(pid, note,
clear)` and wait; a writer (`run`, owned by the Store) takes every request waiting, up to
BATCH_MAX, and writes them in one transaction:

    SELECT process_id, alarma ... FORCE INDEX (PRIMARY) WHERE process_id IN (...)
        FOR UPDATE SKIP LOCKED                          -- lock them, but never wait for one
    SELECT process_id FROM STATUS_PROCESS WHERE process_id IN (...)
        -- only when some were not locked: which of those exist (locked by another session)
    UPDATE ... SET alarma = 0, notes = CASE process_id WHEN ... END
        WHERE process_id IN (clears still in alarm)     -- cleared, each with its own note
    UPDATE ... SET notes = CASE ... END WHERE process_id IN (notes)
    COMMIT

Each alarm keeps its semantics: cleared only if still set, with its own note, and its
cycle told whether it was. A request goes out at once, unless the writes are a burst (the
last two began less than 1.5 x SPACING apart): then it waits until SPACING after the last
one, or until GATHER requests are queued, and the batch is whatever queued meanwhile. So
one alarm's clear, or two close together, are never delayed, nor the last ones of a storm
(when every running cycle is waiting for its write: `writers`); a storm's 200 cycles ending
per second make batches of about 20, not 200 transactions (each one a commit, a binlog
event the stream reads back, and a round trip through a pool thread: in the storm
benchmark, this halves the CPU the reactor and MariaDB spend beside systemd, which
restarts faster for it); and a storm of refusals, which systemd does not pace, is written
as fast as the database takes it. A batch of one is one statement that does not wait for
a row lock (MariaDB's `SET STATEMENT innodb_lock_wait_timeout = 0 FOR ...`).

A row another session holds locked (an operator's open transaction) is skipped by the
batch, which never waits: that one request is written by its own cycle, alone, with the
statement of one process, which waits for the lock (up to the session's lock wait) and
raises RowLocked when it is not released; the cycle retries as for any transient error.

Error handling: a batch that fails (the database gone) fails every request in it with
that error; each cycle retries as it would a single statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pymysql.cursors

from reactor.errors import DatabaseRefused, DatabaseUnavailable, ReactorError, TransientError
from reactor.ownership import Ownership
from reactor.storage.database import LOCK_CODES, Database
from reactor.storage.gathering import Gathering
from reactor.text import one_line

NOTE_MAX = 100  # STATUS_PROCESS.notes is VARCHAR(100)
BATCH_MAX = 500  # requests per transaction (an IN list and a CASE of that many)
SPACING = 0.1  # s between the starts of writes in a burst (module docstring)
GATHER = 100  # requests queued that make a batch worth writing without waiting more
# by primary key only: a scan of the table (the optimizer's choice for a long IN list on a
# small table) would wait for the lock of a row it does not even update
BY_KEY = "FORCE INDEX (PRIMARY)"

CLEAR_SQL = ("UPDATE STATUS_PROCESS SET alarma = 0, notes = %s "
             "WHERE process_id = %s AND alarma = 1")
NOTE_SQL = "UPDATE STATUS_PROCESS SET notes = %s WHERE process_id = %s"
# PROCESE.host of the STATUS_PROCESS row being written (NULL when PROCESE lacks the id)
ROW_HOST_SQL = ("(SELECT p.host FROM PROCESE p "
                "WHERE p.process_id = STATUS_PROCESS.process_id)")


def owned_sql(owned: Ownership | None) -> tuple[str, tuple[object, ...]]:
    """The condition every write of STATUS_PROCESS adds: the row is this reactor's
    ("" without a host column: the seed schema's statements, unchanged)."""
    return owned.where(ROW_HOST_SQL) if owned is not None else ("", ())


@dataclass(eq=False)
class _Request:
    pid: int
    note: str
    clear: bool
    # True/False: written (a clear: whether the alarm was still set); None: the row is
    # locked by another session, the caller writes it alone
    done: asyncio.Future[bool | None] = field(repr=False)


def _ids(n: int) -> str:
    return ", ".join(["%s"] * n)


def _case(rows: list[_Request]) -> tuple[str, list[object]]:
    """`CASE process_id WHEN %s THEN %s ... END` and its parameters: each row's note."""
    sql = "CASE process_id " + " ".join(["WHEN %s THEN %s"] * len(rows)) + " END"
    params: list[object] = []
    for r in rows:
        params += [r.pid, one_line(r.note, NOTE_MAX)]
    return sql, params


def write_batch(cur: pymysql.cursors.Cursor, requests: list[_Request],
                owned: Ownership | None = None) -> tuple[set[int], set[int]]:
    """One transaction for `requests` (at most one per process): the processes whose alarm
    it cleared, and those whose row another session holds locked (not written). A row that
    is not this reactor's (`owned`) is left alone, as if it did not exist. Run in a pool
    thread."""
    ids = [r.pid for r in requests]
    cond, params = owned_sql(owned)
    conn = cur.connection
    conn.begin()
    try:
        cur.execute(f"SELECT process_id, alarma FROM STATUS_PROCESS {BY_KEY} WHERE process_id "
                    f"IN ({_ids(len(ids))}){cond} FOR UPDATE SKIP LOCKED", [*ids, *params])
        mine = {int(pid): int(alarma) for pid, alarma in cur.fetchall()}
        locked: set[int] = set()
        if len(mine) < len(ids):  # missing, not ours, or locked by another session: which?
            cur.execute(f"SELECT process_id FROM STATUS_PROCESS WHERE process_id IN "
                        f"({_ids(len(ids))}){cond}", [*ids, *params])
            locked = {int(pid) for (pid,) in cur.fetchall()} - mine.keys()
        clears = [r for r in requests if r.clear and mine.get(r.pid) == 1]
        notes = [r for r in requests if not r.clear and r.pid in mine]
        if clears:
            case, values = _case(clears)
            cur.execute(f"UPDATE STATUS_PROCESS {BY_KEY} SET alarma = 0, notes = {case} "
                        f"WHERE process_id IN ({_ids(len(clears))})",
                        values + [r.pid for r in clears])
        if notes:
            case, values = _case(notes)
            cur.execute(f"UPDATE STATUS_PROCESS {BY_KEY} SET notes = {case} "
                        f"WHERE process_id IN ({_ids(len(notes))})",
                        values + [r.pid for r in notes])
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is already gone
            pass
        raise
    return {r.pid for r in clears}, locked


def write_one_nowait(cur: pymysql.cursors.Cursor, request: _Request,
                     owned: Ownership | None = None) -> bool | None:
    """A batch of one, in one statement (autocommit) that does not wait for a row lock
    (MariaDB's per-statement lock wait of 0): the answer, or None when another session
    holds the row. Most batches of a steady flow of cycles are one cycle's."""
    sql = CLEAR_SQL if request.clear else NOTE_SQL
    cond, params = owned_sql(owned)
    try:
        changed = cur.execute(f"SET STATEMENT innodb_lock_wait_timeout = 0 FOR {sql}{cond}",
                              (one_line(request.note, NOTE_MAX), request.pid, *params))
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in LOCK_CODES:
            return None
        raise
    return bool(changed) if request.clear else True


def write_one(cur: pymysql.cursors.Cursor, pid: int, note: str, clear: bool,
              owned: Ownership | None = None) -> bool:
    """One process's outcome in one statement (autocommit), waiting for a row lock."""
    cond, params = owned_sql(owned)
    if clear:
        return bool(cur.execute(CLEAR_SQL + cond, (one_line(note, NOTE_MAX), pid, *params)))
    cur.execute(NOTE_SQL + cond, (one_line(note, NOTE_MAX), pid, *params))
    return True


class Outcomes:
    """Clears and notes, batched (see module docstring). `run()` must be running for
    `write()` to return."""

    def __init__(self, database: Database, owned: Ownership | None = None) -> None:
        self.database = database
        self.owned = owned  # the rows this reactor may write (None: all)
        self._queue: list[_Request] = []
        self._signal = Gathering()  # requests queued -> the writer (run)
        self._stopped = False  # run() has ended: nothing would write a request any more
        self._nowait = True  # the server takes MariaDB's SET STATEMENT (MySQL does not)
        self.batches = 0  # transactions written (the benchmark counts statements)
        self.spaced = 0  # writes that waited for a burst's batch to gather
        # how many cycles are running (the pipeline sets it): when all of them wait for
        # their write, nothing more is coming soon and a burst's batch need not wait
        self.writers: Callable[[], int] | None = None

    async def write(self, pid: int, note: str, *, clear: bool) -> bool:
        """Write one outcome: the note, and alarma = 0 when `clear` and it is still 1. True
        when written (for a clear: when the alarm was still set). Raises what the database
        raised (TransientError, ReactorError)."""
        if self._stopped:
            raise DatabaseUnavailable("reactor is stopping: outcome not written")
        done: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(pid, note, clear, done))
        self._signal.arrived(self._gathered())
        written = await done
        if written is None:  # locked by another session: alone, waiting for the lock
            return bool(await self.database.call(write_one, pid, note, clear, self.owned))
        return written

    async def write_many(self, items: list[tuple[int, str]], *,
                         clear: bool) -> dict[int, bool | None]:
        """One try each, in as few batches as they fit in: per process, True (written; a
        clear: the alarm was still set), False (a clear: it was not), or None (not written:
        the database unavailable, or the row locked by another session). Raises a
        permanent ReactorError (a grant or the table missing) after every answer is in."""
        if self._stopped:
            raise DatabaseUnavailable("reactor is stopping: outcome not written")
        loop = asyncio.get_running_loop()
        requests = [_Request(pid, note, clear, loop.create_future()) for pid, note in items]
        self._queue.extend(requests)
        self._signal.arrived(self._gathered())
        answers: dict[int, bool | None] = {}
        refused: ReactorError | None = None
        for request in requests:
            try:
                answers[request.pid] = await request.done
            except TransientError:
                answers[request.pid] = None
            except ReactorError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        return answers

    async def run(self) -> None:
        """Write what is queued, batch after batch, until cancelled; then every request
        still waiting fails (DatabaseUnavailable: its cycle treats it as the database
        being away while reactor stops)."""
        batch: list[_Request] = []
        loop = asyncio.get_running_loop()
        before = last = -2 * SPACING  # the starts of the last two writes (loop time)
        try:
            while True:
                await self._signal.arrival()
                while self._queue:
                    if last - before < 1.5 * SPACING:  # a burst: let the batch gather
                        await self._gather(last + SPACING)
                    before, last = last, loop.time()
                    batch = self._take()
                    await self._write(batch)
        finally:
            self._stopped = True
            stopped = DatabaseUnavailable("reactor is stopping: outcome not written")
            for request in (*batch, *self._queue):
                if not request.done.done():
                    request.done.set_exception(stopped)
            self._queue = []

    def _gathered(self) -> bool:
        """GATHER requests are queued, or every running cycle's is."""
        queued = len(self._queue)
        return queued >= GATHER or (self.writers is not None and queued >= self.writers())

    async def _gather(self, until: float) -> None:
        """Wait until loop time `until`, or until the batch is gathered."""
        loop = asyncio.get_running_loop()
        if self._gathered() or until <= loop.time():
            return
        self.spaced += 1
        await self._signal.until(until)

    def _take(self) -> list[_Request]:
        """The next batch: at most BATCH_MAX requests, one per process (a second one for
        the same process waits for the next batch)."""
        batch: list[_Request] = []
        later: list[_Request] = []
        seen: set[int] = set()
        for request in self._queue:
            if request.done.done():  # its cycle was cancelled meanwhile
                continue
            if request.pid in seen or len(batch) >= BATCH_MAX:
                later.append(request)
            else:
                batch.append(request)
                seen.add(request.pid)
        self._queue = later
        return batch

    async def _write(self, batch: list[_Request]) -> None:
        if not batch:
            return
        try:
            if len(batch) == 1 and self._nowait:
                try:
                    answer = await self.database.call(write_one_nowait, batch[0], self.owned)
                except DatabaseRefused as exc:
                    if "error 1064" not in str(exc):  # not MariaDB's SET STATEMENT syntax
                        raise
                    self._nowait = False
                    cleared, locked = await self.database.call(write_batch, batch, self.owned)
                else:
                    cleared = {batch[0].pid} if answer and batch[0].clear else set()
                    locked = {batch[0].pid} if answer is None else set()
            else:
                cleared, locked = await self.database.call(write_batch, batch, self.owned)
        except ReactorError as exc:
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(exc)
            return
        self.batches += 1
        for request in batch:
            if request.done.done():
                continue
            if request.pid in locked:
                request.done.set_result(None)
            else:
                request.done.set_result(request.pid in cleared if request.clear else True)
