"""`reactor fleet`: every reactor of the database (REACTOR_FLEET), the ones not seen for a
while, and the alarms set on hosts where no live reactor runs.

A reactor is live when its row says `running` and it was seen within `--stale` seconds
(default: 3 x [monitor] fleet_interval, at least 30 s), by the database's own clock (each
reactor writes `last_seen = NOW(6)`). An alarm waits with nobody to act on it when its
process's host has no live reactor; an alarm of a row with no host waits unless a live
reactor takes unassigned rows ([monitor] take_unassigned).

Blocking PyMySQL: a short-lived command. Without sql/fleet.sql (no REACTOR_FLEET, or no
PROCESE.host) it says what is missing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import pymysql

from reactor.config import Config
from reactor.errors import DatabaseRefused
from reactor.ops.table import table
from reactor.storage.database import connect, mapped
from reactor.storage.fleet import MISSING_TABLE
from reactor.storage.queries import has_host_column
from reactor.text import one_line

FLEET_SQL = (
    "SELECT host, state, version, pid, mode, binlog_server, position, gtid, seconds_behind, "
    "in_flight, takes_unassigned, started_at, last_seen, "
    "TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)) / 1e6 FROM REACTOR_FLEET ORDER BY host"
)
ALARMED_SQL = (
    "SELECT s.process_id, p.process_name, p.host FROM STATUS_PROCESS s "
    "LEFT JOIN PROCESE p ON p.process_id = s.process_id WHERE s.alarma = 1 "
    "ORDER BY p.host, s.process_id"
)


@dataclass
class Reactor:
    host: str
    state: str
    version: str
    pid: int | None
    mode: str
    binlog_server: str | None
    position: str | None
    gtid: str | None
    seconds_behind: float | None
    in_flight: int
    takes_unassigned: bool
    started_at: str | None
    last_seen: str
    seen_ago: float
    live: bool


@dataclass
class Waiting:
    process_id: int
    process_name: str | None
    host: str | None  # None: no host (NULL), or PROCESE lacks the id


def stale_after(config: Config, given: float | None) -> float:
    return given if given is not None else max(30.0, 3 * config.monitor.fleet_interval)


def read(config: Config, stale: float) -> tuple[list[Reactor], list[Waiting] | None, str]:
    """The reactors, the alarms waiting on hosts without a live reactor (None: PROCESE has
    no host column), and what is missing ("" when nothing)."""
    with connect(config.database) as conn, conn.cursor() as cur, mapped("reactor fleet"):
        try:
            cur.execute(FLEET_SQL)
            rows = cur.fetchall()
        except pymysql.err.ProgrammingError as exc:
            if exc.args and exc.args[0] == MISSING_TABLE:
                return [], None, "REACTOR_FLEET is missing: apply sql/fleet.sql"
            raise
        reactors = []
        for (host, state, version, pid, mode, server, position, gtid, behind, in_flight,
             takes, started, seen, ago) in rows:
            ago = float(ago)
            reactors.append(Reactor(
                str(host), str(state), str(version), pid, str(mode), server, position, gtid,
                behind, int(in_flight), bool(takes),
                started.isoformat(sep=" ", timespec="seconds") if started else None,
                seen.isoformat(sep=" ", timespec="seconds"), round(ago, 1),
                state == "running" and ago <= stale))
        if not has_host_column(cur):
            return reactors, None, "PROCESE has no host column: apply sql/fleet.sql"
        cur.execute(ALARMED_SQL)
        live = {r.host.casefold() for r in reactors if r.live}
        unassigned_taken = any(r.live and r.takes_unassigned for r in reactors)
        waiting = []
        for pid, name, host in cur.fetchall():
            if host is None or not str(host).rstrip():
                if not unassigned_taken:
                    waiting.append(Waiting(int(pid), name, None))
            elif str(host).rstrip().casefold() not in live:
                waiting.append(Waiting(int(pid), name, str(host)))
        return reactors, waiting, ""


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def print_fleet(config: Config, as_json: bool, stale: float | None = None,
                out: TextIO = sys.stdout) -> int:
    """Print the fleet; the number of reactors not live plus alarms waiting."""
    after = stale_after(config, stale)
    try:
        reactors, waiting, missing = read(config, after)
    except DatabaseRefused as exc:
        raise DatabaseRefused(f"{exc} (the grants of sql/fleet.sql)") from exc
    if as_json:
        doc: dict[str, Any] = {
            "stale_after_s": after, "reactors": [asdict(r) for r in reactors],
            "waiting_alarms": None if waiting is None else [asdict(w) for w in waiting],
            "missing": missing or None}
        out.write(json.dumps(doc, indent=1, default=str) + "\n")
    else:
        table(["HOST", "STATE", "VERSION", "MODE", "READS FROM", "POSITION", "BEHIND",
               "IN FLIGHT", "LAST SEEN"],
              [[r.host, r.state if r.live else
                f"NOT SEEN ({r.state})" if r.state == "running" else r.state,
                r.version, r.mode, r.binlog_server or "-",
                (f"gtid {r.gtid}" if r.gtid else r.position) or "-",
                "-" if r.seconds_behind is None else f"{r.seconds_behind:g} s",
                str(r.in_flight), _ago(r.seen_ago)] for r in reactors], out)
        gone = [r.host for r in reactors if not r.live]
        out.write(f"\n{len(reactors)} reactor(s), {len(reactors) - len(gone)} live; not seen "
                  f"within {after:g} s or stopped: {one_line(', '.join(gone)) or 'none'}\n")
        if missing:
            out.write(f"{missing}\n")
        if waiting:
            out.write(f"\nalarms set where no live reactor runs ({len(waiting)}):\n")
            table(["ID", "NAME", "HOST"],
                  [[str(w.process_id), w.process_name or "(unknown)",
                    w.host or "(no host)"] for w in waiting], out)
        elif waiting is not None:
            out.write("no alarm waits on a host without a live reactor\n")
    return sum(1 for r in reactors if not r.live) + len(waiting or [])
