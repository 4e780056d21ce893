"""Alerts: how fast an alert reaches a receiver, and what a dead sink costs the restarts.

- latency: `reactor run` with one webhook sink (`group_wait = 0`, `cooldown = 0`) pointing
  at a receiver on loopback (lab.receiver, in this process). N processes whose unit does
  not exist (`restart_strategy = service`, one attempt: their cycle fails at once, a
  `cycle_failed` alert) are alarmed one after another; for each, the time from the step
  (the alert's `at`, the reactor's wall clock) to the receiver's arrival time (the same
  machine's wall clock). p50/p99 over N.
- dead sink: the usual alarm workload (workload.plan/run_alarms over real units) run twice
  in the same lab, once without sinks and once with an Alertmanager sink on a closed port
  that wants everything (`min_severity = info`, `cooldown = 0`: each restart is an info
  alert that the sink's courier keeps failing to deliver). The figure is binlog dispatch
  (commit -> RestartUnit issued) p50 of each run, and their ratio: delivery must not slow
  the event path.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import report
from benchmarks.rigs import Lab
from benchmarks.workload import Tick, attach_audit, plan, record, run_alarms
from lab.mariadb import free_port
from lab.receiver import Receiver

LATENCY_FIRST_PID = 200_001
DEAD_FIRST_PID = 210_001
SERVER_IDS = {"latency": 4340, "no_sinks": 4341, "dead_sink": 4342}  # main: scrape 4330
ARRIVAL_TIMEOUT = 30.0
RATIO_TARGET = 1.10  # dead-sink dispatch p50 within 10 % of the run without sinks


def _latency(lab: Lab, alarms: int, tick: Tick | None = None) -> dict[str, Any]:
    rows = [(LATENCY_FIRST_PID + i, f"bench-noalert-unit-{i:05d}") for i in range(alarms)]
    lab.add_rows(rows)  # no units: every cycle fails at once
    receiver = Receiver().start()
    try:
        config = lab.write_config(
            "alerts-latency", mode="binlog", check_interval=3600,
            server_id=SERVER_IDS["latency"], settle=0,
            extra={"alerts": {"group_wait": 0, "cooldown": 0},
                   "alert.hook": {"type": "webhook", "url": receiver.url},
                   "process.default": {"restart_strategy": "service", "max_attempts": 1}})
        reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=")
        latencies: list[float] = []
        lost = 0
        try:
            with lab.connect() as conn, conn.cursor() as cur:
                for n, (pid, _) in enumerate(rows, 1):
                    cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s",
                                (pid,))
                    arrival = _arrival(receiver, pid)
                    if arrival is None:
                        lost += 1
                    else:
                        latencies.append(arrival)
                    if tick is not None:
                        tick(n)
        finally:
            lab.stop_reactor(reactor)
    finally:
        receiver.stop()
    return {"alarms": alarms, "delivered": len(latencies), "lost": lost,
            "latency_ms": report.summarize(latencies), "samples_ms": latencies}


def _arrival(receiver: Receiver, pid: int) -> float | None:
    """ms from process `pid`'s alert (its `at_unix`) to its arrival at the receiver; None
    when it does not arrive within ARRIVAL_TIMEOUT."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    seen = 0
    while (left := deadline - time.monotonic()) > 0:
        try:
            got = receiver.wait(seen + 1, timeout=left)
        except AssertionError:
            return None
        for delivery in got[seen:]:
            for alert in delivery.body.get("alerts", []):
                if alert.get("process_id") == pid and alert.get("status") == "firing":
                    return (delivery.at - alert["at_unix"]) * 1000
        seen = len(got)
    return None


def _dispatch(lab: Lab, name: str, rows: list[tuple[int, str]], alarms: int, seed: int,
              max_pause: float, extra: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    workload = plan(alarms, [pid for pid, _ in rows], max_pause, seed)
    config = lab.write_config(f"alerts-{name}", mode="binlog", check_interval=3600,
                              server_id=SERVER_IDS[name], settle=0, extra=extra)
    reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=")
    try:
        mark = lab.audit_mark()
        samples = run_alarms(lab, workload, 10.0, lambda _: None)
        attach_audit(lab, samples, mark)
    finally:
        lab.stop_reactor(reactor)
    return [record(s) for s in samples]


def run_alerts(lab: Lab, alarms: int, units: int, seed: int, max_pause: float,
               tick: Tick | None = None) -> dict[str, Any]:
    """Both measurements; results["alerts"] in latest.json."""
    started = time.monotonic()
    # alarms other phases left set (detection: rows without units) would be swept up at
    # each start and fail there: cycles and alerts that are not this phase's
    lab.query("UPDATE STATUS_PROCESS SET alarma = 0 WHERE alarma = 1")
    out: dict[str, Any] = {"latency": _latency(lab, alarms, tick)}
    rows = [(DEAD_FIRST_PID + i, f"bench-alerts-{i + 1:02d}") for i in range(units)]
    lab.add_units(rows)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    runs = {
        "no_sinks": {},
        "dead_sink": {"alerts": {"cooldown": 0},
                      "alert.dead": {"type": "alertmanager", "url": dead,
                                     "min_severity": "info"}},
    }
    for name, extra in runs.items():
        lab.query("UPDATE STATUS_PROCESS SET alarma = 0 WHERE alarma = 1")  # latency's rows
        records = _dispatch(lab, name, rows, alarms, seed, max_pause, extra)
        values = report.metric_lists(records, "binlog")
        out[name] = {"dispatch_ms": report.summarize(values["dispatch_ms"]),
                     "cycle_ms": report.summarize(values["cycle_ms"]),
                     "alarms": len(records),
                     "not_cleared": sum(1 for r in records if r["cleared"] is None)}
    fast, slow = (out[k]["dispatch_ms"]["p50"] for k in ("no_sinks", "dead_sink"))
    out["dispatch_ratio_p50"] = round(slow / fast, 3) if fast and slow and fast > 0 else None
    out["duration_s"] = round(time.monotonic() - started, 1)
    return out
