"""Operator commands against the real database and the sandboxed systemd: status, alarm,
menu (through a pty), sweep --once, --version."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor import __version__
from tests.conftest import REACTOR, REPO, Proc
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


def reactor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REACTOR, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


def alarms(rig: Rig) -> dict[int, int]:
    return {int(p): int(a) for p, a in rig.db.execute(
        "SELECT process_id, alarma FROM STATUS_PROCESS", database=DB)}


def test_version() -> None:
    done = reactor("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"reactor {__version__}"


def test_status_table_and_json(rig: Rig) -> None:
    """After a restart cycle: alarma 0, breaker closed, the last action with its time, and
    the unit's live state from systemd; a failing unit shows its open breaker."""
    pid, name = rig.add("stat")
    bad, bad_name = rig.add("statbad", "[Service]\nExecStart=/bin/false\n", start=False)
    config = rig.config(monitor={"max_restart_failures": 1, "circuit_reset_time": 600},
                        default={"max_attempts": 1, "health_check_timeout": 0.3})
    p = rig.start(config)
    rig.alarm(pid)
    rig.alarm(bad)
    rig.wait_cleared(pid)
    rig.wait_step(bad, "breaker_open")
    assert p.stop() == 0

    done = reactor("status", "--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "UNIT", "ALARMA", "BREAKER", "LAST", "ACTION",
                                "WHEN", "UNIT", "STATE"]
    row = next(line for line in lines if f" {name} " in line)
    assert f"{name}.service" in row and "cleared: restarted" in row
    assert "active/running" in row and " closed " in row

    shown = json.loads(reactor("status", "--json", "--config", str(config)).stdout)
    assert shown["daemon"] is None  # stopped (and no [metrics] listen in the tests' configs)
    data = {r["name"]: r for r in shown["processes"]}
    ok = data[name]
    assert (ok["id"], ok["alarma"], ok["breaker"], ok["unit_state"]) == (
        pid, 0, "closed", "active/running")
    assert ok["last_action"].startswith("cleared: restarted") and ok["last_action_at"]
    broken = data[bad_name]
    assert broken["alarma"] == 1 and broken["breaker"].startswith("open until ")
    assert broken["unit_state"].startswith("failed/")
    assert data["nginx"]["unit_state"] == "not-found"


def test_alarm_subcommands(rig: Rig) -> None:
    config = str(rig.config())
    done = reactor("alarm", "set", "apache2", "--config", config)
    assert done.returncode == 0 and "alarm set: apache2 (id 2)" in done.stdout
    assert alarms(rig)[2] == 1
    assert "already in alarm" in reactor("alarm", "set", "2", "--config", config).stdout
    listed = reactor("alarm", "list", "--config", config).stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "ALARMA", "NOTES"]
    assert any(line.split()[:3] == ["2", "apache2", "1"] for line in listed[1:])

    done = reactor("alarm", "set", "--all", "--config", config)
    assert done.returncode == 0 and set(alarms(rig).values()) == {1}
    done = reactor("alarm", "reset", "--all", "--config", config)
    assert done.returncode == 0 and set(alarms(rig).values()) == {0}
    assert "alarm reset: nginx (id 1)" in done.stdout

    missing = reactor("alarm", "set", "no-such-process", "--config", config)
    assert missing.returncode == 6 and "no process with id or name" in missing.stderr
    usage = reactor("alarm", "set", "--config", config)
    assert usage.returncode == 2


def test_menu_through_a_pty(rig: Rig) -> None:
    """The seed's test_alarm.sh menu, driven like a person at a terminal."""
    config = str(rig.config())
    pid, child = pty.fork()
    if pid == 0:  # the child: the menu on the pty
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "reactor", "menu", "--config", config])
    transcript = ""

    def read_until(text: str, timeout: float = 15.0) -> str:
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while text not in transcript:
            left = deadline - time.monotonic()
            assert left > 0, f"menu never printed {text!r}; got:\n{transcript}"
            ready, _, _ = select.select([child], [], [], left)
            if ready:
                try:
                    transcript += os.read(child, 4096).decode()
                except OSError:
                    break
        return transcript

    def send(line: str) -> None:
        os.write(child, (line + "\n").encode())

    try:
        read_until("Choice [1-5]: ")
        assert "1) Display all services" in transcript and "5) Quit" in transcript
        send("1")
        read_until("postfix")
        send("2")
        read_until("Process id or name: ")
        send("postfix")
        read_until("alarm set for postfix (id 3)")
        assert alarms(rig)[3] == 1
        send("3")
        read_until("alarm set for 3 process(es)")
        assert set(alarms(rig).values()) == {1}
        send("4")
        read_until("alarm reset for 4 process(es)")
        assert set(alarms(rig).values()) == {0}
        send("9")
        read_until("unknown choice '9'")
        send("5")
        read_until("bye")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(child)


def test_sweep_once_handles_what_is_set_and_exits(rig: Rig) -> None:
    """With no daemon running: one sweep restarts what is in alarm, clears it, and exits 0;
    with a process that cannot be restarted it exits 6; --dry-run only lists."""
    pid, name = rig.add("once")
    config = str(rig.config())
    rig.alarm(pid)
    dry = reactor("sweep", "--once", "--dry-run", "--config", config)
    assert dry.returncode == 0 and f"{name}.service" in dry.stdout
    assert alarms(rig)[pid] == 1

    done = reactor("sweep", "--once", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "sweep found 1 alarm(s)" in done.stderr and "1 restarted, 0 failed" in done.stderr
    assert alarms(rig)[pid] == 0
    assert rig.steps(pid) == ["detected", "restart_issued", "restarted", "health_ok", "cleared"]

    ghost, _ = rig.add("oncemissing", unit=None)
    rig.alarm(ghost)
    failed = reactor("sweep", "--once", "--config", config)
    assert failed.returncode == 6 and "0 restarted, 1 failed" in failed.stderr

    with rig.db.connect(DB) as conn, conn.cursor() as cur:  # an id PROCESE does not have
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        cur.execute("INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (170, 1)")
    refused = reactor("sweep", "--once", "--config", config)
    assert refused.returncode == 6 and "1 refused" in refused.stderr
    assert "unknown process id 170" in str(rig.row(170)[1])


def test_one_process_acts_on_a_state_file(rig: Rig) -> None:
    """While `reactor run` holds the state file, a second run and a sweep --once refuse
    (they would act twice on alarms and overwrite its checkpoint); --dry-run still lists."""
    config = rig.config()
    p = rig.start(config)
    second = reactor("run", "--config", str(config))
    assert second.returncode == 6 and "holds" in second.stderr and ".lock" in second.stderr
    sweep = reactor("sweep", "--once", "--config", str(config))
    assert sweep.returncode == 6
    assert reactor("sweep", "--once", "--dry-run", "--config", str(config)).returncode == 0
    assert p.stop() == 0
    assert reactor("sweep", "--once", "--config", str(config)).returncode == 0


def test_database_down_during_sweep_once_is_exit_3(rig: Rig) -> None:
    """A database error inside the daemon's task group is still one line and exit 3."""
    from lab.mariadb import free_port

    config = rig.config()
    text = config.read_text().replace(f"port = {rig.db.port}", f"port = {free_port()}")
    config.write_text(text)
    done = reactor("sweep", "--once", "--config", str(config))
    assert done.returncode == 3, done.stderr
    assert "database unavailable" in done.stderr and "Traceback" not in done.stderr


def test_status_says_when_the_state_file_cannot_be_read(rig: Rig) -> None:
    """A state file reactor status cannot read (here: a directory in its place) shows the
    breakers as unknown, not as closed."""
    bad_state = rig.tmp / "state-is-a-dir"
    bad_state.mkdir()
    config = rig.config(monitor={"state_file": bad_state})
    done = reactor("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert {r["breaker"].split(" (")[0] for r in json.loads(done.stdout)["processes"]} == {"?"}
