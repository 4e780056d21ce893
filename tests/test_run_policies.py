"""`reactor run`'s per-process policies, end to end on the real MariaDB and sandboxed
systemd: delay growth between attempts, health retried until it passes, systemd's start
limit, SIGKILL after stop_timeout, the breaker's trial closing it, the bound on restarts
in flight, a pre-restart command that hangs, and two rows naming one unit.

Times are read from REACTOR_AUDIT and only ever compared as lower bounds (the reactor
waited at least this long) or as orderings, never as speed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor.actions.procs import find
from tests.conftest import Proc, wait_for
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]

SLOW_START = "[Service]\nExecStartPre=/bin/sleep 0.3\nExecStart=/bin/sleep infinity\n"


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


def timed_steps(rig: Rig, pid: int) -> list[tuple[str, float]]:
    rows = rig.db.execute("SELECT step, UNIX_TIMESTAMP(at) FROM REACTOR_AUDIT "
                          "WHERE process_id = %s ORDER BY id", (pid,), database=DB)
    return [(str(step), float(at)) for step, at in rows]


def span(rig: Rig, pid: int, first: str, last: str) -> tuple[float, float]:
    steps = timed_steps(rig, pid)
    return (next(at for s, at in steps if s == first), next(at for s, at in steps if s == last))


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_restart_delay_grows_by_restart_backoff(rig: Rig) -> None:
    """Three failing attempts, restart_delay 0.3 s, restart_backoff 3: the reactor waits
    at least 0.3 s before the second and at least 0.9 s before the third."""
    pid, _ = rig.add("backoff", "[Service]\nExecStart=/bin/false\n", start=False)
    rig.start(rig.config(default={"max_attempts": 3, "restart_delay": 0.3,
                                  "restart_backoff": 3, "health_check_timeout": 0.5}))
    rig.alarm(pid)
    rig.wait_step(pid, "restart_issued", count=3, timeout=20)
    issued = [at for s, at in timed_steps(rig, pid) if s == "restart_issued"]
    assert issued[1] - issued[0] >= 0.3
    assert issued[2] - issued[1] >= 0.9
    assert rig.row(pid)[0] == 1


def test_health_check_is_retried_until_it_passes(rig: Rig, tmp_path: Path) -> None:
    """A health command that fails twice and then passes: one restart, alarm cleared."""
    pid, name = rig.add("warming")
    count = tmp_path / "count"
    check = executable(tmp_path / "check", f"#!/bin/sh\necho x >> {count}\n"
                                           f"[ $(wc -l < {count}) -ge 3 ]\n")
    rig.start(rig.config(processes={name: {"health_check_command": str(check),
                                           "health_check_timeout": 10}}))
    rig.alarm(pid)
    rig.wait_cleared(pid)
    assert len(count.read_text().splitlines()) == 3
    steps = rig.steps(pid)
    assert steps.count("restart_issued") == 1 and "health_ok" in steps


def test_start_limit_is_reset_and_the_restart_retried(rig: Rig) -> None:
    """StartLimitBurst=1: the unit's first start used it up, so RestartUnit's job fails
    (start-limit-hit); ResetFailedUnit and one more RestartUnit bring it back."""
    pid, name = rig.add("limited", "[Unit]\nStartLimitIntervalSec=600\nStartLimitBurst=1\n"
                                   "[Service]\nExecStart=/bin/sleep infinity\n")
    unit = f"{name}.service"
    before = wait_for(lambda: rig.started_at(unit), what="unit started")
    rig.start(rig.config())
    rig.alarm(pid)
    note = rig.wait_cleared(pid)
    assert "(service+reset-failed)" in note
    assert rig.started_at(unit) > before


def test_process_ignoring_sigterm_is_killed_after_stop_timeout(rig: Rig,
                                                               tmp_path: Path) -> None:
    """A program (not a unit) that ignores SIGTERM: SIGKILL once stop_timeout has passed,
    then start_command starts it again."""
    pid, name = rig.add("stubborn", unit=None)
    program = executable(tmp_path / name, f"#!{sys.executable}\nimport signal, time\n"
                                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                          "while True: time.sleep(0.1)\n")
    first = subprocess.Popen([str(program)], start_new_session=True)
    try:
        wait_for(lambda: find(name), what="the program running")
        rig.start(rig.config(processes={name: {"start_command": str(program),
                                               "stop_timeout": 0.5}}))
        rig.alarm(pid)
        rig.wait_cleared(pid)
        assert first.wait(5) == -signal.SIGKILL
        restarted = [r for r in rig.audit(pid) if r["step"] == "restarted"]
        assert len(restarted) == 1 and "killed 1" in str(restarted[0]["detail"])
        terminated, killed = span(rig, pid, "restart_issued", "restarted")
        assert killed - terminated >= 0.5
    finally:
        for ref in find(name):
            os.kill(ref.pid, signal.SIGKILL)
        if first.poll() is None:
            first.kill()


def test_breaker_trial_that_succeeds_closes_it(rig: Rig) -> None:
    """The breaker opens on a unit that cannot start; the unit is fixed; after
    circuit_reset_time the trial cycle restarts it, clears the alarm and closes the
    breaker (audit row, state file)."""
    pid, name = rig.add("mended", "[Service]\nExecStart=/bin/false\n", start=False)
    config = rig.config(monitor={"check_interval": 0.3, "max_restart_failures": 1,
                                 "circuit_reset_time": 2},
                        default={"max_attempts": 1})
    rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "breaker_open", timeout=20)
    rig.sbx.write_unit(f"{name}.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    rig.wait_step(pid, "breaker_closed", timeout=20)
    rig.wait_cleared(pid)
    steps = rig.steps(pid)
    assert steps.index("breaker_half_open") < steps.index("health_ok") \
        < steps.index("breaker_closed")
    state_file = config.parent / "c-state.json"
    wait_for(lambda: name not in json.loads(state_file.read_text()).get("breakers", {}),
             what="breaker closed in the state file")


def test_restarts_in_flight_never_exceed_max_concurrent_restarts(rig: Rig) -> None:
    """Six slow restarts alarmed by one UPDATE with max_concurrent_restarts = 2: at no
    moment are more than two between RestartUnit sent and its job finished."""
    ids = [rig.add(f"bounded{i}", SLOW_START)[0] for i in range(6)]
    rig.start(rig.config(monitor={"max_concurrent_restarts": 2}))
    rig.db.execute(f"UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id IN "
                   f"({', '.join(map(str, ids))})", database=DB)
    for pid in ids:
        rig.wait_cleared(pid, timeout=30)
    spans = [span(rig, pid, "restart_issued", "restarted") for pid in ids]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most == 2


def test_hanging_pre_restart_command_is_killed_and_nothing_restarts(rig: Rig) -> None:
    pid, name = rig.add("prehang")
    unit = f"{name}.service"
    before = wait_for(lambda: rig.started_at(unit), what="unit started")
    rig.start(rig.config(processes={name: {"pre_restart_command": "/bin/sleep 60",
                                           "command_timeout": 0.5}}))
    rig.alarm(pid)
    rig.wait_step(pid, "pre_restart_failed")
    alarma, notes = rig.row(pid)
    assert alarma == 1 and "did not finish within 0.5 s" in str(notes)
    assert "restart_issued" not in rig.steps(pid)
    assert rig.started_at(unit) == before


def test_two_rows_naming_one_unit_take_turns(rig: Rig) -> None:
    """Two processes mapped to the same unit (`unit =`), alarmed by one UPDATE: both
    alarms are cleared, and the two cycles on the unit never overlap."""
    shared = rig.name("shared")
    rig.sbx.write_unit(f"{shared}.service", SLOW_START)
    rig.sbx.manager("StartUnit", "ss", f"{shared}.service", "replace")
    first, a = rig.add("alias-a", unit=None)
    second, b = rig.add("alias-b", unit=None)
    rig.start(rig.config(processes={a: {"unit": f"{shared}.service"},
                                    b: {"unit": f"{shared}.service"}}))
    rig.db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id IN (%s, %s)",
                   (first, second), database=DB)
    rig.wait_cleared(first, timeout=20)
    rig.wait_cleared(second, timeout=20)
    one, two = sorted(span(rig, pid, "restart_issued", "health_ok")
                      for pid in (first, second))
    assert one[1] <= two[0], "two cycles acted on one unit at the same time"


def test_bus_user_is_the_session_bus_of_the_environment(rig: Rig, procs: list[Proc]) -> None:
    """`[systemd] bus = user` connects to DBUS_SESSION_BUS_ADDRESS (here the sandbox's
    bus, where its systemd is a user manager)."""
    pid, name = rig.add("userbus")
    p = Proc(["run", "--config", str(rig.config(systemd={"bus": "user"}))],
             env={"DBUS_SESSION_BUS_ADDRESS": rig.sbx.address})
    procs.append(p)
    p.wait_stderr(r"ready: mode=.* bus=user")
    rig.alarm(pid)
    assert "(service)" in rig.wait_cleared(pid)


def test_ten_alarms_from_ten_transactions_restart_at_most_twice(rig: Rig) -> None:
    """Ten set/reset pairs committed one after the other by a client: alarms that arrive
    before the restart is issued join it, all later ones together earn one more cycle.
    Never ten restarts, and the alarm ends cleared."""
    pid, _ = rig.add("tenfold", SLOW_START)
    rig.start(rig.config())
    with rig.db.connect(DB) as conn, conn.cursor() as cur:
        for _ in range(10):
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s", (pid,))
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s", (pid,))
        cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s", (pid,))
    rig.wait_step(pid, "cleared", timeout=20)
    steps = rig.steps(pid)
    assert 1 <= steps.count("restart_issued") <= 2
    assert steps.count("cleared") == 1 and rig.row(pid)[0] == 0


def test_oneshot_service_is_healthy_once_its_run_succeeded(rig: Rig, tmp_path: Path) -> None:
    """Type=oneshot (no RemainAfterExit): inactive after a successful run is its healthy
    state; the restart runs it again and the alarm is cleared. A oneshot whose run fails
    is not healthy."""
    runs = tmp_path / "runs"
    pid, _ = rig.add("batch", f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo run >> "
                              f"{runs}'\n")
    bad, _ = rig.add("badbatch", "[Service]\nType=oneshot\nExecStart=/bin/false\n",
                     start=False)
    wait_for(lambda: runs.exists(), what="first run")
    rig.start(rig.config(default={"settle_time": 0.2}))
    rig.alarm(pid)
    rig.alarm(bad)
    assert "(service)" in rig.wait_cleared(pid)
    assert runs.read_text().splitlines() == ["run", "run"]
    rig.wait_step(bad, "restart_failed", count=2, timeout=30)
    assert rig.row(bad)[0] == 1


def test_settle_time_zero_takes_the_restart_job_as_the_verdict(rig: Rig) -> None:
    """settle_time = 0: a unit whose restart job ended "done" is healthy without another
    D-Bus call (reactor's own count of the calls it sent: no Get), and the alarm is cleared;
    a broken unit still fails (its job does not end "done")."""
    from lab.mariadb import free_port

    pid, name = rig.add("quick")
    bad, _ = rig.add("quickbad", "[Service]\nType=oneshot\nExecStart=/bin/false\n", start=False)
    port = free_port()
    rig.start(rig.config(default={"settle_time": 0, "max_attempts": 1},
                         metrics={"listen": f"127.0.0.1:{port}"}))
    rig.alarm(pid)
    assert "(service)" in rig.wait_cleared(pid)
    rig.alarm(bad)
    rig.wait_step(bad, "cycle_failed")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    calls = dict(re.findall(r'^reactor_dbus_calls_total\{member="(\w+)"\} (\S+)$', metrics,
                            re.M))
    assert float(calls.get("RestartUnit", 0)) >= 2 and "Get" not in calls, calls
