"""PyMySQL adapter: connections, a pool of them for asyncio, and error mapping.

PyMySQL blocks, so the event loop never calls it directly: `Database.call(fn, ...)` runs
`fn(cursor, ...)` in a small pool of threads, each holding its own connection.

Error handling: PyMySQL errors are mapped here, at the boundary. Lost or refused
connections and timeouts -> DatabaseUnavailable (transient; the thread's connection is
dropped and reopened on the next call). Access denied, unknown schema or table ->
DatabaseRefused (permanent until an operator fixes grants or schema).

Row locks are not dead servers: an operator's open transaction holding a STATUS_PROCESS
row makes our UPDATE wait. Each session sets its lock waits (row and metadata locks,
LOCK_WAIT_TIMEOUT) below the socket's read timeout (QUERY_TIMEOUT), so that the server
answers 1205 before the client gives the connection up; 1205 and 1213 (deadlock) ->
RowLocked: the caller retries the statement, and every connection of the pool is kept.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from reactor.config import DatabaseConfig
from reactor.errors import DatabaseRefused, DatabaseUnavailable, RowLocked
from reactor.events import Condition, Observers

T = TypeVar("T")

# client-side codes: can't connect, server gone, lost connection, out of sync
TRANSIENT_CODES = frozenset({2002, 2003, 2005, 2006, 2013, 2014, 2055, 1040, 1053})
LOCK_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock: retry the statement
QUERY_TIMEOUT = 10.0  # seconds a statement may take before the connection is dropped
LOCK_WAIT_TIMEOUT = 5  # whole seconds a statement waits for a lock: below QUERY_TIMEOUT
SESSION_SQL = (f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}, "
               f"lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")

def map_error(exc: BaseException, what: str) -> Exception:
    """A PyMySQL / socket exception -> the reactor's own, with the server's message."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    text = f"{what}: {message}" + (f" (error {code})" if code else "")
    if isinstance(exc, OSError | EOFError | TimeoutError) or code is None:
        return DatabaseUnavailable(text)
    if code in LOCK_CODES:
        return RowLocked(text)
    if code in TRANSIENT_CODES or isinstance(exc, pymysql.err.InterfaceError):
        return DatabaseUnavailable(text)
    return DatabaseRefused(text)


def connect(cfg: DatabaseConfig, *, schema: bool = True, **extra: Any) -> pymysql.Connection:
    """Open one connection (blocking). Raises DatabaseUnavailable or DatabaseRefused."""
    args = cfg.pymysql_args()
    if schema:
        args["database"] = cfg.database
    args.setdefault("read_timeout", QUERY_TIMEOUT)
    args.setdefault("write_timeout", QUERY_TIMEOUT)
    args.setdefault("init_command", SESSION_SQL)
    args.update(extra)
    try:
        return pymysql.connect(**args)
    except (pymysql.err.MySQLError, OSError) as exc:
        raise map_error(exc, f"cannot connect to {describe(cfg)} as {cfg.user}") from exc


def describe(cfg: DatabaseConfig) -> str:
    return cfg.socket if cfg.socket else f"{cfg.host}:{cfg.port}"


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Re-raise PyMySQL errors inside the block as the reactor's own."""
    try:
        yield
    except (pymysql.err.MySQLError, OSError) as exc:
        raise map_error(exc, what) from exc


QUEUE_PER_WORKER = 4  # calls handed to the thread pool at once, per thread


class Database:
    """A pool of blocking connections used from asyncio through worker threads.

    Each worker thread keeps one connection. When one of them finds the server gone, the
    connections of the others date from before too (a restarted server): they are all
    replaced at their next use, rather than each failing once first."""

    def __init__(self, cfg: DatabaseConfig, *, workers: int = 4,
                 observers: Observers | None = None) -> None:
        self.cfg = cfg
        self.observers = observers if observers is not None else Observers()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")
        # the executor's own queue has no bound: calls wait here instead, as coroutines, so
        # that a storm of lookups cannot queue work (and memory) without limit
        self._queued = asyncio.Semaphore(workers * QUEUE_PER_WORKER)
        self.calls: collections.Counter[str] = collections.Counter()  # per query function
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[pymysql.Connection] = []
        self._generation = 0  # bumped when a connection of the current one is lost
        self.opened = 0  # connections opened so far (a lock wait must not open one)

    def _conn(self) -> pymysql.Connection:
        conn: pymysql.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            self._drop()  # opened before a loss another worker saw
            conn = None
        if conn is None:
            generation = self._generation
            conn = connect(self.cfg)
            self._local.conn, self._local.generation = conn, generation
            with self._lock:
                self._conns.append(conn)
                self.opened += 1
        return conn

    def _lost(self) -> None:
        """This thread's connection is gone: so are the others of its generation."""
        with self._lock:
            if getattr(self._local, "generation", None) == self._generation:
                self._generation += 1
        self._drop()

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken; closing is best effort
                pass

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(cursor, *args) on this thread's connection (blocking)."""
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                return fn(cur, *args)
        except (pymysql.err.MySQLError, OSError) as exc:
            mapped_exc = map_error(exc, getattr(fn, "__name__", "query"))
            if isinstance(mapped_exc, DatabaseUnavailable):
                self._lost()
            raise mapped_exc from exc

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(cursor, *args) in a worker thread. The database being unreachable is a
        condition reported to the observers when a call first fails that way, and over when
        one succeeds again."""
        loop = asyncio.get_running_loop()
        self.calls[getattr(fn, "__name__", "query")] += 1
        try:
            async with self._queued:
                answer = await loop.run_in_executor(self._pool, self.run_sync, fn, *args)
        except DatabaseUnavailable as exc:
            self.observers.begin(Condition.DATABASE_DOWN, str(exc))
            raise
        if Condition.DATABASE_DOWN in self.observers.active:
            self.observers.end(Condition.DATABASE_DOWN, "database reachable again")
        return answer

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
