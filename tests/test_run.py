"""`reactor run` end to end: a real MariaDB, a real systemd (sandboxed), the stock client.

Every test drives the daemon as a subprocess and judges it only by what an operator can
see: units restarted (ExecMainStartTimestamp), STATUS_PROCESS rows, REACTOR_AUDIT rows and
log lines.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor.actions.procs import find
from tests.conftest import Proc, wait_for
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


def test_alarm_set_with_the_client_restarts_the_unit_and_clears_it(rig: Rig) -> None:
    """The whole cycle: mariadb client -> binlog -> RestartUnit -> healthy -> alarma=0,
    a note saying what, when and how long, and one audit row per step."""
    pid, name = rig.add("web")
    unit = f"{name}.service"
    before = wait_for(lambda: rig.started_at(unit), what="unit started")
    rig.start(rig.config())
    rig.alarm(pid)
    note = rig.wait_cleared(pid)
    assert rig.started_at(unit) > before, "the unit was not restarted"
    assert note.startswith("restarted ") and "ms (service)" in note
    steps = rig.wait_step(pid, "cleared")
    assert steps == ["detected", "restart_issued", "restarted", "health_ok", "cleared"]
    rows = rig.audit(pid)
    assert len({r["cycle"] for r in rows}) == 1
    assert all(r["source"] == "binlog" and r["unit"] in (None, unit) for r in rows)
    latencies = [r["latency_ms"] for r in rows]
    assert latencies == sorted(latencies), "audit latencies must grow along the cycle"


def test_unit_that_cannot_start_opens_the_breaker_then_half_opens(rig: Rig) -> None:
    """ExecStart=/bin/false: every attempt fails its health check; the note says why; after
    max_restart_failures failed cycles (retried by the sweep) the breaker opens and the
    alarm is only recorded; after circuit_reset_time one trial cycle runs and reopens it."""
    pid, name = rig.add("broken", "[Service]\nExecStart=/bin/false\n", start=False)
    config = rig.config(monitor={"check_interval": 0.3, "max_restart_failures": 2,
                                 "circuit_reset_time": 2})
    p = rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "breaker_open", timeout=30)
    alarma, notes = rig.row(pid)
    assert alarma == 1
    steps = rig.steps(pid)
    assert steps.count("health_failed") + steps.count("restart_failed") >= 4  # 2 cycles x 2
    assert steps.count("cycle_failed") >= 2, steps
    p.wait_stderr(r"ERROR .*breaker opened for " + name)
    # while open: recorded, not acted on
    rig.wait_step(pid, "skipped")
    assert "breaker open until" in str(rig.row(pid)[1])
    issued = rig.steps(pid).count("restart_issued")
    # after the reset time: exactly one trial cycle, which fails and reopens the breaker
    rig.wait_step(pid, "breaker_half_open", timeout=10)
    rig.wait_step(pid, "breaker_open", count=2, timeout=15)
    assert rig.steps(pid).count("restart_issued") == issued + 2  # the trial's 2 attempts
    state = json.loads(Path(config.parent / "c-state.json").read_text())
    assert state["breakers"][name][0] == "open"  # [state, failures, until]


def test_breaker_state_survives_a_reactor_restart(rig: Rig) -> None:
    """An open breaker is saved in the state file: a new reactor process does not hammer the
    unit again, it records the alarm and skips it."""
    pid, name = rig.add("flaky", "[Service]\nExecStart=/bin/false\n", start=False)
    config = rig.config(monitor={"check_interval": 0.3, "max_restart_failures": 1,
                                 "circuit_reset_time": 3600},
                        default={"max_attempts": 1})
    p = rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "breaker_open")
    assert p.stop() == 0
    issued = rig.steps(pid).count("restart_issued")
    p2 = rig.start(config)
    rig.wait_step(pid, "skipped")
    p2.wait_stderr(f"breaker open for {name}")
    rig.sentinel("after-flaky")
    assert rig.steps(pid).count("restart_issued") == issued


def test_not_a_unit_uses_the_process_strategy(rig: Rig, tmp_path: Path) -> None:
    """auto strategy, no such unit: the program's processes get SIGTERM and start_command
    starts it again; healthy = a process of that name runs."""
    pid, name = rig.add("pw", unit=None)
    script = tmp_path / name
    script.write_text("#!/bin/sh\nwhile true; do sleep 0.1; done\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    first = subprocess.Popen([str(script)], start_new_session=True)  # the test's own program
    try:
        rig.start(rig.config(processes={name: {"start_command": str(script)}}))
        rig.alarm(pid)
        note = rig.wait_cleared(pid)
        assert "(process)" in note
        assert first.wait(5) == -signal.SIGTERM
        new = find(name)
        assert len(new) == 1 and new[0].pid != first.pid
        assert any("no unit" in str(r["detail"]) for r in rig.audit(pid))
        # the failed RestartUnit and the process fallback are one attempt: one row
        assert rig.steps(pid).count("restart_issued") == 1
    finally:
        for ref in find(name):  # the program the reactor started on our behalf
            os.kill(ref.pid, signal.SIGKILL)
        if first.poll() is None:
            first.kill()


@pytest.mark.parametrize("hostile", [
    "x; touch {marker}", "$(touch {marker})", "`touch {marker}`", "a|touch {marker}",
    "-rf", "a b", "../../etc/passwd",
])
def test_name_with_shell_metacharacters_runs_nothing(rig: Rig, tmp_path: Path,
                                                     hostile: str) -> None:
    """A hostile process name is refused before anything runs; the note says why and the
    daemon keeps serving the next alarm."""
    marker = tmp_path / "pwned"
    log = tmp_path / "commands-run"
    pid = 150
    rig.db.execute("INSERT INTO PROCESE VALUES (%s, %s)", (pid, hostile.format(marker=marker)),
                   database=DB)
    rig.db.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)", (pid,), database=DB)
    good, _ = rig.add("good")
    recorder = ["/bin/sh", "-c", f'echo "$1" >> {log}', "sh", "%s"]
    config = rig.config(default={"pre_restart_command": " ".join(
        f"'{a}'" for a in recorder)})
    rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "refused")
    rig.alarm(good)
    rig.wait_cleared(good)
    alarma, notes = rig.row(pid)
    assert alarma == 1 and notes is not None and notes.startswith("refused")
    assert not marker.exists()
    assert log.read_text().splitlines() == [rig.name("good")]  # only the good name ran


def test_unknown_and_denied_processes_are_refused(rig: Rig) -> None:
    """An id without a PROCESE row, and a unit on the deny list: noted, not acted on."""
    with rig.db.connect(DB) as conn, conn.cursor() as cur:
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        cur.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (160)")
    denied, _ = rig.add("dbus", unit=None)
    rig.db.execute("UPDATE PROCESE SET process_name = 'dbus' WHERE process_id = %s", (denied,),
                   database=DB)
    rig.start(rig.config())
    rig.alarm(160)
    rig.alarm(denied)
    rig.wait_step(160, "refused")
    rig.wait_step(denied, "refused")
    assert "unknown process id 160" in str(rig.row(160)[1])
    assert "dbus.service is denied" in str(rig.row(denied)[1])


def test_missing_unit_with_service_strategy(rig: Rig) -> None:
    """restart_strategy = service and no such unit: the note says so; others still served."""
    pid, name = rig.add("ghost", unit=None)
    good, _ = rig.add("fine")
    rig.start(rig.config(processes={name: {"restart_strategy": "service"}}))
    rig.alarm(pid)
    rig.alarm(good)
    rig.wait_cleared(good)
    rig.wait_step(pid, "restart_failed", count=2)
    assert "no such unit" in str(rig.row(pid)[1])


def test_failing_pre_restart_command_means_no_restart(rig: Rig) -> None:
    pid, name = rig.add("cfgtest")
    unit = f"{name}.service"
    before = wait_for(lambda: rig.started_at(unit))
    rig.start(rig.config(processes={name: {"pre_restart_command": "/bin/false"}}))
    rig.alarm(pid)
    rig.wait_step(pid, "pre_restart_failed")
    rig.sentinel("after-cfgtest")
    assert rig.started_at(unit) == before
    alarma, notes = rig.row(pid)
    assert alarma == 1 and "pre-restart: false exited 1" in str(notes)
    assert "restart_issued" not in rig.steps(pid)


def test_failing_health_check(rig: Rig) -> None:
    """The unit restarts, but health_check_command keeps failing: max_attempts restarts,
    then the alarm stays set with the reason."""
    pid, name = rig.add("sick")
    rig.start(rig.config(processes={name: {"health_check_command": "/bin/sh -c 'exit 3'",
                                           "health_check_timeout": 0.5}}))
    rig.alarm(pid)
    rig.wait_step(pid, "health_failed", count=2)
    alarma, notes = rig.row(pid)
    assert alarma == 1 and "health: health check sh exited 3" in str(notes)
    assert rig.steps(pid).count("restart_issued") == 2


def test_tcp_and_http_probes(rig: Rig) -> None:
    """A unit serving HTTP on loopback: healthy by TCP and by URL; a wrong status fails."""
    from lab.mariadb import free_port

    port = free_port()
    unit = (f"[Service]\nExecStart=/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 "
            "--directory /\n")
    pid, name = rig.add("http", unit)
    bad, bad_name = rig.add("http404")
    rig.start(rig.config(processes={
        name: {"health_check_tcp": f"127.0.0.1:{port}",
               "health_check_url": f"http://127.0.0.1:{port}/"},
        bad_name: {"health_check_url": f"http://127.0.0.1:{port}/no-such-file",
                   "health_check_timeout": 0.5, "max_attempts": 1},
    }))
    rig.alarm(pid)
    rig.wait_cleared(pid)
    rig.alarm(bad)
    rig.wait_step(bad, "health_failed")
    assert "HTTP 404, want 200" in str(rig.row(bad)[1])


def test_burst_of_alarms_for_one_process_restarts_it_once(rig: Rig) -> None:
    """10 alarms for one process (set and reset 10 times in one transaction): one cycle."""
    pid, name = rig.add("burst")
    rig.start(rig.config())
    statements = "; ".join(
        f"UPDATE {DB}.STATUS_PROCESS SET alarma={v} WHERE process_id={pid}"
        for _ in range(10) for v in (1, 0)) + f"; UPDATE {DB}.STATUS_PROCESS SET alarma=1 " \
        f"WHERE process_id={pid}"
    rig.db.client("-e", f"BEGIN; {statements}; COMMIT")
    rig.wait_cleared(pid)
    rig.sentinel("after-burst")
    assert rig.steps(pid).count("restart_issued") == 1


def test_alarm_raised_after_the_restart_was_issued_earns_one_more_cycle(rig: Rig) -> None:
    """A slow restart (ExecStartPre sleeps 1 s); meanwhile the alarm is reset and raised
    again 5 times: exactly one more cycle, and only the last clears the alarm. Sweeps run
    every 0.3 s all along: the alarm in hand is not theirs to deliver again."""
    pid, name = rig.add("slow", "[Service]\nExecStartPre=/bin/sleep 1\n"
                                "ExecStart=/bin/sleep infinity\n")
    rig.start(rig.config(monitor={"check_interval": 0.3}))
    rig.alarm(pid)
    rig.wait_step(pid, "restart_issued")
    for _ in range(5):
        rig.db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s", (pid,),
                       database=DB)
        rig.db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s", (pid,),
                       database=DB)
    rig.wait_step(pid, "cleared", timeout=20)
    rig.sentinel("after-slow")
    steps = rig.steps(pid)
    assert steps.count("restart_issued") == 2
    assert steps.count("not_cleared") == 1 and steps.count("cleared") == 1
    assert rig.row(pid)[0] == 0


def test_hanging_restart_gets_the_kill_fallback(rig: Rig) -> None:
    """ExecStop hangs past job_timeout: KillUnit SIGKILL, StartUnit, healthy again."""
    pid, name = rig.add("hang", "[Service]\nExecStart=/bin/sleep infinity\n"
                                "ExecStop=/bin/sleep 60\nTimeoutStopSec=120\n")
    rig.start(rig.config(systemd={"job_timeout": 1}))
    rig.alarm(pid)
    note = rig.wait_cleared(pid, timeout=20)
    assert "(kill-fallback)" in note
    assert any("KillUnit SIGKILL" in str(r["detail"]) for r in rig.audit(pid))


def test_one_update_alarming_200_processes_restarts_each_once(rig: Rig) -> None:
    """200 units alarmed by one UPDATE: every one restarted exactly once and cleared."""
    ids = []
    names = []
    for i in range(200):
        name = rig.name(f"many{i}")
        (rig.sbx.unit_dir / f"{name}.service").write_text(
            "[Service]\nExecStart=/bin/sleep infinity\n")
        names.append(name)
        ids.append(1000 + i)
    rig.sbx.reload()
    with rig.db.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)", list(zip(ids, names,
                                                                         strict=True)))
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)",
                        [(i,) for i in ids])
    rig.start(rig.config(monitor={"max_concurrent_restarts": 32}))
    rig.db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id >= 1000",
                   database=DB)
    wait_for(lambda: rig.db.execute(
        "SELECT COUNT(*) FROM STATUS_PROCESS WHERE process_id >= 1000 AND alarma = 0",
        database=DB)[0][0] == 200, timeout=60, what="all 200 cleared")
    issued = rig.db.execute(
        "SELECT process_id, COUNT(*) FROM REACTOR_AUDIT WHERE step = 'restart_issued' "
        "AND process_id >= 1000 GROUP BY process_id", database=DB)
    twice = [pid for pid, n in issued if n != 1]
    assert len(issued) == 200 and not twice, "\n".join(
        f"{r['cycle'] % 1000} {r['step']} {r['source']} {r['latency_ms']} {r['detail']}"
        for pid in twice[:2] for r in rig.audit(pid))
    for name in names[:: 40]:
        assert rig.sbx.unit_property(f"{name}.service", "ActiveState") == "active"


def test_sigterm_mid_restart_loses_nothing(rig: Rig) -> None:
    """SIGTERM while a slow restart is in flight and the drain time is short: the cycle is
    cancelled, the daemon exits 0 with the checkpoint saved, the alarm is still set, and
    the next start handles it."""
    pid, name = rig.add("midway", "[Service]\nExecStartPre=/bin/sleep 2\n"
                                  "ExecStart=/bin/sleep infinity\n")
    config = rig.config(monitor={"shutdown_timeout": 0.3})
    p = rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "restart_issued")
    assert p.stop() == 0
    assert "cancelled 1 cycle(s) still in flight" in p.stderr
    assert "stopped: 1 cycle(s) run, 1 cancelled" in p.stderr
    assert rig.row(pid)[0] == 1
    state = json.loads((config.parent / "c-state.json").read_text())
    assert state["binlog"]["file"].startswith("binlog.")
    rig.start(config)
    rig.wait_cleared(pid, timeout=20)


def test_sigterm_waits_for_a_cycle_that_finishes_in_time(rig: Rig) -> None:
    pid, name = rig.add("drain", "[Service]\nExecStartPre=/bin/sleep 0.5\n"
                                 "ExecStart=/bin/sleep infinity\n")
    p = rig.start(rig.config(monitor={"shutdown_timeout": 10}))
    rig.alarm(pid)
    rig.wait_step(pid, "restart_issued")
    assert p.stop() == 0
    assert rig.row(pid)[0] == 0
    assert "stopped: 1 cycle(s) run, 0 cancelled" in p.stderr


def test_dead_bus_at_start_is_one_clear_line(rig: Rig, tmp_path: Path) -> None:
    config = rig.config(systemd={"bus": f"unix:path={tmp_path}/no-bus"})
    p = Proc(["run", "--config", str(config)])
    assert p.proc.wait(20) == 5
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("reactor:")]
    assert len(errors) == 1 and "D-Bus unavailable" in errors[0]
