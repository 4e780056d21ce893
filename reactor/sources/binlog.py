"""The binlog source: tails STATUS_PROCESS (alarms) and PROCESE (names) from the server's
binary log, pushed by the server the moment a transaction commits.

    reader thread (mysql-replication, blocking)      event loop
    rows of one transaction ... Xid  --batch-->      on_batch(changes, checkpoint)
    heartbeat                        --position->    on_progress(position)
    an event it cannot decode        --detail--->    on_unreadable(detail)

A session (one replication connection) runs in a worker thread. Row changes are gathered
per transaction and handed to the event loop at the transaction's end (Xid), together with
the position after it: at once for a transaction with rows of ours, at most once a second
otherwise. Only such boundaries are checkpointed, because resuming inside a transaction
drops its remaining rows, and only once the consumer has handed their alarms on (`save`,
called by the intake): a checkpoint never passes an alarm that was not delivered.

Every checkpoint names the binlog history it belongs to (Origin: the server_id and the
creation time of its file, from the FormatDescriptionEvent the server sends first). A
session that resumes from a checkpoint compares it with what the server sends before any
event of the file is read: another server, or the same name after RESET MASTER, is an
ERROR naming both, and the stream restarts from the server's current position (the caller
sweeps), never from an offset that means nothing there.

Events mysql-replication cannot decode are not skipped silently: MariaDB's compressed row
events (`log_bin_compress`) in a transaction that touched our tables, MySQL's compressed
transactions (`binlog_transaction_compression`) and incidents (lost events) are reported
to `on_unreadable` (the caller warns and sweeps at once); a compressed statement asks for
a sweep like any statement logged as SQL text.

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
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from reactor.config import DatabaseConfig
from reactor.errors import (
    BinlogPositionLost,
    BinlogRefused,
    DatabaseUnavailable,
    ReactorError,
)
from reactor.events import Condition, Happening, Observers, RowChange
from reactor.retry import Backoff
from reactor.sources.binlog_rules import (
    DUPLICATE_ID,
    REFUSED_HINTS,
    refusal,
    statement_kind,
    unreadable_event,
)
from reactor.storage.database import map_error
from reactor.storage.statefile import Checkpoint, Origin, StateFile

TABLES = ("STATUS_PROCESS", "PROCESE")
IDLE_SAVE_INTERVAL = 1.0  # seconds between boundaries handed over when no table of ours changed
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)

Batch = Callable[[list[RowChange], Checkpoint], None]

STABLE_SESSION = 10.0  # seconds a session must last before the backoff starts over
class _Stop(Exception):
    """The session was asked to stop."""


class _Reconnect(Exception):
    """mysql-replication tried to reconnect by itself; we reconnect from a boundary instead."""


class _Undecodable(DatabaseUnavailable):
    """An event could not be read (a library or protocol error, not the network)."""


class _DuplicateServerId(DatabaseUnavailable):
    """The server dropped the stream: another reader connected with the same server_id."""


class _WrongServer(BinlogPositionLost):
    """The checkpoint was read from another binlog history than the server's."""

    def __init__(self, start: Checkpoint, found: Origin) -> None:
        self.start = start
        self.found = found
        super().__init__(f"checkpoint {start} is from {start.origin}, the server's "
                         f"{start.file} is from {found}")


UNDECODABLE_RETRIES = 3  # failures at one position before resyncing from the current one


class BinlogSource:
    """Owns the replication connection: sessions, reconnects, checkpoints.

    Every callback is called in the event loop: `on_batch` (changes, empty for a boundary
    without rows of ours), `on_progress` (how far the stream has read), `on_statement` and
    `on_unreadable` (the caller sweeps), `on_connected` once per session when the server
    has accepted the dump request, `on_position_lost` when the stream starts over from the
    server's current position.
    """

    def __init__(
        self,
        cfg: DatabaseConfig,
        state: StateFile,
        *,
        on_batch: Batch,
        on_connected: Callable[[Checkpoint | None], None],
        on_statement: Callable[[], None] = lambda: None,
        on_progress: Callable[[Checkpoint], None] = lambda cp: None,
        on_unreadable: Callable[[str], None] = lambda detail: None,
        on_position_lost: Callable[[], None] = lambda: None,
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
        self.on_progress = on_progress
        self.on_unreadable = on_unreadable
        self.on_position_lost = on_position_lost
        self.backoff = backoff or Backoff(initial=0.1, cap=5.0)
        # the last boundary read (the next session starts here) and the last one handed
        # over (posted to the event loop), which differ by idle boundaries not yet posted
        self.position: Checkpoint | None = state.checkpoint()
        self._posted: Checkpoint | None = self.position
        self.saved: Checkpoint | None = self.position  # the last checkpoint saved
        self.connected = False
        self.last_event_at = 0.0  # monotonic time of the last packet (heartbeat included)
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
                    if isinstance(exc, _WrongServer):
                        self._on_wrong_server(exc, delay)
                    elif lost is not None:
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
            # boundaries read since the last one handed over held no row of ours: hand the
            # last one over, so that the consumer can checkpoint it once it is done
            if self.position is not None and self.position != self._posted:
                self._posted = self.position
                self.on_batch([], self.position)

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
        self._start_over()

    def _on_wrong_server(self, exc: _WrongServer, delay: float) -> None:
        logger.error(
            "the checkpoint {} belongs to another binlog history ({}) than the server's "
            "{} ({}): another server, or its binlog was reset; not read from there: "
            "restarting from the server's current position in {:.1f} s and sweeping",
            exc.start, exc.start.origin, exc.start.file, exc.found, delay)
        self.observers.happened(Happening.POSITION_LOST,
                                f"checkpoint {exc.start} is from another server: {exc}")
        self._start_over()

    def _start_over(self) -> None:
        """The next session starts at the server's current position."""
        self.position = None
        self._posted = None
        self.saved = None
        self.state.set_checkpoint(None)
        self.on_position_lost()

    def save(self, cp: Checkpoint) -> None:
        """Checkpoint `cp`: the consumer has handed on every alarm up to it (event loop)."""
        if cp != self.saved:
            self.saved = cp
            self.state.set_checkpoint(cp)

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
                         HeartbeatLogEvent, TableMapEvent, NotImplementedEvent],
            # unknown event types come as NotImplementedEvent, which _read looks at
            filter_non_implemented_events=False,
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
        except _WrongServer:
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
                raise BinlogRefused(refusal(code, message)) from exc
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
        urgent = False  # the transaction touched a table of ours: hand it over at once
        ours_mapped = False  # the transaction maps a table of ours (a compressed row event
        unreadable = ""  # after that may hold its rows)
        last_post = time.monotonic()
        loop = self._loop
        assert loop is not None
        origin: Origin | None = None  # of the file being read
        start = self.position
        for event in stream:
            now = time.monotonic()
            self.last_event_at = now
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
                urgent = True
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and event.query == "COMMIT"
            ):
                cp = Checkpoint(stream.log_file, stream.log_pos, origin)
                self.position = cp
                self.transactions += 1
                if urgent or unreadable or now - last_post >= IDLE_SAVE_INTERVAL:
                    self._posted = cp
                    loop.call_soon_threadsafe(self._hand_over, pending, cp)
                    pending = []
                    last_post = now
                if unreadable:
                    loop.call_soon_threadsafe(self.on_unreadable, unreadable)
                urgent = ours_mapped = False
                unreadable = ""
            elif isinstance(event, TableMapEvent):
                ours_mapped = True  # only our tables pass only_schemas/only_tables
            elif isinstance(event, NotImplementedEvent):
                what = unreadable_event(event.event_type, ours_mapped)
                if what is None:
                    continue
                if what.whole:  # a whole transaction (or none): no Xid of ours to wait for
                    loop.call_soon_threadsafe(self.on_unreadable, what.detail)
                elif what.detail:
                    unreadable = what.detail
                else:  # a compressed statement: a sweep, like any statement of unknown text
                    logger.debug("a compressed statement cannot be read; sweeping")
                    loop.call_soon_threadsafe(self.on_statement)
            elif isinstance(event, HeartbeatLogEvent):
                # sent when the server has nothing more to send: we have read it all
                loop.call_soon_threadsafe(self.on_progress,
                                          Checkpoint(stream.log_file, stream.log_pos))
            elif isinstance(event, RotateEvent):
                # the session's first (artificial) RotateEvent names where it starts: the
                # position keeps its origin; a real one moves to the next file
                if self.position is None or self.position.key() != (event.next_binlog,
                                                                     event.position):
                    self.position = Checkpoint(event.next_binlog, event.position)
            elif isinstance(event, FormatDescriptionEvent):
                # A new binlog file. After a server crash the old file has no closing
                # RotateEvent, so mysql-replication keeps its table map, while the restarted
                # server reuses table ids for other tables: their rows would be decoded with
                # STATUS_PROCESS's columns. Every file's TableMapEvents follow this event.
                stream.table_map.clear()
                origin = Origin(int(event.packet.server_id), int(event.timestamp),
                                str(event.mysql_version_str))
                if not self.connected:
                    # the first event of a session, before any event of the file is read
                    if (start is not None and start.origin is not None
                            and stream.log_file == start.file
                            and not start.origin.same_history(origin)):
                        raise _WrongServer(start, origin)
                    # the server found the file and accepted the position (a missing file
                    # fails with 1236 right after the initial RotateEvent, before this event)
                    self.connected = True
                    self._connected_at = now
                    here = self.position  # the session's start (from its RotateEvent)
                    if here is not None and here.origin is None and here.file == stream.log_file:
                        self.position = Checkpoint(here.file, here.pos, origin)
                    if self.position is not None and self.position != self._posted:
                        # where this session starts is a boundary: checkpoint it (a first
                        # start has none yet), with its origin
                        self._posted = self.position
                        loop.call_soon_threadsafe(self._hand_over, [], self.position)
                    loop.call_soon_threadsafe(self.on_connected, self.position)
            elif isinstance(event, QueryEvent):
                self._statement(event)
            if self._stopping.is_set():
                raise _Stop()

    def _hand_over(self, changes: list[RowChange], cp: Checkpoint) -> None:
        """In the event loop: a transaction's rows (or only its boundary), then how far the
        stream has read."""
        self.on_batch(changes, cp)
        self.on_progress(cp)

    def _statement(self, event: QueryEvent) -> None:
        """A statement logged as SQL text. A row change of STATUS_PROCESS logged that way
        (a session with binlog_format=STATEMENT/MIXED) never reaches us as rows: sweep."""
        query = event.query if isinstance(event.query, str) else str(event.query)
        kind = statement_kind(query)
        if kind is None:
            return
        if kind == "ddl":
            logger.info("a statement on STATUS_PROCESS that changes no row: {}",
                        " ".join(query.split())[:80])
            return
        logger.warning(
            "a row change of STATUS_PROCESS was logged as SQL text, not rows "
            "(a client session uses binlog_format={}); sweeping",
            "STATEMENT/MIXED",
        )
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.on_statement)
