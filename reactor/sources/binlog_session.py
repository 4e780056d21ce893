"""One replication session of the binlog source, in a worker thread (blocking).

    mysql-replication events -> rows of one transaction ... Xid -> handed to the event loop
                                (BinlogSource._hand_over) with the position after it

Row changes are gathered per transaction and handed over at its end: at once for a
transaction with rows of ours, at most once a second otherwise. The session's first events
are an artificial RotateEvent (where it starts) and the file's FormatDescriptionEvent,
which names its Origin: a checkpoint of another binlog history is refused there
(_WrongServer), before any event of the file is read. Every new file clears the table map
(after a crash the old file has no closing RotateEvent and the restarted server reuses
table ids). Events the library does not decode come as NotImplementedEvent and are judged
by binlog_rules; statements logged as SQL text too.

Positions: where the server has GTIDs (`[binlog] gtid = auto`: MariaDB always, MySQL with
gtid_mode = ON) a session starts by GTID (`auto_position`), on whichever server of the
list it reaches, and every checkpoint carries the GTID state after its transaction (the
GTID is read from the transaction's GTID event, before its rows, and counted in at its
Xid). A session with no position asks its server where it stands (file, offset and the
GTID state there, BINLOG_GTID_POS) before it starts. Without GTIDs: by file and offset on
the one server, as its Origin allows. A server that answers 1236 to a GTID it has not
reached yet (a replica that is behind) is _Behind (try another, or later), not a lost
position.

Error handling: the library's and the server's errors are mapped to the reactor's own here
(the source decides what each one means): a refused dump -> BinlogRefused, error 1236 ->
BinlogPositionLost, 4052 -> _DuplicateServerId, a lost connection -> DatabaseUnavailable,
a decoding bug -> _Undecodable (logged with its traceback). mysql-replication's own
reconnect (from the last event, not the last boundary) is forbidden by the connection
factory: _Reconnect, and the source reconnects from a boundary.
"""

from __future__ import annotations

import time
from struct import error as StructError
from typing import TYPE_CHECKING, Any

import pymysql
from loguru import logger
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    MariadbGtidListEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    RowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from reactor.errors import (
    BinlogPositionLost,
    BinlogRefused,
    DatabaseRefused,
    DatabaseUnavailable,
    ReactorError,
)
from reactor.events import AlarmaChange, NameChange, RowChange
from reactor.sources.binlog_rules import (
    DUPLICATE_ID,
    REFUSED_HINTS,
    refusal,
    schema_change,
    statement_kind,
    unreadable_event,
)
from reactor.sources.detect import alarma_of
from reactor.storage.database import connect, describe, map_error, mapped
from reactor.storage.positions import Checkpoint, GtidState, Origin

if TYPE_CHECKING:
    from reactor.sources.binlog import BinlogSource

TABLES = ("STATUS_PROCESS", "PROCESE")
IDLE_SAVE_INTERVAL = 1.0  # seconds between boundaries handed over when no table of ours changed
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
CHANGE_EVENTS = (*ROW_EVENTS, XidEvent)  # events whose timestamp tells how far behind we read


class _Stop(Exception):
    """The session was asked to stop."""


class _Reconnect(Exception):
    """mysql-replication tried to reconnect by itself; we reconnect from a boundary instead."""


class _Undecodable(DatabaseUnavailable):
    """An event could not be read (a library or protocol error, not the network)."""


class _DuplicateServerId(DatabaseUnavailable):
    """The server dropped the stream: another reader connected with the same server_id."""


class _Behind(DatabaseUnavailable):
    """The server has not reached the checkpoint's GTID yet (a replica that lags)."""


class _WrongServer(BinlogPositionLost):
    """The checkpoint was read from another binlog history than the server's."""

    def __init__(self, start: Checkpoint, found: Origin) -> None:
        self.start = start
        self.found = found
        super().__init__(f"checkpoint {start} is from {start.origin}, the server's "
                         f"{start.file} is from {found}")


def reduce(event: RowsEvent, folds_case: bool, into: list[RowChange]) -> None:
    """A rows event's rows, reduced to what the intake reads (here, in the reader thread:
    neither the row images nor the rows that change nothing of it are kept until the
    commit). STATUS_PROCESS: a row whose alarma did not change is dropped (a note, the
    reactor's own writes of notes); PROCESE: the name and host after (name None: deleted;
    host None: NULL, or no such column: sql/fleet.sql). A row
    without an integer process_id (no such column) says nothing about a process."""
    table = event.table.upper() if folds_case else event.table
    rows = event.rows
    update = isinstance(event, UpdateRowsEvent)
    delete = isinstance(event, DeleteRowsEvent)
    key = "after_values" if update else "values"
    for row in rows:
        image = row[key]
        pid = image.get("process_id")
        if not isinstance(pid, int):
            continue
        if table == "PROCESE":
            name, host = image.get("process_name"), image.get("host")
            into.append(NameChange(pid, None if delete or not isinstance(name, str) else name,
                                   host if isinstance(host, str) else None))
        elif update:
            was, now = alarma_of(row["before_values"]), alarma_of(image)
            if was != now:
                into.append(AlarmaChange(pid, was, now))
        elif delete:
            into.append(AlarmaChange(pid, alarma_of(image), None))
        else:
            into.append(AlarmaChange(pid, None, alarma_of(image)))


class Session:
    """One connection's events, read in a worker thread; the state it updates (position,
    connected ...) is the source's."""

    def __init__(self, src: BinlogSource) -> None:
        self.src = src
        self.cfg = src.cfg  # the server of this session
        self.server = describe(self.cfg)
        self.gtid: GtidState | None = None  # the GTID state at the last boundary read
        self._next_gtid: str | None = None  # of the transaction being read

    def where_now(self) -> Checkpoint:
        """The server's position now, with its GTID state where it has one (blocking)."""
        with connect(self.cfg, schema=False) as conn, conn.cursor() as cur, \
                mapped(f"binlog position of {self.server}"):
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            if row is None:
                raise BinlogRefused(f"{self.server} has no binary log (log_bin is off)")
            gtid: GtidState | None = None
            if self.src.use_gtid:
                text = ""
                if len(row) >= 5 and row[4]:  # MySQL: Executed_Gtid_Set
                    text = str(row[4])
                else:
                    try:
                        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (row[0], row[1]))
                        found = cur.fetchone()
                        text = "" if found is None or found[0] is None else str(found[0])
                    except pymysql.err.MySQLError:
                        text = ""  # not MariaDB: a server without GTIDs
                gtid = GtidState(text.replace("\n", ""))
            return Checkpoint(str(row[0]), int(row[1]), gtid=gtid, server=self.server)

    def connect(self, **settings: Any) -> pymysql.Connection:
        """Connection factory given to mysql-replication (stream and control connections)."""
        src = self.src
        if src._stopping.is_set():
            raise _Stop()
        is_control = settings.get("db") == "information_schema"
        with src._conn_lock:
            if not is_control and src._conn is not None:
                raise _Reconnect("stream connection lost")
        conn = pymysql.connect(**settings)
        if not is_control:
            with src._conn_lock:
                src._conn = conn
        return conn

    def run(self) -> None:
        """One replication connection, read until it fails or stop() is called (blocking)."""
        src = self.src
        hb = self.cfg.heartbeat
        settings = self.cfg.pymysql_args()
        settings.pop("autocommit", None)
        settings["read_timeout"] = hb * 2.5
        settings["write_timeout"] = max(self.cfg.connect_timeout, hb * 2.5)
        src.connected = False
        if src.position is None:
            try:
                src.position = self.where_now()
            except DatabaseRefused as exc:  # the position is refused to this account
                raise BinlogRefused(f"{exc}; GRANT BINLOG MONITOR ON *.* (MariaDB) or "
                                    "REPLICATION CLIENT (MySQL)") from exc
        start = src.position
        by_gtid = src.use_gtid and start.gtid is not None and not start.gtid.empty
        self.gtid = start.gtid if src.use_gtid else None
        position: dict[str, Any] = {"log_file": start.file, "log_pos": start.pos}
        if by_gtid:
            assert start.gtid is not None
            text = str(start.gtid)
            # MariaDB: @slave_connect_state (exclusive: the next transaction after it)
            position = {"auto_position": text, "is_mariadb": ":" not in text}
        src.reading = self.server
        stream = BinLogStreamReader(
            connection_settings=dict(settings),  # the library mutates what it is given
            server_id=self.cfg.server_id,
            resume_stream=True,
            blocking=True,
            **position,
            only_events=[*ROW_EVENTS, XidEvent, QueryEvent, RotateEvent, FormatDescriptionEvent,
                         HeartbeatLogEvent, TableMapEvent, NotImplementedEvent,
                         MariadbGtidEvent, GtidEvent, MariadbGtidListEvent],
            # unknown event types come as NotImplementedEvent, which _read looks at
            filter_non_implemented_events=False,
            only_schemas=[src.cfg.database.lower() if src.folds_case else src.cfg.database],
            only_tables=[t.lower() for t in TABLES] if src.folds_case else list(TABLES),
            slave_heartbeat=hb,
            pymysql_wrapper=self.connect,
            enable_logging=False,
        )
        try:
            self._read(stream)
        except _Stop:
            pass
        except _Reconnect:
            if not src._stopping.is_set():
                raise
        except _WrongServer:
            raise
        except (pymysql.err.MySQLError, OSError, EOFError, StructError) as exc:
            # StructError: a packet torn by a dying server
            if src._stopping.is_set():
                return
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            message = str(exc.args[-1]) if exc.args else str(exc)
            if code == DUPLICATE_ID or (code == 1236 and "same server" in message.lower()):
                raise _DuplicateServerId(f"error {code}") from exc
            if code == 1236:
                if by_gtid and self._behind(start):
                    raise _Behind(f"{self.server} has not reached GTID {start.gtid} yet "
                                  f"({message})") from exc
                raise BinlogPositionLost(f"{self.server}: {message}") from exc
            if code in REFUSED_HINTS:
                raise BinlogRefused(refusal(code, message)) from exc
            mapped = map_error(exc, "binlog stream")
            if isinstance(mapped, ReactorError) and not isinstance(mapped, DatabaseUnavailable):
                # refused (grants, schema): retrying may help once an operator fixes it
                raise DatabaseUnavailable(str(mapped)) from exc
            raise mapped from exc
        except Exception as exc:  # noqa: BLE001 - a decoding bug must not end the daemon
            if src._stopping.is_set():
                return
            logger.opt(exception=exc).error("binlog event after {} could not be read",
                                            src.position)
            raise _Undecodable(f"undecodable event after {src.position}: {exc!r}") from exc
        finally:
            with src._conn_lock:
                src._conn = None
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass

    def _behind(self, start: Checkpoint) -> bool:
        """After a 1236: the server has not reached `start`'s GTID (it lags), rather than
        lost it (purged, or another history)."""
        try:
            now = self.where_now()
        except (ReactorError, pymysql.err.MySQLError, OSError):
            return False
        return (start.gtid is not None and now.gtid is not None
                and not now.gtid.reached(start.gtid))

    def _boundary(self, stream: BinLogStreamReader, origin: Origin | None) -> Checkpoint:
        """The transaction just read is over: the checkpoint after it."""
        if self._next_gtid is not None and self.gtid is not None:
            self.gtid = self.gtid.advance(self._next_gtid)
        self._next_gtid = None
        return Checkpoint(stream.log_file, stream.log_pos, origin, self.gtid, self.server)

    def _read(self, stream: BinLogStreamReader) -> None:
        src = self.src
        pending: list[RowChange] = []
        urgent = False  # the transaction touched a table of ours: hand it over at once
        ours_mapped = False  # the transaction maps a table of ours (a compressed row event
        unreadable = ""  # after that may hold its rows)
        last_post = time.monotonic()
        loop = src._loop
        assert loop is not None
        origin: Origin | None = None  # of the file being read
        start = src.position
        for event in stream:
            now = time.monotonic()
            src.last_event_at = now
            if isinstance(event, CHANGE_EVENTS) and event.timestamp:
                src.seconds_behind = float(max(0, int(time.time()) - event.timestamp))
            elif isinstance(event, HeartbeatLogEvent):
                src.seconds_behind = 0.0
            if isinstance(event, ROW_EVENTS):
                reduce(event, src.folds_case, pending)
                urgent = True
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and event.query == "COMMIT"
            ):
                cp = self._boundary(stream, origin)
                src.position = cp
                src.transactions += 1
                if urgent or unreadable or now - last_post >= IDLE_SAVE_INTERVAL:
                    src._posted = cp
                    loop.call_soon_threadsafe(src._hand_over, pending, cp)
                    pending = []
                    last_post = now
                if unreadable:
                    loop.call_soon_threadsafe(src.on_unreadable, unreadable)
                urgent = ours_mapped = False
                unreadable = ""
            elif isinstance(event, MariadbGtidEvent | GtidEvent):
                if self._next_gtid is not None and self.gtid is not None:
                    # the last transaction ended without an Xid (a DDL): it is over now
                    self.gtid = self.gtid.advance(self._next_gtid)
                self._next_gtid = str(event.gtid)
            elif isinstance(event, MariadbGtidListEvent):
                # sent where a GTID session starts (and at the head of each file): the
                # real offset of the start, before any transaction of the session
                pos = src.position
                if pos is not None and pos.file == stream.log_file and self._next_gtid is None:
                    src.position = pos.moved(stream.log_file, stream.log_pos, pos.origin)
            elif isinstance(event, TableMapEvent):
                ours_mapped = True  # only our tables pass only_schemas/only_tables
            elif isinstance(event, NotImplementedEvent):
                what = unreadable_event(event.event_type, ours_mapped)
                if what is None:
                    pass  # nothing of ours
                elif what.whole:  # a whole transaction (or none): no Xid of ours to wait for
                    loop.call_soon_threadsafe(src.on_unreadable, what.detail)
                elif what.detail:
                    unreadable = what.detail
                else:  # a compressed statement: a sweep, like any statement of unknown text
                    logger.debug("a compressed statement cannot be read; sweeping")
                    loop.call_soon_threadsafe(src.on_statement)
            elif isinstance(event, HeartbeatLogEvent):
                # sent when the server has nothing more to send: we have read it all
                loop.call_soon_threadsafe(src.on_progress, Checkpoint(
                    stream.log_file, stream.log_pos, gtid=self.gtid, server=self.server))
            elif isinstance(event, RotateEvent):
                # the session's first (artificial) RotateEvent names where it starts: the
                # position keeps its origin; a real one moves to the next file
                if src.position is None or src.position.key() != (event.next_binlog,
                                                                     event.position):
                    src.position = Checkpoint(event.next_binlog, event.position,
                                              gtid=self.gtid, server=self.server)
            elif isinstance(event, FormatDescriptionEvent):
                # A new binlog file. After a server crash the old file has no closing
                # RotateEvent, so mysql-replication keeps its table map, while the restarted
                # server reuses table ids for other tables: their rows would be decoded with
                # STATUS_PROCESS's columns. Every file's TableMapEvents follow this event.
                stream.table_map.clear()
                origin = Origin(int(event.packet.server_id), int(event.timestamp),
                                str(event.mysql_version_str))
                if not src.connected:
                    # the first event of a session, before any event of the file is read
                    # (by GTID, another server's file may have the same name: only the same
                    # server_id with another creation time is a reset history)
                    if (start is not None and start.origin is not None
                            and stream.log_file == start.file
                            and not start.origin.same_history(origin)
                            and (self.gtid is None
                                 or start.origin.server_id == origin.server_id)):
                        raise _WrongServer(start, origin)
                    # the server found the file and accepted the position (a missing file
                    # fails with 1236 right after the initial RotateEvent, before this event)
                    src.connected = True
                    src._connected_at = now
                    here = src.position  # the session's start (from its RotateEvent)
                    if here is not None and here.origin is None and here.file == stream.log_file:
                        src.position = here.moved(here.file, here.pos, origin)
                    if src.position is not None and src.position != src._posted:
                        # where this session starts is a boundary: checkpoint it (a first
                        # start has none yet), with its origin
                        src._posted = src.position
                        loop.call_soon_threadsafe(src._hand_over, [], src.position)
                    loop.call_soon_threadsafe(src.on_connected, src.position)
            elif isinstance(event, QueryEvent):
                self._statement(event)
            if src._stopping.is_set():
                raise _Stop()

    def _statement(self, event: QueryEvent) -> None:
        """A statement logged as SQL text. A row change of STATUS_PROCESS logged that way
        (a session with binlog_format=STATEMENT/MIXED) never reaches us as rows: sweep."""
        src = self.src
        query = event.query if isinstance(event.query, str) else str(event.query)
        if schema_change(query):
            assert src._loop is not None
            src._loop.call_soon_threadsafe(src.on_schema_change)
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
        assert src._loop is not None
        src._loop.call_soon_threadsafe(src.on_statement)
