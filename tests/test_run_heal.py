"""Refusals heal, and the config reloads without losing the stream (SIGHUP).

A refused alarm (its PROCESE row names something reactor may not touch) used to stay
refused until someone toggled `alarma`. Now it is looked at again when its row changes
(the stream sees PROCESE too), when a sweep reads another name for it, and after a config
reload. check_interval is 300 s: nothing here is left to the periodic sweep."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]
SLOW = {"check_interval": 300}


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


def test_a_refused_alarm_heals_when_its_procese_row_is_renamed(rig: Rig) -> None:
    """The row names a unit outside allowed_units: refused, with a note. An operator fixes
    the name in PROCESE, and that is enough: the alarm is handled, nobody touches alarma."""
    pid, name = rig.add("renamed")
    rig.db.execute("UPDATE PROCESE SET process_name = 'elsewhere' WHERE process_id = %s",
                   (pid,), database=DB)
    p = rig.start(rig.config(monitor={**SLOW, "allowed_units": f"*-{rig.tag}.service"}))
    rig.alarm(pid)
    rig.wait_step(pid, "refused")
    assert "unit elsewhere.service is denied" in str(rig.row(pid)[1])
    rig.db.execute("UPDATE PROCESE SET process_name = %s WHERE process_id = %s", (name, pid),
                   database=DB)
    note = rig.wait_cleared(pid)
    assert note.startswith("restarted")
    p.wait_stderr(f"PROCESE row of process {pid} changed: its refused alarm is looked at "
                  "again")
    assert rig.steps(pid).count("refused") == 1


def test_sighup_reloads_the_config_and_heals_a_refusal(rig: Rig) -> None:
    """allowed_units does not admit the unit: refused. The config is edited and SIGHUP
    sent: reloaded without a restart (same process, the stream not reconnected), and the
    refused alarm, still set, is handled with the new allowed_units."""
    pid, name = rig.add("reload")
    other, _ = rig.add("after-reload")
    p = rig.start(rig.config(monitor={**SLOW, "allowed_units": "nothing-*.service"}))
    rig.alarm(pid)
    rig.wait_step(pid, "refused")
    rig.config(monitor={**SLOW, "allowed_units": f"*-{rig.tag}.service"})
    p.signal(signal.SIGHUP)
    p.wait_stderr(r"INFO .*config reloaded: 0 process section\(s\)")
    rig.wait_cleared(pid)
    rig.alarm(other)  # the stream still delivers
    rig.wait_cleared(other)
    assert {r["source"] for r in rig.audit(other)} == {"binlog"}
    assert p.proc.poll() is None
    assert "binlog stream reconnected" not in p.stderr and "stream lost" not in p.stderr


def test_an_invalid_config_on_sighup_is_refused_and_the_old_one_serves(rig: Rig) -> None:
    """A reload with errors: one ERROR per problem naming [section] key, the running config
    stays (an alarm after it is handled as before). A valid reload that changes a setting
    needing a restart: a WARNING names it, the running value stays, the stream too."""
    pid, name = rig.add("kept")
    second, _ = rig.add("kept-2")
    config = rig.config(monitor=SLOW)
    p = rig.start(config)
    good = config.read_text()
    config.write_text(good.replace("check_interval = 300", "check_interval = -5")
                      + "\n[monitor.extra]\nfoo = 1\n")
    p.signal(signal.SIGHUP)
    error = p.wait_stderr(r"ERROR .*config reload refused: .*\[monitor\] check_interval").string
    assert "must be from 0.01 to 86400 seconds" in error
    p.wait_stderr(r"ERROR .*config reload refused: .*\[monitor.extra\]: unknown section")
    p.wait_stderr(r"ERROR .*config reload refused: the running config stays in force")
    rig.alarm(pid)
    rig.wait_cleared(pid)
    config.write_text(good.replace("server_id = 100", "server_id = 177"))
    p.signal(signal.SIGHUP)
    p.wait_stderr(r"WARNING .*config reload: \[database\] server_id changed, which needs a "
                  "restart")
    p.wait_stderr(r"config reloaded")
    rig.alarm(second)
    rig.wait_cleared(second)
    assert {r["source"] for r in rig.audit(second)} == {"binlog"}
    assert "binlog stream reconnected" not in p.stderr
