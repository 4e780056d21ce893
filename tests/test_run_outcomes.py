"""How a cycle's outcome is judged and recorded when the world gets in the way, end to end
on the real MariaDB and the sandboxed systemd: a unit that restarts itself within
settle_time, an alarm reset by hand during the cycle, an operator's transaction holding
the row, the database gone right after the health check passed.

A gated health check (a script that waits for a file the test creates) holds a cycle
between its restart and its clear, so that the test acts exactly there. "It did not
happen" is judged after a later alarm of another process has been handled end to end,
never after a sleep; sweeps are a minute away unless a test needs them.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc, wait_for
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


@pytest.fixture
def own_rig(own_mariadb: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
            procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(own_mariadb, sandbox, tmp_path, procs)


class Gate:
    """A health_check_command that says it runs, then passes once the test opens it."""

    def __init__(self, tmp_path: Path) -> None:
        self.running = tmp_path / "health-running"
        self.open_file = tmp_path / "health-go"
        self.command = tmp_path / "gated-check"
        self.command.write_text(f"#!/bin/sh\ntouch {self.running}\n"
                                f"while [ ! -e {self.open_file} ]; do sleep 0.05; done\n")
        self.command.chmod(self.command.stat().st_mode | stat.S_IXUSR)

    def settings(self) -> dict[str, object]:
        return {"health_check_command": str(self.command), "health_check_timeout": 120,
                "command_timeout": 120}

    def wait_running(self) -> None:
        wait_for(self.running.exists, 20, what="the health check running")

    def open(self) -> None:
        self.open_file.touch()


def reactor_connections(db: MariaDB) -> dict[int, str]:
    """The reactor's connections to the server (the binlog dump aside): id -> statement."""
    rows = db.execute("SELECT ID, COALESCE(INFO, '') FROM information_schema.PROCESSLIST "
                      "WHERE USER = 'reactor' AND COMMAND <> 'Binlog Dump'")
    return {int(i): str(info) for i, info in rows}


def test_unit_that_restarts_itself_within_settle_time_is_not_healthy(rig: Rig) -> None:
    """Restart=always, RestartSec=0 and a process that exits 0.3 s after it starts: every
    look shows the unit active, but never the same MainPID and NRestarts through
    settle_time. Not healthy: the alarm stays set, with the reason."""
    pid, name = rig.add("flapping", "[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                                    "ExecStart=/bin/sh -c 'sleep 0.3; exit 1'\n"
                                    "Restart=always\nRestartSec=0\n")
    rig.start(rig.config(processes={name: {"settle_time": 1, "health_check_timeout": 3,
                                           "max_attempts": 1}}))
    rig.alarm(pid)
    rig.wait_step(pid, "cycle_failed", timeout=30)
    alarma, notes = rig.row(pid)
    assert alarma == 1 and "did not stay active for 1 s" in str(notes), notes
    assert "health_ok" not in rig.steps(pid)
    rig.sbx.manager("StopUnit", "ss", f"{name}.service", "replace")


def test_alarm_reset_by_hand_during_the_cycle_is_left_as_the_operator_left_it(
        rig: Rig, tmp_path: Path) -> None:
    """The operator resets the alarm (with a note of their own) while the reactor's health
    check runs: the clear applies only to a row still in alarm, so the row keeps the
    operator's values, and the audit says why nothing was cleared."""
    gate = Gate(tmp_path)
    pid, name = rig.add("byhand")
    rig.start(rig.config(processes={name: gate.settings()}))
    rig.alarm(pid)
    gate.wait_running()
    rig.db.execute("UPDATE STATUS_PROCESS SET alarma = 0, notes = 'handled by hand' "
                   "WHERE process_id = %s", (pid,), database=DB)
    gate.open()
    rig.wait_step(pid, "not_cleared")
    rig.sentinel("after-byhand")
    assert rig.row(pid) == (0, "handled by hand")
    rows = rig.audit(pid)
    assert [r["detail"] for r in rows if r["step"] == "not_cleared"] == ["alarm no longer set"]
    assert [r["step"] for r in rows].count("restart_issued") == 1
    assert "cleared" not in [r["step"] for r in rows]


def test_row_locked_by_an_operator_makes_the_clear_wait_on_the_same_connection(
        own_rig: Rig, tmp_path: Path) -> None:
    """An operator's open transaction holds the STATUS_PROCESS row (SELECT ... FOR UPDATE)
    while the reactor clears: the server ends the wait with error 1205 before the client's
    read timeout, the clear is retried, and lands once the transaction commits. A lock is
    not a dead server: the connection that waited is still open afterwards (it used to
    time out client-side, be dropped, and renew the whole pool)."""
    rig = own_rig
    gate = Gate(tmp_path)
    pid, name = rig.add("locked")
    p = rig.start(rig.config(processes={name: gate.settings()}))
    rig.alarm(pid)
    gate.wait_running()
    with rig.db.connect(DB) as operator, operator.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT alarma FROM STATUS_PROCESS WHERE process_id = %s FOR UPDATE",
                    (pid,))
        gate.open()
        waiting = wait_for(lambda: [i for i, info in reactor_connections(rig.db).items()
                                    if info.startswith("UPDATE STATUS_PROCESS SET alarma = 0")],
                           what="the reactor's clear waiting for the lock")
        p.wait_stderr(rf"cannot clear the alarm for process {pid} yet \(.*error 1205\)",
                      timeout=30)
        assert waiting[0] in reactor_connections(rig.db), "the waiting connection was dropped"
        assert rig.row(pid)[0] == 1
        operator.commit()
    note = rig.wait_cleared(pid)
    assert note.startswith("restarted")
    assert waiting[0] in reactor_connections(rig.db), "the waiting connection was dropped"
    assert "database unavailable" not in p.stderr


def test_clear_the_database_would_not_take_is_retried_without_a_second_restart(
        own_rig: Rig, tmp_path: Path) -> None:
    """The database goes away right after the health check passed and stays away past the
    clear's own retries (RECORD_RETRY_FOR). The unit was restarted and is healthy: the
    clear is retried in the background, and the sweeps that find the alarm still set once
    the server is back do not restart the unit again. The alarm ends cleared, the unit
    restarted exactly once."""
    rig = own_rig
    gate = Gate(tmp_path)
    pid, name = rig.add("pending")
    unit = f"{name}.service"
    before = wait_for(lambda: rig.started_at(unit), what="unit started")
    p = rig.start(rig.config(monitor={"check_interval": 0.5},
                             processes={name: gate.settings()}))
    rig.alarm(pid)
    gate.wait_running()
    rig.db.kill()
    gate.open()
    p.wait_stderr(rf"could not clear the alarm for process {pid}", timeout=90)
    p.wait_stderr(rf"the clear of process {pid}'s alarm is pending")
    restarted = rig.started_at(unit)
    assert restarted > before
    rig.db.start()
    rig.wait_cleared(pid, timeout=60)
    rig.sentinel("after-pending")
    assert rig.started_at(unit) == restarted, "the healthy unit was restarted again"
    steps = rig.steps(pid)
    assert steps.count("restart_issued") == 1 and steps.count("detected") == 1, steps
    assert steps[-2:] == ["not_cleared", "cleared"], steps
