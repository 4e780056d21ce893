"""The read queries of the sources and the operator commands, each run with a cursor of
the pool (`await database.call(fetch_alarmed)`) or of a connection of its own."""

from __future__ import annotations

import pymysql
import pymysql.cursors

from reactor.storage.database import TRANSIENT_CODES

SWEEP_SQL = (
    "SELECT s.process_id, p.process_name FROM STATUS_PROCESS s "
    "LEFT JOIN PROCESE p ON p.process_id = s.process_id WHERE s.alarma = 1"
)


def fetch_alarmed(cur: pymysql.cursors.Cursor) -> list[tuple[int, str | None]]:
    """Every process whose alarma is 1, with its name (None when PROCESE lacks the id)."""
    cur.execute(SWEEP_SQL)
    return [(int(pid), name) for pid, name in cur.fetchall()]


def fetch_alarmed_at(cur: pymysql.cursors.Cursor
                     ) -> tuple[list[tuple[int, str | None]], tuple[str, int] | None]:
    """fetch_alarmed, then the server's binlog position: every row change the rows show
    lies before it (None when the position cannot be read: no log_bin, or no grant)."""
    rows = fetch_alarmed(cur)
    try:
        position = master_status(cur)
    except pymysql.err.MySQLError as exc:
        if not exc.args or exc.args[0] in TRANSIENT_CODES:
            raise  # the connection failed, not the statement
        position = None  # refused: BINLOG MONITOR revoked
    return rows, position


def fetch_names(cur: pymysql.cursors.Cursor) -> dict[int, str]:
    cur.execute("SELECT process_id, process_name FROM PROCESE")
    return {int(pid): name for pid, name in cur.fetchall()}


CHUNK = 1000  # ids per IN list


def fetch_statuses(cur: pymysql.cursors.Cursor,
                   pids: list[int]) -> dict[int, tuple[int, str | None]]:
    """(alarma, process_name) of each of these processes now; those STATUS_PROCESS lacks
    are not in the answer."""
    out: dict[int, tuple[int, str | None]] = {}
    for i in range(0, len(pids), CHUNK):
        part = pids[i:i + CHUNK]
        cur.execute("SELECT s.process_id, s.alarma, p.process_name FROM STATUS_PROCESS s "
                    "LEFT JOIN PROCESE p ON p.process_id = s.process_id WHERE s.process_id "
                    f"IN ({', '.join(['%s'] * len(part))})", part)
        out.update({int(pid): (int(alarma), None if name is None else str(name))
                    for pid, alarma, name in cur.fetchall()})
    return out


def fetch_names_of(cur: pymysql.cursors.Cursor, pids: list[int]) -> dict[int, str]:
    """The names PROCESE has for these processes (those it lacks are not in the answer)."""
    out: dict[int, str] = {}
    for i in range(0, len(pids), CHUNK):
        part = pids[i:i + CHUNK]
        cur.execute("SELECT process_id, process_name FROM PROCESE WHERE process_id "
                    f"IN ({', '.join(['%s'] * len(part))})", part)
        out.update({int(pid): str(name) for pid, name in cur.fetchall()})
    return out


def master_status(cur: pymysql.cursors.Cursor) -> tuple[str, int] | None:
    """The server's current binlog file and position (None when log_bin is off)."""
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    return None if row is None else (str(row[0]), int(row[1]))
