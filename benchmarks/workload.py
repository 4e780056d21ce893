"""The alarm workload: alarms one after another over a few units, each timed from the
client's commit.

For every alarm the client (one open connection) sleeps a random pause, runs an autocommit
`UPDATE STATUS_PROCESS SET alarma = 1` and takes `committed = time.time()` as soon as it
returns; a second open connection then polls the row every ~0.5 ms until it reads alarma=0
(`cleared`). Afterwards the reactor's REACTOR_AUDIT rows give, per alarm, when it was
`detected` and when RestartUnit was issued (`restart_issued`): their `at` is the reactor's
wall clock, the same clock as the client's (one machine), written as a naive DATETIME in
UTC (the lab runs every reactor with TZ=UTC) and read back as UTC. The `detected` row's
`source` (binlog, sweep or poll) says which source found the alarm: a mode's figures keep
only the alarms its own source detected (see `record`/`report.metric_lists`).

The pauses are uniform in [0, max_pause): with max_pause a multiple of the poll periods,
an alarm lands at a uniformly random phase of the poller's cycle, whatever mode runs.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.rigs import Lab
from lab import client

RAISE_SQL = "UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s AND alarma = 0"
RESET_SQL = "UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s"
AUDIT_WAIT = 15.0  # seconds to wait for the reactor's batched audit rows

Tick = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class PlannedAlarm:
    pid: int
    pause: float  # seconds slept before the UPDATE


@dataclass(slots=True)
class Sample:
    pid: int
    sent: float  # client's wall clock right before the UPDATE was sent
    committed: float  # client's wall clock right after the UPDATE returned
    cleared: float | None  # first read of alarma=0 (None: not cleared in time)
    detected: float | None = None  # REACTOR_AUDIT 'detected'.at
    issued: float | None = None  # REACTOR_AUDIT 'restart_issued'.at (first of the cycle)
    source: str | None = None  # REACTOR_AUDIT 'detected'.source: binlog, sweep or poll


def plan(count: int, pids: list[int], max_pause: float, seed: int) -> list[PlannedAlarm]:
    """The same sequence for every mode (same seed): which process, after which pause."""
    rng = random.Random(seed)
    return [PlannedAlarm(rng.choice(pids), rng.uniform(0.0, max_pause)) for _ in range(count)]


def run_alarms(lab: Lab, alarms: list[PlannedAlarm], timeout: float, tick: Tick) -> list[Sample]:
    """Raise each alarm and wait until the reactor has cleared it (or `timeout`)."""
    samples: list[Sample] = []
    with lab.connect() as writer, lab.connect() as reader, \
            writer.cursor() as wcur, reader.cursor() as rcur:
        for i, alarm in enumerate(alarms, 1):
            time.sleep(alarm.pause)
            sent = time.time()
            changed = wcur.execute(RAISE_SQL, (alarm.pid,))
            committed = time.time()
            if changed != 1:
                raise RuntimeError(f"process {alarm.pid} was already in alarm")
            cleared = client.wait_cleared(rcur, alarm.pid, timeout)
            if cleared is None:
                wcur.execute(RESET_SQL, (alarm.pid,))  # so that the next alarm is a 0->1
            samples.append(Sample(alarm.pid, sent, committed, cleared))
            tick(i)
    return samples


@dataclass(slots=True)
class _Cycle:
    pid: int
    detected: float
    source: str
    issued: float | None = None
    used: bool = False


def audit_epoch(value: dt.datetime) -> float:
    """REACTOR_AUDIT.at (naive DATETIME(6), the reactor's local wall clock) as a UNIX time:
    the lab runs every reactor with TZ=UTC, so `at` is UTC whatever this process's zone."""
    return value.replace(tzinfo=dt.UTC).timestamp()


def wait_audit(lab: Lab, mark: int, pids: list[int], steps: dict[str, int],
               timeout: float = AUDIT_WAIT) -> dict[str, int]:
    """Poll until REACTOR_AUDIT (rows after `mark`, these processes) has at least
    steps[name] rows of each step; returns the counts seen last."""
    marks = ", ".join(["%s"] * len(pids))
    names = ", ".join(["%s"] * len(steps))
    sql = (f"SELECT step, COUNT(*) FROM REACTOR_AUDIT WHERE id > %s AND process_id IN ({marks})"
           f" AND step IN ({names}) GROUP BY step")
    deadline = time.monotonic() + timeout
    while True:
        counts = {str(s): int(n) for s, n in lab.query(sql, (mark, *pids, *steps))}
        if all(counts.get(s, 0) >= n for s, n in steps.items()) \
                or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def attach_audit(lab: Lab, samples: list[Sample], mark: int) -> int:
    """Fill each sample's detected/issued from the audit rows written after `mark`; returns
    the number of reactor cycles no alarm accounts for (expected 0)."""
    done = [s for s in samples if s.cleared is not None]
    pids = sorted({s.pid for s in samples})
    if not pids:
        return 0
    wait_audit(lab, mark, pids, {"detected": len(done), "restart_issued": len(done)})
    marks = ", ".join(["%s"] * len(pids))
    rows = lab.query(
        "SELECT cycle, process_id, step, at, source FROM REACTOR_AUDIT WHERE id > %s "
        f"AND process_id IN ({marks}) AND step IN ('detected', 'restart_issued') ORDER BY id",
        (mark, *pids))
    cycles: dict[int, _Cycle] = {}
    for cycle, pid, step, at, source in rows:
        if step == "detected":
            cycles[int(cycle)] = _Cycle(int(pid), audit_epoch(at), str(source))
        elif int(cycle) in cycles and cycles[int(cycle)].issued is None:
            cycles[int(cycle)].issued = audit_epoch(at)
    by_pid: dict[int, list[_Cycle]] = {}
    for c in sorted(cycles.values(), key=lambda c: c.detected):
        by_pid.setdefault(c.pid, []).append(c)
    for s in done:
        assert s.cleared is not None
        for c in by_pid.get(s.pid, []):
            # not before `sent`: the binlog reader may see the row before the client has
            # the server's OK (the server answers after its redo log flush)
            if not c.used and s.sent <= c.detected <= s.cleared:
                c.used = True
                s.detected, s.issued, s.source = c.detected, c.issued, c.source
                break
    return sum(1 for c in cycles.values() if not c.used)


def _ms(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else (end - start) * 1000


def record(s: Sample) -> dict[str, Any]:
    """One alarm as saved in latest-samples.json: the client's and the reactor's times
    (UNIX seconds), the detecting source, and every figure in ms (None: not measured).
    `report.metric_lists` rebuilds the percentiles and the plot from these."""
    return {
        "pid": s.pid, "source": s.source,
        "sent": s.sent, "committed": s.committed, "detected": s.detected,
        "issued": s.issued, "cleared": s.cleared,
        "detect_ms": _ms(s.detected, s.committed),
        "dispatch_ms": _ms(s.issued, s.committed),
        "cycle_ms": _ms(s.cleared, s.committed),
        "detect_from_send_ms": _ms(s.detected, s.sent),
        "dispatch_from_send_ms": _ms(s.issued, s.sent),
        "round_trip_ms": _ms(s.committed, s.sent),
    }
