"""`reactor status`: per process, its alarm, breaker, last action and live unit state; then
the running daemon itself: its health, the binlog stream's position and lag, and the
alarms its sweeps caught that the stream had not delivered.

It talks to the same database with the same account as the daemon (blocking PyMySQL is
fine here: one short-lived process, no event loop to keep free). Unit states come over
the configured bus; when it cannot be reached the table says so and still prints. What
only the running daemon knows (lag, sweeps, cycles in flight) comes from its
/status.json ([metrics] listen); when that is off or does not answer, those say "-" (null
in JSON) and the rest still prints. `--json` prints the status document of
reactor/metrics/status.py: {"daemon": ..., "processes": [...]}.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import pymysql

from reactor.actions.breaker import Breaker
from reactor.actions.systemd import Systemd
from reactor.config import Config
from reactor.errors import ReactorError
from reactor.metrics import status as document
from reactor.metrics.status import describe_breaker
from reactor.ops import alarms
from reactor.ops.table import table
from reactor.storage.database import connect
from reactor.storage.statefile import read_breakers

LATEST_STEP_SQL = (
    "SELECT a.process_id, a.step, a.at, a.detail FROM REACTOR_AUDIT a "
    "JOIN (SELECT process_id, MAX(id) AS id FROM REACTOR_AUDIT GROUP BY process_id) m "
    "ON a.id = m.id"
)


@dataclass
class ProcessStatus:
    id: int
    name: str
    unit: str
    alarma: int
    notes: str | None
    breaker: str
    in_flight: bool | None  # None: the daemon's /status.json did not answer
    last_action: str | None
    last_action_at: str | None
    unit_state: str
    host: str | None = None  # PROCESE.host (None: NULL, or no such column)


def _latest_steps(config: Config) -> dict[int, tuple[str, dt.datetime, str]]:
    with connect(config.database) as conn, conn.cursor() as cur:
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


def status(config: Config, daemon: dict[str, Any] | None = None,
           host: str | None = None) -> list[ProcessStatus]:
    """Every process (of `host`, when given); `daemon` is the running daemon's status
    document, if it answered."""
    flying = {p["id"]: p["in_flight"] for p in daemon["processes"]} if daemon else {}
    with_hosts, _ = alarms.processes_on(config, host)
    hosts = {row[0]: row[4] for row in with_hosts}
    rows = [row[:4] for row in with_hosts]
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
            in_flight=flying.get(pid, False) if daemon else None,
            last_action=f"{step[0]}: {step[2]}".rstrip(": ") if step else None,
            last_action_at=step[1].isoformat(sep=" ", timespec="seconds") if step else None,
            unit_state=states.get(units[name], "?"), host=hosts.get(pid),
        ))
    return out


def print_status(config: Config, as_json: bool, out: TextIO = sys.stdout,
                 host: str | None = None) -> None:
    daemon, why = document.fetch(config.metrics)
    rows = status(config, daemon, host)
    if as_json:
        out.write(json.dumps({"daemon": daemon["daemon"] if daemon else None,
                              "processes": [asdict(r) for r in rows]}, indent=1) + "\n")
        return
    if any(r.host is not None for r in rows):
        table(["ID", "NAME", "HOST", "UNIT", "ALARMA", "BREAKER", "LAST ACTION", "WHEN",
               "UNIT STATE"],
              [[str(r.id), r.name, r.host or "-", r.unit, str(r.alarma), r.breaker,
                (r.last_action or "-")[:48], r.last_action_at or "-", r.unit_state]
               for r in rows], out)
    else:
        table(["ID", "NAME", "UNIT", "ALARMA", "BREAKER", "LAST ACTION", "WHEN",
               "UNIT STATE"],
              [[str(r.id), r.name, r.unit, str(r.alarma), r.breaker,
                (r.last_action or "-")[:48], r.last_action_at or "-", r.unit_state]
               for r in rows], out)
    out.write("\n" + "\n".join(document.summary(daemon["daemon"] if daemon else None, why))
              + "\n")
