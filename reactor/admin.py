"""Operator commands: `reactor status`, `reactor alarm ...`, `reactor menu`.

They talk to the same database with the same account as the daemon (blocking PyMySQL is
fine here: one short-lived process, no event loop to keep free). Unit states come over
the configured bus; when it cannot be reached the table says so and still prints.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import pymysql

from reactor.breaker import Breaker, State
from reactor.config import Config
from reactor.db import connect, describe, mapped
from reactor.errors import ReactorError
from reactor.state import read_breakers
from reactor.systemd import Systemd

LATEST_STEP_SQL = (
    "SELECT a.process_id, a.step, a.at, a.detail FROM REACTOR_AUDIT a "
    "JOIN (SELECT process_id, MAX(id) AS id FROM REACTOR_AUDIT GROUP BY process_id) m "
    "ON a.id = m.id"
)
PROCESSES_SQL = (
    "SELECT p.process_id, p.process_name, COALESCE(s.alarma, 0), s.notes FROM PROCESE p "
    "LEFT JOIN STATUS_PROCESS s ON s.process_id = p.process_id ORDER BY p.process_id"
)


class NotFound(ReactorError):
    """No process with that id or name."""


@dataclass
class ProcessStatus:
    id: int
    name: str
    unit: str
    alarma: int
    notes: str | None
    breaker: str
    last_action: str | None
    last_action_at: str | None
    unit_state: str


def _connection(config: Config) -> pymysql.Connection:
    return connect(config.database)


def processes(config: Config) -> list[tuple[int, str, int, str | None]]:
    with _connection(config) as conn, conn.cursor() as cur, mapped("list processes"):
        cur.execute(PROCESSES_SQL)
        return [(int(i), str(n), int(a), s) for i, n, a, s in cur.fetchall()]


def _latest_steps(config: Config) -> dict[int, tuple[str, dt.datetime, str]]:
    with _connection(config) as conn, conn.cursor() as cur:
        try:
            cur.execute(LATEST_STEP_SQL)
        except pymysql.err.MySQLError:
            return {}  # no audit table or no grant: the column stays empty
        return {int(pid): (step, at, detail) for pid, step, at, detail in cur.fetchall()}


async def _unit_states(config: Config, units: list[str]) -> dict[str, str]:
    sd = Systemd(config.systemd)
    try:
        await sd.connect()
        return {unit: f"? ({type(st).__name__})" if isinstance(st, ReactorError)
                else f"{st.active_state}/{st.sub_state}" if st.exists else "not-found"
                for unit, st in (await sd.unit_states(units)).items()}
    except ReactorError as exc:
        return dict.fromkeys(units, f"? (bus: {exc})"[:60])
    finally:
        await sd.close()


def status(config: Config) -> list[ProcessStatus]:
    rows = processes(config)
    steps = _latest_steps(config)
    unreadable = ""
    try:
        breakers = read_breakers(config.monitor.state_file)
    except OSError as exc:
        breakers, unreadable = {}, f"? ({exc.strerror}: {config.monitor.state_file})"
    units = {name: config.unit_for(name) for _, name, _, _ in rows}
    states = asyncio.run(_unit_states(config, sorted(set(units.values()))))
    out = []
    for pid, name, alarma, notes in rows:
        breaker = unreadable or describe_breaker(
            Breaker.from_json(breakers[name]) if name in breakers else Breaker())
        step = steps.get(pid)
        out.append(ProcessStatus(
            id=pid, name=name, unit=units[name], alarma=alarma, notes=notes, breaker=breaker,
            last_action=f"{step[0]}: {step[2]}".rstrip(": ") if step else None,
            last_action_at=step[1].isoformat(sep=" ", timespec="seconds") if step else None,
            unit_state=states.get(units[name], "?"),
        ))
    return out


def describe_breaker(b: Breaker) -> str:
    """closed | closed (2 failed) | open until 09:55:06 | half_open"""
    if b.state is State.OPEN:
        return "open until " + dt.datetime.fromtimestamp(b.until).strftime("%H:%M:%S")
    if b.state is State.CLOSED and b.failures:
        return f"closed ({b.failures} failed)"
    return b.state.value


def table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def print_status(config: Config, as_json: bool, out: TextIO = sys.stdout) -> None:
    rows = status(config)
    if as_json:
        out.write(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        return
    table(["ID", "NAME", "UNIT", "ALARMA", "BREAKER", "LAST ACTION", "WHEN", "UNIT STATE"],
          [[str(r.id), r.name, r.unit, str(r.alarma), r.breaker, (r.last_action or "-")[:48],
            r.last_action_at or "-", r.unit_state] for r in rows], out)


# ------------------------------------------------------------------ alarms


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
    with _connection(config) as conn, conn.cursor() as cur, mapped("set alarm"):
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
