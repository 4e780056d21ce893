"""The binlog source: tails STATUS_PROCESS (alarms) and PROCESE (names) from the server's
binary log, pushed by the server the moment a transaction commits.

    reader thread (mysql-replication, blocking)      event loop
    rows of one transaction ... Xid  --batch-->      on_batch(changes, checkpoint)

A session (one replication connection) runs in a worker thread. Row changes are gathered
per transaction and handed to the event loop at the transaction's end (Xid), together with
the position after it; only such boundaries are checkpointed, because resuming inside a
transaction drops its remaining rows. The checkpoint is saved at once after a transaction
that touched STATUS_PROCESS and at most once a second otherwise.

The server sends a heartbeat every `[database] heartbeat` seconds; a connection silent for
2.5 heartbeats is dead (frozen or unreachable server), the session ends and `run` opens a
new one from the last boundary after a capped backoff.

Error handling: transient failures (server down, frozen, restarted) -> WARNING, reconnect
with backoff, then `on_connected` (the caller sweeps). Error 1236 (position purged or
impossible) -> ERROR, restart from the server's current position after the backoff (a 1236
that comes back is not a tight loop) and `on_connected`. Another reader with our server_id
(error 4052: the server drops the older stream) -> ERROR naming `[database] server_id`,
reconnect with backoff. The backoff starts again from its first step only after a session
lasted STABLE_SESSION seconds, so two readers that evict each other slow down. A dump the
server refuses for good (access denied: a grant missing) -> `run` raises BinlogRefused and
the caller decides (poll, or stop).
mysql-replication reconnects by itself once after a lost connection, from the last *event*
rather than the last transaction boundary; the connection factory below forbids that so
every reconnect goes through `run`.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable
from struct import error as StructError
from typing import Any

import pymysql
from loguru import logger
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    HeartbeatLogEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from reactor.config import DatabaseConfig
from reactor.errors import (
    BinlogPositionLost,
    BinlogRefused,
    DatabaseUnavailable,
    ReactorError,
)
from reactor.events import Condition, Happening, Observers, RowChange
from reactor.retry import Backoff
from reactor.storage.database import map_error
from reactor.storage.statefile import Checkpoint, StateFile

TABLES = ("STATUS_PROCESS", "PROCESE")
IDLE_SAVE_INTERVAL = 1.0  # seconds between checkpoint saves when no alarm table changed
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
CHANGE_EVENTS = (*ROW_EVENTS, XidEvent)  # events whose timestamp tells how far behind we read

Batch = Callable[[list[RowChange], Checkpoint], None]

STABLE_SESSION = 10.0  # seconds a session must last before the backoff starts over
DUPLICATE_ID = 4052  # MariaDB: a reader with the same server_id is already connected
# the server refuses the dump itself, and will go on refusing until an operator acts
REFUSED_HINTS = {
    1227: "GRANT {} ON *.* to the account (sql/grants.sql)",
    1045: "check [database] user and password",
    1698: "check [database] user and password",
    1044: "check the account's grants (sql/grants.sql)",
}
_NEEDED = re.compile(r"need \(at least one of\) the (.+?) privilege")


def _refusal(code: int, message: str) -> str:
    """The server's message and what to do about it, naming the grant (error 1227 names
    it: REPLICATION SLAVE for the dump, BINLOG MONITOR for the position)."""
    needed = _NEEDED.search(message)
    hint = REFUSED_HINTS[code].format(needed.group(1) if needed else "REPLICATION SLAVE")
    return f"{message} (error {code}); {hint}"


class _Stop(Exception):
    """The session was asked to stop."""


class _Reconnect(Exception):
    """mysql-replication tried to reconnect by itself; we reconnect from a boundary instead."""


class _Undecodable(DatabaseUnavailable):
    """An event could not be read (a library or protocol error, not the network)."""


class _DuplicateServerId(DatabaseUnavailable):
    """The server dropped the stream: another reader connected with the same server_id."""


UNDECODABLE_RETRIES = 3  # failures at one position before resyncing from the current one


class BinlogSource:
    """Owns the replication connection: sessions, reconnects, checkpoints.

    `on_batch` and `on_reconnect` are called in the event loop; `on_connected` too, once per
    session when the server has accepted the dump request.
    """

    def __init__(
        self,
        cfg: DatabaseConfig,
        state: StateFile,
        *,
        on_batch: Batch,
        on_connected: Callable[[Checkpoint | None], None],
        on_statement: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        folds_case: bool = False,
        observers: Observers | None = None,
    ) -> None:
        self.cfg = cfg
        self.observers = observers if observers is not None else Observers()
        # lower_case_table_names = 1: the server names schema and tables in lower case
        # in the binlog; rows are handed on under the names the rest of reactor uses
        self.folds_case = folds_case
        self.state = state
        self.on_batch = on_batch
        self.on_connected = on_connected
        self.on_statement = on_statement
        self.backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self.position: Checkpoint | None = state.checkpoint()
        self.connected = False
        self.last_event_at = 0.0  # monotonic time of the last packet (heartbeat included)
        # whole seconds between the last change's binlog timestamp (when its statement began
        # on the server) and its reading here; 0 again at a heartbeat, which the server sends
        # only when it has nothing left to send. None until a change or heartbeat was read.
        self.seconds_behind: float | None = None
        self.reconnects = 0  # sessions that ended in an error, each followed by a new one
        self.transactions = 0
        self._stopping = threading.Event()
        self._conn: pymysql.Connection | None = None
        self._conn_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # set by stop(): ends a backoff pause at once
        self._connected_at: float | None = None  # monotonic start of the current session

    # ------------------------------------------------------------------ event loop side

    async def run(self) -> None:
        """Run sessions until stop(); on a server failure it retries, except when the
        server refuses the dump for good (BinlogRefused is raised)."""
        self._loop = asyncio.get_running_loop()
        undecodable: tuple[Checkpoint | None, int] = (None, 0)  # position, failures there
        try:
            while not self._stopping.is_set():
                try:
                    await asyncio.shield(self._loop.run_in_executor(None, self._session))
                except asyncio.CancelledError:
                    self.stop()
                    raise
                except (BinlogPositionLost, DatabaseUnavailable, _Reconnect) as exc:
                    self.connected = False
                    if self._stopping.is_set():
                        break
                    self.reconnects += 1
                    lost = exc if isinstance(exc, BinlogPositionLost) else None
                    if isinstance(exc, _Undecodable):
                        where, count = undecodable
                        count = count + 1 if where == self.position else 1
                        undecodable = (self.position, count)
                        if count >= UNDECODABLE_RETRIES:
                            undecodable = (None, 0)
                            lost = BinlogPositionLost(str(exc))
                    delay = self._next_delay()
                    self.observers.begin(Condition.STREAM_DOWN,
                                         str(exc) or "server closed the connection")
                    if isinstance(exc, _Undecodable):
                        self.observers.happened(Happening.EVENT_UNREADABLE, str(exc))
                    if lost is not None:
                        self._on_position_lost(lost, delay)
                    elif isinstance(exc, _DuplicateServerId):
                        logger.error(
                            "another binlog reader uses server_id {} ([database] server_id, "
                            "+ 1 for `reactor watch`): the server dropped this stream for it "
                            "({}); give each reader its own id; reconnecting in {:.1f} s",
                            self.cfg.server_id, exc, delay)
                    else:
                        logger.warning(
                            "binlog stream lost: {}; reconnecting from {} in {:.1f} s",
                            exc if str(exc) else "server closed the connection",
                            self.position or "the current position", delay,
                        )
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                    continue
                else:
                    break
        finally:
            self.connected = False
            self._save_checkpoint()

    def _next_delay(self) -> float:
        """The pause before the next session: the backoff starts over only after a session
        that lasted (a reader evicted by another with its server_id at once must not come
        back every 0.1 s, nor a 1236 that recurs at the current position)."""
        began, self._connected_at = self._connected_at, None
        if began is not None and time.monotonic() - began >= STABLE_SESSION:
            self.backoff.reset()
        return self.backoff.next()

    def _on_position_lost(self, exc: BinlogPositionLost, delay: float) -> None:
        logger.error(
            "binlog position {} is gone or unreadable ({}); restarting from the server's "
            "current position in {:.1f} s; a sweep will find alarms set in between",
            self.position or "(the current one)", exc, delay,
        )
        self.observers.happened(Happening.POSITION_LOST,
                                f"binlog position {self.position or '-'} is gone: {exc}")
        self.position = None
        self.state.set_checkpoint(None)

    def stop(self) -> None:
        """Ask the session to end: the blocked read is woken by shutting the socket down.
        Call from the event loop's thread."""
        self._stopping.set()
        self._wake.set()
        with self._conn_lock:
            conn = self._conn
        sock = getattr(conn, "_sock", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ reader thread side

    def _connect(self, **settings: Any) -> pymysql.Connection:
        """Connection factory given to mysql-replication (stream and control connections)."""
        if self._stopping.is_set():
            raise _Stop()
        is_control = settings.get("db") == "information_schema"
        with self._conn_lock:
            if not is_control and self._conn is not None:
                raise _Reconnect("stream connection lost")
        conn = pymysql.connect(**settings)
        if not is_control:
            with self._conn_lock:
                self._conn = conn
        return conn

    def _session(self) -> None:
        """One replication connection, read until it fails or stop() is called (blocking)."""
        hb = self.cfg.heartbeat
        settings = self.cfg.pymysql_args()
        settings.pop("autocommit", None)
        settings["read_timeout"] = hb * 2.5
        settings["write_timeout"] = max(self.cfg.connect_timeout, hb * 2.5)
        start = self.position
        self.connected = False
        stream = BinLogStreamReader(
            connection_settings=dict(settings),  # the library mutates what it is given
            server_id=self.cfg.server_id,
            resume_stream=True,
            blocking=True,
            log_file=start.file if start else None,
            log_pos=start.pos if start else None,
            only_events=[*ROW_EVENTS, XidEvent, QueryEvent, RotateEvent, FormatDescriptionEvent,
                         HeartbeatLogEvent],
            only_schemas=[self.cfg.database.lower() if self.folds_case else self.cfg.database],
            only_tables=[t.lower() for t in TABLES] if self.folds_case else list(TABLES),
            slave_heartbeat=hb,
            pymysql_wrapper=self._connect,
            enable_logging=False,
        )
        try:
            self._read(stream)
        except _Stop:
            pass
        except _Reconnect:
            if not self._stopping.is_set():
                raise
        except (pymysql.err.MySQLError, OSError, EOFError, StructError) as exc:
            # StructError: a packet torn by a dying server
            if self._stopping.is_set():
                return
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            message = str(exc.args[-1]) if exc.args else str(exc)
            if code == DUPLICATE_ID or (code == 1236 and "same server" in message.lower()):
                raise _DuplicateServerId(f"error {code}") from exc
            if code == 1236:
                raise BinlogPositionLost(message) from exc
            if code in REFUSED_HINTS:
                raise BinlogRefused(_refusal(code, message)) from exc
            mapped = map_error(exc, "binlog stream")
            if isinstance(mapped, ReactorError) and not isinstance(mapped, DatabaseUnavailable):
                # refused (grants, schema): retrying may help once an operator fixes it
                raise DatabaseUnavailable(str(mapped)) from exc
            raise mapped from exc
        except Exception as exc:  # noqa: BLE001 - a decoding bug must not end the daemon
            if self._stopping.is_set():
                return
            logger.opt(exception=exc).error("binlog event after {} could not be read",
                                            self.position)
            raise _Undecodable(f"undecodable event after {self.position}: {exc!r}") from exc
        finally:
            with self._conn_lock:
                self._conn = None
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass

    def _read(self, stream: BinLogStreamReader) -> None:
        pending: list[RowChange] = []
        touched_alarms = False
        last_save = time.monotonic()
        loop = self._loop
        assert loop is not None
        for event in stream:
            now = time.monotonic()
            self.last_event_at = now
            if isinstance(event, CHANGE_EVENTS) and event.timestamp:
                self.seconds_behind = float(max(0, int(time.time()) - event.timestamp))
            elif isinstance(event, HeartbeatLogEvent):
                self.seconds_behind = 0.0
            if isinstance(event, ROW_EVENTS):
                table = event.table.upper() if self.folds_case else event.table
                if isinstance(event, UpdateRowsEvent):
                    for row in event.rows:
                        pending.append(RowChange(table, row["before_values"], row["after_values"]))
                elif isinstance(event, WriteRowsEvent):
                    for row in event.rows:
                        pending.append(RowChange(table, None, row["values"]))
                else:
                    for row in event.rows:
                        pending.append(RowChange(table, row["values"], None))
                touched_alarms = touched_alarms or table == "STATUS_PROCESS"
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and event.query == "COMMIT"
            ):
                cp = Checkpoint(stream.log_file, stream.log_pos)
                self.position = cp
                self.transactions += 1
                if pending:
                    loop.call_soon_threadsafe(self.on_batch, pending, cp)
                    pending = []
                if touched_alarms or now - last_save >= IDLE_SAVE_INTERVAL:
                    self.state.set_checkpoint(cp)
                    last_save = now
                    touched_alarms = False
            elif isinstance(event, RotateEvent):
                self.position = Checkpoint(event.next_binlog, event.position)
            elif isinstance(event, FormatDescriptionEvent):
                # A new binlog file. After a server crash the old file has no closing
                # RotateEvent, so mysql-replication keeps its table map, while the restarted
                # server reuses table ids for other tables: their rows would be decoded with
                # STATUS_PROCESS's columns. Every file's TableMapEvents follow this event.
                stream.table_map.clear()
                # the server found the file and accepted the position (a missing file fails
                # with 1236 right after the initial RotateEvent, before this event)
                if not self.connected:
                    self.connected = True
                    self._connected_at = now
                    loop.call_soon_threadsafe(self.on_connected, self.position)
            elif isinstance(event, QueryEvent):
                self._statement(event)
            if self._stopping.is_set():
                raise _Stop()

    def _statement(self, event: QueryEvent) -> None:
        """A statement logged as SQL text (a session with binlog_format=STATEMENT/MIXED):
        its rows never reach us, so ask for a sweep when it may touch STATUS_PROCESS."""
        query = event.query if isinstance(event.query, str) else str(event.query)
        if query in ("BEGIN", "COMMIT"):
            return
        if "status_process" in query.lower():
            logger.warning(
                "a statement on STATUS_PROCESS was logged as SQL text, not rows "
                "(a client session uses binlog_format={}); sweeping",
                "STATEMENT/MIXED",
            )
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.on_statement)

    def _save_checkpoint(self) -> None:
        if self.position is not None:
            self.state.set_checkpoint(self.position)

