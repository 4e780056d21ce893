"""`reactor alarm ...` and the menu: list processes, raise and reset alarms, as an
operator's SQL client would (blocking PyMySQL: a short-lived command, no event loop).

With PROCESE's host column (sql/fleet.sql) the list shows each process's host, and
`--host NAME` keeps the processes of one host (`--host ''`: those with no host) for the
list and for `set --all` / `reset --all`."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from reactor.config import Config
from reactor.errors import NotFound
from reactor.ops.table import table
from reactor.storage.database import connect, describe, mapped
from reactor.storage.queries import has_host_column

PROCESSES_SQL = (
    "SELECT p.process_id, p.process_name, COALESCE(s.alarma, 0), s.notes FROM PROCESE p "
    "LEFT JOIN STATUS_PROCESS s ON s.process_id = p.process_id ORDER BY p.process_id"
)
HOST_PROCESSES_SQL = (
    "SELECT p.process_id, p.process_name, COALESCE(s.alarma, 0), s.notes, p.host "
    "FROM PROCESE p LEFT JOIN STATUS_PROCESS s ON s.process_id = p.process_id WHERE 1{} "
    "ORDER BY p.process_id"
)


def host_filter(host: str | None) -> tuple[str, tuple[object, ...]]:
    """(" AND condition on p.host", params) for --host ("" = no host); ("", ()) for all."""
    if host is None:
        return "", ()
    if not host.strip():
        return " AND COALESCE(p.host, '') = ''", ()
    return " AND p.host = %s", (host,)


def processes_on(config: Config, host: str | None = None
                 ) -> tuple[list[tuple[int, str, int, str | None, str | None]], bool]:
    """Every process (of `host`, when given) with its alarma, notes and host; and whether
    PROCESE has a host column (without one, no process has a host: --host '' is all)."""
    with connect(config.database) as conn, conn.cursor() as cur, mapped("list processes"):
        column = has_host_column(cur)
        if not column:
            cur.execute(PROCESSES_SQL)
            if host is not None and host.strip():
                return [], False  # no process has a host
            return [(int(i), str(n), int(a), s, None) for i, n, a, s in cur.fetchall()], False
        cond, params = host_filter(host)
        cur.execute(HOST_PROCESSES_SQL.format(cond), params)
        return [(int(i), str(n), int(a), s, h) for i, n, a, s, h in cur.fetchall()], True


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


def set_alarm(config: Config, ident: str | None, value: int,
              host: str | None = None) -> list[tuple[int, str]]:
    """alarma=value for one process (id or name) or, with ident None, for all (of `host`,
    when given). Returns the processes changed."""
    with connect(config.database) as conn, conn.cursor() as cur, mapped("set alarm"):
        if ident is None and host is not None:
            if not has_host_column(cur):
                raise NotFound("PROCESE has no host column (sql/fleet.sql): --host "
                               "selects nothing")
            cond, params = host_filter(host)
            cur.execute("SELECT s.process_id, p.process_name FROM STATUS_PROCESS s JOIN "
                        "PROCESE p ON p.process_id = s.process_id WHERE s.alarma <> %s"
                        + cond, (value, *params))
            changed = [(int(i), str(n)) for i, n in cur.fetchall()]
            cur.executemany("UPDATE STATUS_PROCESS SET alarma = %s WHERE process_id = %s "
                            "AND alarma <> %s", [(value, pid, value) for pid, _ in changed])
            return changed
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


def print_processes(config: Config, out: TextIO = sys.stdout, host: str | None = None) -> None:
    rows, column = processes_on(config, host)
    if not column:
        table(["ID", "NAME", "ALARMA", "NOTES"],
              [[str(i), n, str(a), s or ""] for i, n, a, s, _ in rows], out)
        return
    table(["ID", "NAME", "HOST", "ALARMA", "NOTES"],
          [[str(i), n, h or "-", str(a), s or ""] for i, n, a, s, h in rows], out)


def where(config: Config) -> str:
    return f"{config.database.database} on {describe(config.database)}"
