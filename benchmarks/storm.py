"""Bursts: one UPDATE raising many alarms at once.

- storm: N real units (`sleep infinity`), all alarmed by one UPDATE while `reactor run`
  (binlog mode) is running. Times until every alarm was detected, every RestartUnit issued,
  every unit restarted and every alarm cleared (alarma=0 seen by a client); then checks
  that each unit was restarted exactly once, counted by systemd itself, not by the
  reactor: a D-Bus connection of the benchmark's own (lab.JobCounter), subscribed before
  the UPDATE, counts the JobRemoved signals per unit until the reactor has been left
  running LINGER s after the last clear and stopped (so a late duplicate is seen). Also
  reported: the reactor's `restart_issued` audit rows and the units' new
  ExecMainStartTimestamp.
- detection: N rows (no units) alarmed by one UPDATE while `reactor watch` prints one JSON
  line per alarm; times until the last line arrived.
"""

from __future__ import annotations

import collections
import json
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from benchmarks.idle import cpu_seconds
from benchmarks.rigs import JobCounter, Lab
from benchmarks.workload import audit_epoch, wait_audit
from lab.mariadb import free_port

Tick = Callable[[int], None]
STORM_TIMEOUT = 900.0
LINGER = 2.0  # s the reactor keeps running after the last clear: a late duplicate shows
POLL_MIN, POLL_MAX = 0.005, 0.1  # s between two counts of the alarms left (poll_pause)
STORM_FIRST_PID = 20_001
DETECT_FIRST_PID = 100_001


def _cpu(lab: Lab, reactor_pid: int) -> dict[str, float | None]:
    """CPU seconds used so far: reactor, mariadbd, and the whole systemd sandbox (systemd,
    dbus-daemon, the units)."""
    assert lab.server.proc is not None
    return {"reactor_cpu_s": cpu_seconds(reactor_pid),
            "mariadbd_cpu_s": cpu_seconds(lab.server.proc.pid),
            "systemd_sandbox_cpu_s": lab.sandbox_cpu_seconds()}


def _cpu_used(before: dict[str, float | None],
              after: dict[str, float | None]) -> dict[str, float | None]:
    used: dict[str, float | None] = {}
    for key, start in before.items():
        end = after[key]
        used[key] = None if start is None or end is None else round(end - start, 3)
    return used


def calls_of(port: int) -> dict[str, dict[str, float]]:
    """reactor_dbus_calls_total{member} and reactor_database_calls_total{query} from a
    running reactor's /metrics (since its start: the storm is all it did, but for its
    start-up sweep and name load)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with direct.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, dict[str, float]] = {"dbus": {}, "database": {}}
    for kind, metric, label in (("dbus", "reactor_dbus_calls_total", "member"),
                                ("database", "reactor_database_calls_total", "query")):
        for m in re.finditer(rf'^{metric}{{{label}="([^"]+)"}} (\S+)$', text, re.M):
            out[kind][m.group(1)] = float(m.group(2))
    return out


def poll_pause(done: int, left: int, elapsed: float) -> float:
    """How long the storm's watcher waits before it counts the alarms left again: a tenth
    of the time the rest should take at the rate so far, between POLL_MIN and POLL_MAX. The
    watcher is the benchmark's apparatus, which the floor does not run beside systemd: it
    polls gently while many alarms are left (a COUNT every 10 ms cost MariaDB a tenth of a
    second of CPU per storm) and finely near the end, where its resolution counts."""
    if done <= 0 or elapsed <= 0:
        return POLL_MAX
    return min(POLL_MAX, max(POLL_MIN, left / (done / elapsed) / 10))


def _ms(t: float | None, since: float) -> float | None:
    return None if t is None else round((t - since) * 1000, 3)


def storm_rows(units: int) -> list[tuple[int, str]]:
    return [(STORM_FIRST_PID + i, f"bench-storm-{i:05d}") for i in range(units)]


def run_storm(lab: Lab, rows: list[tuple[int, str]], concurrency: int, settle: float,
              server_id: int, tick: Tick) -> dict[str, Any]:
    """One storm over `rows` (their units already loaded and started: lab.add_units)."""
    units = len(rows)
    lo, hi = rows[0][0], rows[-1][0]
    names = [f"{name}.service" for _, name in rows]
    before = lab.unit_states(names)
    port = free_port()
    config = lab.write_config("storm", mode="binlog", check_interval=300, server_id=server_id,
                              settle=settle, max_concurrent=concurrency,
                              listen=f"127.0.0.1:{port}")
    reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=")
    counter: JobCounter | None = None
    counts: dict[str, collections.Counter[str]] = {}
    try:
        mark = lab.audit_mark()
        counter = lab.job_counter(names)  # subscribed: every job from now on is counted
        cpu_before = _cpu(lab, reactor.proc.pid)
        with lab.connect() as conn, conn.cursor() as cur:
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 "
                        "WHERE process_id BETWEEN %s AND %s", (lo, hi))
            committed = time.time()
            cleared_at: float | None = None
            deadline = time.monotonic() + STORM_TIMEOUT
            while time.monotonic() < deadline:
                cur.execute("SELECT COUNT(*) FROM STATUS_PROCESS WHERE alarma = 1 "
                            "AND process_id BETWEEN %s AND %s", (lo, hi))
                left = int(cur.fetchone()[0])
                if left == 0:
                    cleared_at = time.time()
                    break
                tick(units - left)
                time.sleep(poll_pause(units - left, left, time.time() - committed))
        tick(units)
        cpu_used = _cpu_used(cpu_before, _cpu(lab, reactor.proc.pid))
        pids = [pid for pid, _ in rows]
        wait_audit(lab, mark, pids, {"detected": units, "cleared": units})
        if cleared_at is not None:
            time.sleep(max(0.0, cleared_at + LINGER - time.time()))
        calls = calls_of(port)
    finally:
        try:
            lab.stop_reactor(reactor)
        finally:
            if counter is not None:  # after the reactor: its last jobs are counted too
                counts = counter.stop()
    audit = lab.query(
        "SELECT step, COUNT(*), COUNT(DISTINCT process_id), MIN(at), MAX(at) FROM REACTOR_AUDIT "
        "WHERE id > %s AND process_id BETWEEN %s AND %s GROUP BY step", (mark, lo, hi))
    steps = {str(s): (int(n), int(d), audit_epoch(first), audit_epoch(last))
             for s, n, d, first, last in audit}
    twice = lab.query(
        "SELECT COUNT(*) FROM (SELECT process_id FROM REACTOR_AUDIT WHERE id > %s AND "
        "step = 'restart_issued' AND process_id BETWEEN %s AND %s GROUP BY process_id "
        "HAVING COUNT(*) > 1) t", (mark, lo, hi))[0][0]
    after = lab.unit_states(names)
    new_start = sum(1 for u in names
                    if after[u].exec_main_start_us > before[u].exec_main_start_us)
    active = sum(1 for u in names if after[u].active_state == "active")

    def last(step: str) -> float | None:
        return _ms(steps[step][3], committed) if step in steps else None

    def count(step: str) -> int:
        return steps[step][0] if step in steps else 0

    issued_units = steps["restart_issued"][1] if "restart_issued" in steps else 0
    done_s = (cleared_at - committed) if cleared_at is not None else None
    # systemd's own count: finished jobs per unit, whatever the reactor logged
    jobs = {u: sum(counts[u].values()) if u in counts else 0 for u in names}
    results: collections.Counter[str] = collections.Counter()
    for per_unit in counts.values():
        results.update(per_unit)
    one_done = sum(1 for u in names if jobs[u] == 1 and counts[u]["done"] == 1)
    assert counter is not None
    return {
        "units": units,
        "max_concurrent_restarts": concurrency,
        "settle_time": settle,
        "first_detected_ms": _ms(steps["detected"][2], committed) if "detected" in steps
        else None,
        "all_detected_ms": last("detected"),
        "all_restart_issued_ms": last("restart_issued"),
        "all_restarted_ms": last("restarted"),
        "all_cleared_ms": _ms(cleared_at, committed),
        "restarts_per_s": round(units / done_s, 1) if done_s else None,
        **cpu_used,
        "detected": count("detected"),
        "restart_issued": count("restart_issued"),
        "units_restart_issued": issued_units,
        "audit_units_restart_issued_twice": int(twice),
        "linger_s": LINGER,
        "job_signals": counter.signals,
        "job_results": dict(sorted(results.items())),
        "units_one_job_done": one_done,
        "units_one_job": sum(1 for u in names if jobs[u] == 1),
        "units_restarted_twice": sum(1 for u in names if jobs[u] > 1),
        "units_not_restarted": sum(1 for u in names if jobs[u] == 0),
        "units_with_new_start_timestamp": new_start,
        "units_active_after": active,
        "health_failed": count("health_failed"),
        "restart_failed": count("restart_failed"),
        "cleared": count("cleared"),
        # from systemd's count: every unit exactly one finished job, and it succeeded
        "exactly_once": one_done == units,
        # what a cycle costs, from the reactor's own counters (its /metrics): D-Bus calls per
        # method and database pool calls per query, per unit of the storm
        "dbus_calls_per_cycle": {k: round(v / units, 3) for k, v in calls["dbus"].items()},
        "database_calls_per_cycle": {k: round(v / units, 3)
                                     for k, v in calls["database"].items()},
    }


def detection_rows(count: int) -> list[tuple[int, str]]:
    return [(DETECT_FIRST_PID + i, f"bench-detect-{i:06d}") for i in range(count)]


def run_detection(lab: Lab, rows: list[tuple[int, str]], server_id: int,
                  tick: Tick) -> dict[str, Any]:
    """One UPDATE alarming `rows` (already added: lab.add_rows) while `reactor watch` runs;
    the rows are reset afterwards, so that the next round alarms them again."""
    rows_count = len(rows)
    lo, hi = rows[0][0], rows[-1][0]
    config = lab.write_config("detect", mode="binlog", check_interval=300,
                              server_id=server_id, settle=0)
    watch = lab.start_reactor("watch", "--config", str(config), ready="watching for alarms")
    try:
        with lab.connect() as conn, conn.cursor() as cur:
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 "
                        "WHERE process_id BETWEEN %s AND %s", (lo, hi))
            committed = time.time()
        seen: set[int] = set()
        first_line = last_line = None
        detected: list[float] = []
        deadline = time.monotonic() + max(60.0, rows_count / 100)
        while len(seen) < rows_count and time.monotonic() < deadline:
            try:
                line = watch.line(timeout=max(1.0, deadline - time.monotonic()))
            except AssertionError:  # nothing more within the deadline: report what was seen
                break
            now = time.time()
            alarm = json.loads(line)
            pid = int(alarm["process_id"])
            if lo <= pid <= hi and pid not in seen:
                seen.add(pid)
                detected.append(float(alarm["detected_at"]))
                first_line = first_line or now
                last_line = now
                if len(seen) % max(1, rows_count // 100) == 0:
                    tick(len(seen))
        tick(len(seen))
    finally:
        lab.stop_reactor(watch)
        lab.query("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id BETWEEN %s AND %s",
                  (lo, hi))
    return {
        "rows": rows_count,
        "seen": len(seen),
        "first_line_ms": _ms(first_line, committed),
        "last_line_ms": _ms(last_line, committed),
        "last_detected_ms": _ms(max(detected), committed) if detected else None,
        "rows_per_s": round(len(seen) / (last_line - committed), 1)
        if last_line and last_line > committed else None,
    }
