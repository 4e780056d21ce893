"""`reactor alarm ...` and the menu: list processes, raise and reset alarms, as an
operator's SQL client would (blocking PyMySQL: a short-lived command, no event loop)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from reactor.config import Config
from reactor.errors import NotFound
from reactor.ops.table import table
from reactor.storage.database import connect, describe, mapped

PROCESSES_SQL = (
    "SELECT p.process_id, p.process_name, COALESCE(s.alarma, 0), s.notes FROM PROCESE p "
    "LEFT JOIN STATUS_PROCESS s ON s.process_id = p.process_id ORDER BY p.process_id"
)


def processes(config: Config) -> list[tuple[int, str, int, str | None]]:
    with connect(config.database) as conn, conn.cursor() as cur, mapped("list processes"):
        cur.execute(PROCESSES_SQL)
        return [(int(i), str(n), int(a), s) for i, n, a, s in cur.fetchall()]


def _resolve_id(cur: Any, ident: str) -> tuple[int, str]:
    if ident.isdigit():
        cur.execute("SELECT process_id, process_name FROM PROCESE WHERE process_id = %s",
                    (int(ident),))
    else:
        cur.execute("SELECT process_id, process_name FROM PROCESE WHERE process_name = %s",
                    (ident,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no process with id or name {ident!r} in PROCESE")
    return int(row[0]), str(row[1])


def set_alarm(config: Config, ident: str | None, value: int) -> list[tuple[int, str]]:
    """alarma=value for one process (id or name) or, with ident None, for all. Returns
    the processes changed."""
    with connect(config.database) as conn, conn.cursor() as cur, mapped("set alarm"):
        if ident is None:
            cur.execute("SELECT s.process_id, p.process_name FROM STATUS_PROCESS s JOIN "
                        "PROCESE p ON p.process_id = s.process_id WHERE s.alarma <> %s",
                        (value,))
            changed = [(int(i), str(n)) for i, n in cur.fetchall()]
            cur.execute("UPDATE STATUS_PROCESS SET alarma = %s WHERE alarma <> %s",
                        (value, value))
            return changed
        pid, name = _resolve_id(cur, ident)
        if not cur.execute("UPDATE STATUS_PROCESS SET alarma = %s WHERE process_id = %s "
                           "AND alarma <> %s", (value, pid, value)):
            cur.execute("SELECT 1 FROM STATUS_PROCESS WHERE process_id = %s", (pid,))
            if cur.fetchone() is None:
                raise NotFound(f"process {name} (id {pid}) has no STATUS_PROCESS row")
            return []
        return [(pid, name)]


def print_processes(config: Config, out: TextIO = sys.stdout) -> None:
    rows = processes(config)
    table(["ID", "NAME", "ALARMA", "NOTES"],
          [[str(i), n, str(a), s or ""] for i, n, a, s in rows], out)


def where(config: Config) -> str:
    return f"{config.database.database} on {describe(config.database)}"
