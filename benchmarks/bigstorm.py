"""The 100,000-alarm storm: bounded memory, every row handled exactly once.

One UPDATE raises `rows` alarms: `real` of them name the storm's real units (already
loaded and started), the others name processes no unit matches, so that their cycles fail
fast (RestartUnit answers "not found") and each leaves a note. While the reactor works
through them the benchmark watches its peak RSS (VmHWM, the kernel's high-water mark) and,
at the end, checks from the database and from systemd that:
- every row was handled exactly once: one `detected` audit row and one outcome
  (`cleared`, or `cycle_failed` with a `restart failed` note), per process;
- every real unit was restarted once (systemd's own JobRemoved count).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from benchmarks.idle import memory_kb
from benchmarks.rigs import JobCounter, Lab
from benchmarks.storm import Tick

GHOST_FIRST_PID = 1_000_001
TIMEOUT = 1800.0


def ghost_rows(count: int) -> list[tuple[int, str]]:
    return [(GHOST_FIRST_PID + i, f"bench-ghost-{i:06d}") for i in range(count)]


def run(lab: Lab, real: list[tuple[int, str]], ghosts: list[tuple[int, str]],
        concurrency: int, server_id: int, tick: Tick) -> dict[str, Any]:
    """`real` units are loaded and started, `ghosts` rows added (lab.add_rows)."""
    rows = len(real) + len(ghosts)
    rlo, rhi = real[0][0], real[-1][0]
    glo, ghi = ghosts[0][0], ghosts[-1][0]
    where = "(process_id BETWEEN %s AND %s OR process_id BETWEEN %s AND %s)"
    span = (rlo, rhi, glo, ghi)
    names = [f"{name}.service" for _, name in real]
    config = lab.write_config("storm100k", mode="binlog", check_interval=3600,
                              server_id=server_id, settle=0, max_concurrent=concurrency,
                              max_attempts=1)
    reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=")
    counter: JobCounter | None = None
    counts: dict[str, collections.Counter[str]] = {}
    rss_start = memory_kb(reactor.proc.pid, "VmRSS")
    peak = 0
    try:
        mark = lab.audit_mark()
        counter = lab.job_counter(names)
        with lab.connect() as conn, conn.cursor() as cur:
            cur.execute(f"UPDATE STATUS_PROCESS SET alarma = 1 WHERE {where}", span)
            committed = time.time()
            finished: float | None = None
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                peak = max(peak, memory_kb(reactor.proc.pid, "VmHWM"))
                # handled: cleared, or its failure noted (the note is the last write)
                cur.execute(f"SELECT COUNT(*) FROM STATUS_PROCESS WHERE {where} AND "
                            "(alarma = 0 OR notes LIKE 'restart failed%%')", span)
                done = int(cur.fetchone()[0])
                tick(done)
                if done >= rows:
                    finished = time.time()
                    break
                time.sleep(0.5)
        _wait_audit(lab, mark, rows)
        peak = max(peak, memory_kb(reactor.proc.pid, "VmHWM"))
    finally:
        try:
            lab.stop_reactor(reactor)
        finally:
            if counter is not None:
                counts = counter.stop()
    per_pid = lab.query(
        "SELECT process_id, SUM(step = 'detected'), SUM(step = 'cleared'), "
        "SUM(step = 'cycle_failed') FROM REACTOR_AUDIT WHERE id > %s GROUP BY process_id",
        (mark,))
    real_ids = {pid for pid, _ in real}
    ghost_ids = {pid for pid, _ in ghosts}
    once = 0
    for pid, detected, cleared, failed in per_pid:
        outcome = int(cleared or 0) if pid in real_ids else int(failed or 0)
        if int(detected or 0) == 1 and outcome == 1 and (pid in real_ids or pid in ghost_ids):
            once += 1
    notes = lab.query(
        f"SELECT SUM(alarma = 0 AND notes LIKE 'restarted%%'), "
        f"SUM(alarma = 1 AND notes LIKE 'restart failed%%') FROM STATUS_PROCESS WHERE {where}",
        span)[0]
    jobs = {u: sum(counts[u].values()) if u in counts else 0 for u in names}
    one_done = sum(1 for u in names if jobs[u] == 1 and counts[u]["done"] == 1)
    return {
        "rows": rows,
        "real_units": len(real),
        "ghost_rows": len(ghosts),
        "max_concurrent_restarts": concurrency,
        "all_handled_ms": None if finished is None else round((finished - committed) * 1000),
        "rows_per_s": None if finished is None else round(rows / (finished - committed), 1),
        "rss_start_mb": round(rss_start / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "rows_handled": once,
        "notes_restarted": int(notes[0] or 0),
        "notes_failed": int(notes[1] or 0),
        "units_restarted_once": one_done,
        "units_restarted_twice": sum(1 for u in names if jobs[u] > 1),
        "units_not_restarted": sum(1 for u in names if jobs[u] == 0),
        "exactly_once": once == rows and one_done == len(real),
    }


def _wait_audit(lab: Lab, mark: int, rows: int, timeout: float = 120.0) -> None:
    """Until every process has its outcome audit row (written in batches after the notes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = lab.query("SELECT COUNT(DISTINCT process_id) FROM REACTOR_AUDIT WHERE id > %s "
                         "AND step IN ('cleared', 'cycle_failed')", (mark,))[0][0]
        if int(done) >= rows:
            return
        time.sleep(0.5)
