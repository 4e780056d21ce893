"""The alarm workload: alarms one after another over a few units, each timed from the
client's commit.

For every alarm the client (one open connection) sleeps a random pause, runs an autocommit
`UPDATE STATUS_PROCESS SET alarma = 1` and takes `committed = time.time()` as soon as it
returns; a second open connection then polls the row every ~0.5 ms until it reads alarma=0
(`cleared`). Afterwards the reactor's REACTOR_AUDIT rows give, per alarm, when it was
`detected` and when RestartUnit was issued (`restart_issued`): their `at` is the reactor's
wall clock, the same clock as the client's (one machine).

The pauses are uniform in [0, max_pause): with max_pause a multiple of the poll periods,
an alarm lands at a uniformly random phase of the poller's cycle, whatever mode runs.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.lab import Lab
from reactor.lab import client

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
    issued: float | None = None
    used: bool = False


def _epoch(value: dt.datetime) -> float:
    """REACTOR_AUDIT.at is the reactor's local wall clock (naive DATETIME(6))."""
    return value.timestamp()


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
        "SELECT cycle, process_id, step, at FROM REACTOR_AUDIT WHERE id > %s "
        f"AND process_id IN ({marks}) AND step IN ('detected', 'restart_issued') ORDER BY id",
        (mark, *pids))
    cycles: dict[int, _Cycle] = {}
    for cycle, pid, step, at in rows:
        if step == "detected":
            cycles[int(cycle)] = _Cycle(int(pid), _epoch(at))
        elif int(cycle) in cycles and cycles[int(cycle)].issued is None:
            cycles[int(cycle)].issued = _epoch(at)
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
                s.detected, s.issued = c.detected, c.issued
                break
    return sum(1 for c in cycles.values() if not c.used)


def latencies(samples: list[Sample]) -> dict[str, list[float]]:
    """detect_ms, dispatch_ms and cycle_ms (milliseconds after the commit) per alarm, and
    the UPDATE's round trip (sent -> returned) as round_trip_ms."""
    out: dict[str, list[float]] = {"detect_ms": [], "dispatch_ms": [], "cycle_ms": [],
                                   "round_trip_ms": [(s.committed - s.sent) * 1000
                                                     for s in samples]}
    for s in samples:
        if s.detected is not None:
            out["detect_ms"].append((s.detected - s.committed) * 1000)
        if s.issued is not None:
            out["dispatch_ms"].append((s.issued - s.committed) * 1000)
        if s.cleared is not None:
            out["cycle_ms"].append((s.cleared - s.committed) * 1000)
    return out
