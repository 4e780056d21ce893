"""This reactor's row in REACTOR_FLEET: the fleet view kept in the database itself.

    every [monitor] fleet_interval s:  INSERT ... ON DUPLICATE KEY UPDATE (host = the key)
    a clean stop:                      state = 'stopped'

Each row says which reactor runs where: host ([monitor] host), version, pid, mode, the
binlog server it reads from, its position and GTID, how far behind the source it reads,
its cycles in flight, whether it takes unassigned rows, when it started and `last_seen`,
which is the database's NOW(6): one clock for the whole fleet, whatever the hosts' clocks
say. `reactor fleet` (ops/fleet.py) reads the rows.

The table comes with sql/fleet.sql. Without it: on a database that has PROCESE's host
column (a fleet) a missing table is a degraded state, a WARNING once per run and a
FLEET_UNRECORDED happening (metrics, alert); on the seed schema (one host) it is nothing
to warn about. The writer then stops trying until a reload (`recheck`).

Error handling: a write that fails because the database is away is retried at the next
interval (the pool reports DATABASE_DOWN); no failure here ever stops the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pymysql.cursors
from loguru import logger

from reactor.errors import DatabaseRefused, ReactorError
from reactor.events import Happening, Observers
from reactor.ownership import Ownership
from reactor.storage.database import Database

UPSERT_SQL = (
    "INSERT INTO REACTOR_FLEET (host, state, version, pid, mode, binlog_server, position, "
    "gtid, seconds_behind, in_flight, takes_unassigned, started_at, last_seen) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NOW(6), NOW(6)) "
    "ON DUPLICATE KEY UPDATE state = VALUES(state), version = VALUES(version), "
    "pid = VALUES(pid), mode = VALUES(mode), binlog_server = VALUES(binlog_server), "
    "position = VALUES(position), gtid = VALUES(gtid), "
    "seconds_behind = VALUES(seconds_behind), in_flight = VALUES(in_flight), "
    "takes_unassigned = VALUES(takes_unassigned), "
    "started_at = IF(%s, NOW(6), started_at), last_seen = NOW(6)"
)
MISSING_TABLE = 1146  # ER_NO_SUCH_TABLE


@dataclass(frozen=True)
class FleetState:
    """What the row says about this reactor now."""

    state: str  # running, stopped
    version: str
    pid: int
    mode: str  # binlog, poll ("" while starting)
    binlog_server: str | None
    position: str | None
    gtid: str | None
    seconds_behind: float | None
    in_flight: int


def _upsert(cur: pymysql.cursors.Cursor, host: str, row: FleetState, takes: bool,
            first: bool) -> None:
    cur.execute(UPSERT_SQL, (host, row.state, row.version[:32], row.pid,
                             (row.mode or "starting")[:8], row.binlog_server, row.position,
                             row.gtid, row.seconds_behind, row.in_flight, int(takes), first))


class FleetRow:
    def __init__(self, database: Database, owned: Ownership, interval: float,
                 state: Callable[[], FleetState], observers: Observers | None = None) -> None:
        self.database = database
        self.owned = owned
        self.interval = interval
        self.state = state  # the daemon's view, read at each write
        self.observers = observers if observers is not None else Observers()
        self.enabled = interval > 0
        self.written = 0
        self._first = True  # the first write of this run sets started_at
        self._stop = asyncio.Event()

    async def write(self, row: FleetState | None = None) -> bool:
        """One write of the row; False when it was not written."""
        if not self.enabled:
            return False
        try:
            await self.database.call(_upsert, self.owned.host, row or self.state(),
                                     self.owned.take_unassigned, self._first)
        except DatabaseRefused as exc:
            self._refused(exc)
            return False
        except ReactorError as exc:  # away: the pool says so; next interval
            logger.debug("fleet row not written: {}", exc)
            return False
        self._first = False
        self.written += 1
        return True

    def _refused(self, exc: DatabaseRefused) -> None:
        self.enabled = False
        missing = f"(error {MISSING_TABLE})" in str(exc)
        if not self.owned.column:  # no table, or no grant on it (1142): not a fleet
            logger.debug("no REACTOR_FLEET row (one host, seed schema): {}", exc)
            return
        why = ("REACTOR_FLEET is missing: apply sql/fleet.sql" if missing
               else f"{exc} (see the grants in sql/fleet.sql)")
        logger.warning("this reactor's fleet row cannot be written: {}; `reactor fleet` will "
                       "not show host {} (set [monitor] fleet_interval = 0 to go without)",
                       why, self.owned.host)
        self.observers.happened(Happening.FLEET_UNRECORDED, why)

    def recheck(self) -> None:
        """After a reload: try again (a migration applied meanwhile); fleet_interval itself
        is restart-only (reload.RESTART_ONLY)."""
        self.enabled = self.interval > 0

    async def run(self) -> None:
        """Write the row every interval until stop()."""
        while not self._stop.is_set():
            await self.write()
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval or 3600)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def stopped(self, row: FleetState) -> None:
        """The clean stop's last write: state 'stopped'."""
        if self.enabled and self.written:
            await self.write(row)
