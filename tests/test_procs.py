"""Matching by name (procs.find) never reaches a protected process: PID 1, reactor itself
and its parent, and the processes of units on the built-in deny list, found from
/proc/PID/cgroup (pure parsing here; the sandboxed systemd case is in
test_run_strategy.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reactor.actions import procs
from reactor.actions.units import cgroup_unit, unit_of

HYBRID = """12:cpu,cpuacct:/system.slice/dbus.service
9:name=systemd:/system.slice/dbus.service
0::/system.slice/dbus.service
"""


@pytest.mark.parametrize(("text", "unit"), [
    (HYBRID, "dbus.service"),
    ("0::/system.slice/nginx.service\n", "nginx.service"),
    ("1:name=systemd:/user.slice/user-0.slice/session-4.scope\n", "session-4.scope"),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.service\n",
     "app-x.service"),
    ("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", "init.scope"),
    ("0::/init.scope\n", "init.scope"),
    ("0::/\n", None),
    ("4:memory:/process_api/2fc1\n0::/\n", None),
    # the systemd hierarchy is the one systemd keeps units in: it wins
    ("1:name=systemd:/system.slice/polkit.service\n0::/\n", "polkit.service"),
])
def test_the_unit_of_a_process_is_the_innermost_one_of_its_cgroup(text: str,
                                                                   unit: str | None) -> None:
    assert cgroup_unit(text) == unit


@pytest.mark.parametrize(("unit", "protected"), [
    ("dbus.service", True), ("dbus-broker.service", True),
    ("systemd-journald.service", True), ("polkit.service", True), ("init.scope", True),
    ("user@1000.service", True), ("reactor.service", True),  # not the unit we run in
    # where operators' programs live: login sessions, ordinary services, no unit at all
    ("session-4.scope", False), ("nginx.service", False), ("cron.service", False),
    (None, False),
])
def test_processes_of_units_on_the_built_in_deny_list_are_protected(
        unit: str | None, protected: bool) -> None:
    assert procs.protected_unit(unit) is protected


def test_the_programs_start_command_started_in_reactors_own_unit_may_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd, start_command runs inside reactor's own unit: the next restart of that
    program must find it there (reactor itself is excluded by its PID)."""
    monkeypatch.setattr(procs, "own_unit", lambda: "reactor.service")
    assert not procs.protected_unit("reactor.service")
    assert procs.protected_unit("dbus.service")


def test_find_never_returns_reactor_or_its_parent_and_reads_real_cgroups(
        tmp_path: Path) -> None:
    """This test process plays reactor: a program of its own name is not matched, a child
    with a name is; every PID found is in no protected unit."""
    me = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert all(r.pid not in (1, os.getpid(), os.getppid()) for r in procs.find(me))
    program = tmp_path / "procs-sentinel"
    shutil.copy("/bin/sleep", program)
    child = subprocess.Popen([str(program), "60"])
    try:
        found = procs.find("procs-sentinel")
        assert [r.pid for r in found] == [child.pid]
        assert not procs.protected_unit(unit_of(child.pid))
    finally:
        child.kill()
        child.wait()
