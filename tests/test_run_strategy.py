"""The process strategy is opt-in and never a guess, end to end on the real MariaDB and the
sandboxed systemd: `auto` kills by name only when systemd said for certain that the unit
does not exist, and matching by name never signals a process of a protected unit.

Each test runs a sentinel: a program with the process's name, started by the test, whose
PID must survive (or, where killing by name is right, must not). "Nothing was signalled"
is judged after a later alarm of another process has been handled end to end, never after
a sleep; the sweep is a minute away.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor.actions.procs import find
from tests.busproxy import BusProxy
from tests.conftest import Proc, wait_for
from tests.rig import Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


@pytest.fixture
def proxy(sandbox: SystemdSandbox, tmp_path: Path) -> Iterator[BusProxy]:
    p = BusProxy(sandbox.address, tmp_path / "bus-proxy")
    yield p
    p.close()


class Sentinel:
    """Programs named NAME (a copy of sleep): the test's own, and the reactor's if it
    starts one; every one still running is killed by PID at the end."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.program = tmp_path / name
        shutil.copy("/bin/sleep", self.program)
        self.marker = tmp_path / f"{name}.started"
        # what the reactor would run to start the program again: leaves a marker
        self.start_command = f"/bin/touch {self.marker}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(self.program), "600"], start_new_session=True)
        self.procs.append(proc)
        wait_for(lambda: any(r.pid == proc.pid for r in find(self.program.name)),
                 what="the sentinel running")
        return proc

    def untouched(self, proc: subprocess.Popen[bytes]) -> bool:
        return proc.poll() is None and not self.marker.exists()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[list[Sentinel]]:
    made: list[Sentinel] = []
    yield made
    for s in made:
        s.cleanup()


def sentinel(sentinels: list[Sentinel], tmp_path: Path, name: str) -> Sentinel:
    s = Sentinel(tmp_path, name)
    sentinels.append(s)
    return s


def test_masked_unit_is_a_recorded_failure_and_nothing_is_killed_by_name(
        rig: Rig, tmp_path: Path, sentinels: list[Sentinel]) -> None:
    """A masked unit is an operator's decision. With a start_command in the program's own
    section, auto used to take "masked" for "no unit" and kill every process of the name."""
    pid, name = rig.add("masked", unit=None)
    (rig.sbx.unit_dir / f"{name}.service").symlink_to("/dev/null")
    rig.sbx.reload()
    s = sentinel(sentinels, tmp_path, name)
    program = s.run()
    rig.start(rig.config(processes={name: {"start_command": s.start_command}}))
    rig.alarm(pid)
    rig.wait_step(pid, "cycle_failed")
    rig.sentinel("after-masked")
    assert s.untouched(program), "a process was killed by name for a masked unit"
    alarma, notes = rig.row(pid)
    assert alarma == 1 and "is masked" in str(notes), notes
    failed = [r for r in rig.audit(pid) if r["step"] == "restart_failed"]
    assert len(failed) == 2 and all(str(r["detail"]).startswith("service: ") for r in failed)


def test_restart_with_an_unknown_outcome_never_kills_by_name(
        rig: Rig, proxy: BusProxy, tmp_path: Path, sentinels: list[Sentinel]) -> None:
    """RestartUnit gets no answer (the bus is stuck): the restart may still run in systemd.
    auto used to fall back to killing by name, and a second instance would follow."""
    pid, name = rig.add("unknown")
    s = sentinel(sentinels, tmp_path, name)
    program = s.run()
    p = rig.start(rig.config(systemd={"bus": proxy.address, "call_timeout": 0.5},
                             processes={name: {"start_command": s.start_command,
                                               "max_attempts": 1}}))
    proxy.stall()
    rig.alarm(pid)
    rig.wait_step(pid, "cycle_failed")
    p.wait_stderr(f"restart of {name}.service failed: D-Bus: RestartUnit: no answer")
    proxy.resume()
    proxy.cut()  # the stalled connection may hold half-read messages: start clean
    rig.sentinel("after-unknown")
    assert s.untouched(program), "a process was killed by name after an unknown outcome"
    assert "D-Bus" in str(rig.row(pid)[1])


def test_restart_job_that_outlasts_job_timeout_never_kills_by_name(
        rig: Rig, tmp_path: Path, sentinels: list[Sentinel]) -> None:
    """A slow RestartUnit (its ExecStartPre outlasts job_timeout), start_command configured:
    the unit's own kill fallback runs (KillUnit, StartUnit, slow again), the cycle is a
    recorded failure, and no process is signalled by name."""
    pid, name = rig.add("slowjob", "[Service]\nExecStartPre=/bin/sleep 30\n"
                                   "ExecStart=/bin/sleep infinity\n", start=False)
    s = sentinel(sentinels, tmp_path, name)
    program = s.run()
    rig.start(rig.config(systemd={"job_timeout": 1},
                         processes={name: {"start_command": s.start_command,
                                           "max_attempts": 1}}))
    rig.alarm(pid)
    rig.wait_step(pid, "cycle_failed", timeout=30)
    rig.sentinel("after-slowjob")
    assert s.untouched(program)
    failed = [r for r in rig.audit(pid) if r["step"] == "restart_failed"]
    assert len(failed) == 1 and str(failed[0]["detail"]).startswith("kill-fallback: ")
    rig.sbx.manager("StopUnit", "ss", f"{name}.service", "replace")


def test_kill_by_name_spares_the_processes_of_protected_units(
        rig: Rig, tmp_path: Path, sentinels: list[Sentinel]) -> None:
    """No such unit, and a start_command in the program's own section: the process strategy
    runs. Of two processes with the name, the test's own is stopped; the one inside
    systemd-guard-*.service (on the built-in deny list, found through /proc/PID/cgroup) is
    not."""
    pid, name = rig.add("spared", unit=None)
    s = sentinel(sentinels, tmp_path, name)
    guard = f"systemd-guard-{rig.tag}.service"
    rig.sbx.write_unit(guard, f"[Service]\nExecStart={s.program} 600\n")
    rig.sbx.manager("StartUnit", "ss", guard, "replace")
    try:
        guard_pid = wait_for(lambda: int(rig.sbx.unit_property(guard, "MainPID", "Service")),
                             what="the guard unit running")
        mine = s.run()
        rig.start(rig.config(processes={name: {"start_command": f"{s.program} 600"}}))
        rig.alarm(pid)
        assert "(process)" in rig.wait_cleared(pid)
        assert mine.wait(5) == -signal.SIGTERM
        assert rig.sbx.unit_property(guard, "ActiveState") == "active"
        assert int(rig.sbx.unit_property(guard, "MainPID", "Service")) == guard_pid
    finally:
        rig.sbx.manager("StopUnit", "ss", guard, "replace")
        for ref in find(name):  # the program the reactor started on our behalf
            os.kill(ref.pid, signal.SIGKILL)
