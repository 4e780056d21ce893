"""The read queries of the sources and the operator commands, each run with a cursor of
the pool (`await database.call(fetch_alarmed)`) or of a connection of its own."""

from __future__ import annotations

import pymysql
import pymysql.cursors

from reactor.ownership import Ownership
from reactor.storage.database import TRANSIENT_CODES

SWEEP_SQL = (
    "SELECT s.process_id, p.process_name FROM STATUS_PROCESS s "
    "LEFT JOIN PROCESE p ON p.process_id = s.process_id WHERE s.alarma = 1"
)


def sweep_sql(owned: Ownership | None) -> tuple[str, tuple[object, ...]]:
    """The sweep's query: with a host column, only this reactor's rows. `p.host = %s`
    turns the LEFT JOIN into a join the server drives from PROCESE's by_host index."""
    cond, params = owned.where("p.host") if owned is not None else ("", ())
    return SWEEP_SQL + cond, params


def fetch_alarmed(cur: pymysql.cursors.Cursor, owned: Ownership | None = None
                  ) -> list[tuple[int, str | None]]:
    """Every process whose alarma is 1 (of this reactor's: `owned`), with its name (None
    when PROCESE lacks the id)."""
    cur.execute(*sweep_sql(owned))
    return [(int(pid), name) for pid, name in cur.fetchall()]


def fetch_alarmed_at(cur: pymysql.cursors.Cursor, owned: Ownership | None = None,
                     gtid: bool = False,
                     ) -> tuple[list[tuple[int, str | None]], tuple[str, int, str] | None]:
    """fetch_alarmed, then the server's binlog position (and with `gtid`, its GTID
    position, else ""): every row change the rows show lies before it (None when the
    position cannot be read: no log_bin, or no grant)."""
    rows = fetch_alarmed(cur, owned)
    position: tuple[str, int, str] | None = None
    try:
        status = master_status(cur)
        if status is not None:
            position = (*status, gtid_position(cur) if gtid else "")
    except pymysql.err.MySQLError as exc:
        if not exc.args or exc.args[0] in TRANSIENT_CODES:
            raise  # the connection failed, not the statement
        position = None  # refused: BINLOG MONITOR revoked
    return rows, position


def fetch_processes(cur: pymysql.cursors.Cursor, host_column: bool
                    ) -> dict[int, tuple[str, str | None]]:
    """Every PROCESE row: id -> (name, host; None without the column or when NULL)."""
    cur.execute("SELECT process_id, process_name" + (", host" if host_column else "")
                + " FROM PROCESE")
    return {int(row[0]): (str(row[1]), row[2] if host_column else None)
            for row in cur.fetchall()}


CHUNK = 1000  # ids per IN list


def fetch_statuses(cur: pymysql.cursors.Cursor, pids: list[int], host_column: bool = False
                   ) -> dict[int, tuple[int, str | None, str | None]]:
    """(alarma, process_name, host) of these processes now, in IN lists of CHUNK; those
    STATUS_PROCESS lacks are not in the answer (name and host None when PROCESE lacks the
    row; host None too without the column)."""
    host = ", p.host" if host_column else ", NULL"
    out: dict[int, tuple[int, str | None, str | None]] = {}
    for i in range(0, len(pids), CHUNK):
        part = pids[i:i + CHUNK]
        cur.execute(f"SELECT s.process_id, s.alarma, p.process_name{host} FROM STATUS_PROCESS s "
                    "LEFT JOIN PROCESE p ON p.process_id = s.process_id WHERE s.process_id "
                    f"IN ({', '.join(['%s'] * len(part))})", part)
        out.update({int(pid): (int(alarma), None if name is None else str(name),
                               None if where is None else str(where))
                    for pid, alarma, name, where in cur.fetchall()})
    return out


def fetch_processes_of(cur: pymysql.cursors.Cursor, pids: list[int], host_column: bool = False
                       ) -> dict[int, tuple[str, str | None]]:
    """(process_name, host) of these processes' PROCESE rows; those it lacks are not in the
    answer (host None without the column, or when NULL)."""
    host = ", host" if host_column else ", NULL"
    out: dict[int, tuple[str, str | None]] = {}
    for i in range(0, len(pids), CHUNK):
        part = pids[i:i + CHUNK]
        cur.execute(f"SELECT process_id, process_name{host} FROM PROCESE WHERE process_id "
                    f"IN ({', '.join(['%s'] * len(part))})", part)
        out.update({int(pid): (str(name), None if where is None else str(where))
                    for pid, name, where in cur.fetchall()})
    return out


def has_host_column(cur: pymysql.cursors.Cursor) -> bool:
    """PROCESE has the `host` column of sql/fleet.sql."""
    cur.execute("SHOW COLUMNS FROM PROCESE LIKE 'host'")
    return cur.fetchone() is not None


def gtid_position(cur: pymysql.cursors.Cursor) -> str:
    """The server's GTID position: MariaDB's gtid_binlog_pos, MySQL's gtid_executed ("":
    neither)."""
    for variable in ("gtid_binlog_pos", "gtid_executed"):
        try:
            cur.execute(f"SELECT @@GLOBAL.{variable}")
        except pymysql.err.MySQLError as exc:
            if not exc.args or exc.args[0] in TRANSIENT_CODES:
                raise
            continue
        row = cur.fetchone()
        return "" if row is None or row[0] is None else str(row[0]).replace("\n", "")
    return ""


def master_status(cur: pymysql.cursors.Cursor) -> tuple[str, int] | None:
    """The server's current binlog file and position (None when log_bin is off)."""
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    return None if row is None else (str(row[0]), int(row[1]))
