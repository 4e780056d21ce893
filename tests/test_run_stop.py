"""An ordered stop on every way out of `reactor run`, not only SIGTERM: intake closes first,
cycles whose restart was not issued are cancelled (their alarms stay set), issued ones
drain up to shutdown_timeout, audit rows are flushed, the checkpoint is saved, and the
exit status says why it stopped."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc
from tests.rig import Rig
from tests.test_watch_faults import kill_binlog_dumps

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]
SLOW_START = "[Service]\nExecStartPre=/bin/sleep 2\nExecStart=/bin/sleep infinity\n"


@pytest.fixture
def rig(own_mariadb: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(own_mariadb, sandbox, tmp_path, procs)


def test_the_source_failing_stops_in_order(rig: Rig) -> None:
    """mode = binlog, and the server refuses the stream for good (REPLICATION SLAVE revoked,
    the dump thread killed): exit 4, as before, but in order. Of the two cycles in flight,
    the one whose restart was issued finishes (unit restarted, alarm cleared, every audit
    row written); the one still in its pre_restart_command is cancelled and its alarm stays
    set; the checkpoint is saved."""
    issued, _ = rig.add("drained", SLOW_START)
    waiting, waiting_name = rig.add("waiting")
    config = rig.config(monitor={"shutdown_timeout": 20},
                        processes={waiting_name: {"pre_restart_command": "/bin/sleep 30",
                                                  "command_timeout": 60}})
    p = rig.start(config)
    rig.alarm(issued)
    rig.wait_step(issued, "restart_issued")
    rig.alarm(waiting)
    rig.wait_step(waiting, "detected")
    rig.db.execute("REVOKE REPLICATION SLAVE ON *.* FROM 'reactor'@'localhost'")
    assert kill_binlog_dumps(rig.db) == 1
    assert p.proc.wait(40) == 4, p.stderr[-3000:]
    assert rig.row(issued)[0] == 0 and rig.steps(issued)[-1] == "cleared"
    assert rig.row(waiting)[0] == 1 and rig.steps(waiting) == ["detected"]
    p.wait_stderr(r"ERROR .*alarm source failed: .*REPLICATION SLAVE.*; stopping")
    p.wait_stderr(rf"cancelled 1 cycle\(s\) whose restart was not issued yet \(process ids "
                  rf"{waiting}\)")
    p.wait_stderr(r"stopped: 2 cycle\(s\) run, 1 cancelled")
    order = [n for n, line in enumerate(p.err_lines)
             for key in ("alarm source failed", "stopping: intake closed", "stopped:")
             if key in line]
    assert order == sorted(order) and len(order) == 3, p.stderr
    assert p.stderr.splitlines()[-1].startswith("reactor: [monitor] mode = binlog")
    state = json.loads((rig.tmp / "c-state.json").read_text())
    assert state["binlog"]["file"].startswith("binlog.") and "origin" in state["binlog"]


def test_a_second_sigint_stops_in_order_without_waiting(rig: Rig) -> None:
    """SIGINT while a slow restart drains (shutdown_timeout 60 s), then a second SIGINT:
    the cycle is cancelled at once, yet the stop stays orderly (the stop lines, audit rows
    flushed, checkpoint saved) and the exit status is 130. It used to _exit(130) at once."""
    pid, _ = rig.add("interrupted", "[Service]\nExecStartPre=/bin/sleep 30\n"
                                    "ExecStart=/bin/sleep infinity\n")
    config = rig.config(monitor={"shutdown_timeout": 60})
    p = rig.start(config)
    rig.alarm(pid)
    rig.wait_step(pid, "restart_issued")
    p.signal(signal.SIGINT)
    p.wait_stderr(r"waiting up to 60 s for 1 cycle\(s\)")
    p.signal(signal.SIGINT)
    assert p.proc.wait(15) == 130
    p.wait_stderr(r"second interrupt: stopping without waiting")
    p.wait_stderr(r"cancelled 1 cycle\(s\) still in flight")
    p.wait_stderr(r"stopped: 1 cycle\(s\) run, 1 cancelled")
    assert rig.row(pid)[0] == 1
    assert rig.steps(pid) == ["detected", "restart_issued"]
    assert json.loads((rig.tmp / "c-state.json").read_text())["binlog"]["origin"]
