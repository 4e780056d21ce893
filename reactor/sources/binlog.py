"""The binlog source: tails STATUS_PROCESS (alarms) and PROCESE (names) from the server's
binary log, pushed by the server the moment a transaction commits.

    reader thread (binlog_session.py)                event loop
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

Servers: `servers` lists the binlog servers in failover order ([binlog] servers; one,
[database]'s, by default). Each session starts with the first one of the list not yet
tried in this round: a server that cannot be reached, drops the stream, has not reached
the checkpoint's GTID yet or refuses the dump is left for the next one at once (a
failover); once every server was tried, the round starts again from the first after the
backoff. Only a GTID position moves between servers (a file and offset mean something on
one server only): the config refuses several servers without GTIDs. A GTID position no
reachable server of the list has (purged everywhere, another history) -> ERROR naming
`[binlog] servers`, restart from the first reachable server's current position, sweep.

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
from collections.abc import Callable, Sequence

import pymysql
from loguru import logger

from reactor.config import DatabaseConfig
from reactor.errors import BinlogPositionLost, BinlogRefused, DatabaseUnavailable
from reactor.events import Condition, Happening, Observers, RowChange
from reactor.retry import Backoff
from reactor.sources.binlog_session import (
    Session,
    _Behind,
    _DuplicateServerId,
    _Reconnect,
    _Undecodable,
    _WrongServer,
)
from reactor.storage.database import describe
from reactor.storage.statefile import Checkpoint, StateFile

Batch = Callable[[list[RowChange], Checkpoint], None]

STABLE_SESSION = 10.0  # seconds a session must last before the backoff starts over
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
        servers: DatabaseConfig | Sequence[DatabaseConfig],
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
        gtid: bool = True,
        on_schema_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.servers = (servers,) if isinstance(servers, DatabaseConfig) else tuple(servers)
        self.cfg = self.servers[0]  # the server of the current (or next) session
        self.use_gtid = gtid  # checkpoint and resume by GTID where the server has them
        self.on_schema_change = on_schema_change  # a DDL on PROCESE went by
        self.reading = describe(self.cfg)  # host:port of the server read from
        self._tried: set[int] = set()  # servers that failed in this round
        self._round: list[Exception] = []  # how each failed
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
                except (BinlogPositionLost, DatabaseUnavailable, _Reconnect,
                        BinlogRefused) as caught:
                    self.connected = False
                    if self._stopping.is_set():
                        break
                    verdict = self._failover(caught)
                    if verdict is None:
                        continue  # the next server of the list, at once
                    if isinstance(verdict, BinlogRefused):
                        raise verdict from verdict.__cause__
                    exc = verdict
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
                    elif len(self.servers) > 1:
                        logger.warning(
                            "binlog stream lost on every server of [binlog] servers ({}); "
                            "reconnecting from {} in {:.1f} s", exc, self.position
                            or "the current position", delay)
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

    def _session(self) -> None:
        """One session, in a worker thread (binlog_session.py)."""
        Session(self).run()

    async def current_position(self) -> Checkpoint:
        """Where the first binlog server that answers stands now (file, offset and GTID
        state). Raises DatabaseUnavailable (none answered) or BinlogRefused."""
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        current = self.cfg
        try:
            for cfg in self.servers:
                self.cfg = cfg
                try:
                    return await loop.run_in_executor(None, Session(self).where_now)
                except DatabaseUnavailable as exc:
                    failures.append(str(exc))
        finally:
            self.cfg = current
        raise DatabaseUnavailable("no binlog server answers: " + "; ".join(failures))

    def _failover(self, exc: Exception) -> Exception | None:
        """After a failed session: None when another server of the list is to be tried at
        once; else the round is over (every server tried, or a failure no other server
        can mend) and the verdict is returned, to be handled as for one server after the
        backoff (the next round starts with the first server): the position is lost when
        a server lost it and none was only behind; the dump is refused when every server
        refused it; else the servers are down."""
        if len(self.servers) == 1:
            return exc
        began = self._connected_at
        if began is not None and time.monotonic() - began >= STABLE_SESSION:
            self._tried.clear()  # it worked for a while: a new round
            self._round.clear()
        here = self.servers.index(self.cfg)
        self._tried.add(here)
        self._round.append(exc)
        left = [i for i in range(len(self.servers)) if i not in self._tried]
        if left and not isinstance(exc, _WrongServer | _DuplicateServerId):
            nxt = self.servers[left[0]]
            logger.warning("binlog server {} failed ({}); trying {} ([binlog] servers)",
                           describe(self.cfg), exc or "server closed the connection",
                           describe(nxt))
            self.reconnects += 1
            self.observers.begin(Condition.STREAM_DOWN, f"{describe(self.cfg)}: {exc}")
            self.cfg = nxt
            return None
        round_, self._round = self._round, []
        self._tried.clear()
        self.cfg = self.servers[0]
        if isinstance(exc, _WrongServer | _DuplicateServerId):
            return exc
        lost = [e for e in round_ if isinstance(e, BinlogPositionLost)]
        if lost and not any(isinstance(e, _Behind) for e in round_):
            return BinlogPositionLost("; ".join(map(str, lost)))
        if all(isinstance(e, BinlogRefused) for e in round_):
            return exc
        return DatabaseUnavailable("; ".join(str(e) or "server closed the connection"
                                             for e in round_))

    def _next_delay(self) -> float:
        """The pause before the next session: the backoff starts over only after a session
        that lasted (a reader evicted by another with its server_id at once must not come
        back every 0.1 s, nor a 1236 that recurs at the current position)."""
        began, self._connected_at = self._connected_at, None
        if began is not None and time.monotonic() - began >= STABLE_SESSION:
            self.backoff.reset()
        return self.backoff.next()

    def _on_position_lost(self, exc: BinlogPositionLost, delay: float) -> None:
        where = (" on every server of [binlog] servers ("
                 + ", ".join(describe(c) for c in self.servers) + ")"
                 if len(self.servers) > 1 else "")
        logger.error(
            "binlog position {} is gone or unreadable{} ({}); restarting from the server's "
            "current position in {:.1f} s; a sweep will find alarms set in between",
            self.position.describe() if self.position else "(the current one)", where, exc,
            delay,
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

    def _hand_over(self, changes: list[RowChange], cp: Checkpoint) -> None:
        """In the event loop: a transaction's rows (or only its boundary), then how far the
        stream has read."""
        self.on_batch(changes, cp)
        self.on_progress(cp)
