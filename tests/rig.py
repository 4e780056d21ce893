"""A test rig for `reactor run`: the module's MariaDB, the module's sandboxed systemd, and
helpers to add processes with units, raise alarms and read back what the reactor did."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc, wait_for, write_config

DB = "v_process_monitor"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"
FAST = {"settle_time": 0.2, "health_check_timeout": 2, "restart_delay": 0.1,
        "max_attempts": 2, "command_timeout": 5}


class Rig:
    def __init__(self, db: MariaDB, sbx: SystemdSandbox, tmp: Path, procs: list[Proc]) -> None:
        self.db = db
        self.sbx = sbx
        self.tmp = tmp
        self.procs = procs
        self.tag = secrets.token_hex(3)
        self.next_id = 100

    def name(self, base: str) -> str:
        """A process name unique to this test (units of other tests live in the sandbox)."""
        return f"{base}-{self.tag}"

    def add(self, base: str, unit: str | None = SLEEPER, *, start: bool = True,
            pid: int | None = None) -> tuple[int, str]:
        """A process row in PROCESE/STATUS_PROCESS and, unless unit is None, its unit
        (started, so that a restart has something to restart)."""
        name = self.name(base)
        if pid is None:
            pid = self.next_id
            self.next_id += 1
        self.db.execute("INSERT INTO PROCESE VALUES (%s, %s)", (pid, name), database=DB)
        self.db.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)", (pid,),
                        database=DB)
        if unit is not None:
            self.sbx.write_unit(f"{name}.service", unit)
            if start:
                self.sbx.manager("StartUnit", "ss", f"{name}.service", "replace")
        return pid, name

    def config(self, monitor: dict[str, Any] | None = None,
               processes: dict[str, dict[str, Any]] | None = None,
               default: dict[str, Any] | None = None, systemd: dict[str, Any] | None = None,
               file: str = "c.ini", metrics: dict[str, Any] | None = None,
               sections: dict[str, dict[str, Any]] | None = None) -> Path:
        """`sections`: more sections ([alerts], [alert.NAME] ...)."""
        procs = {"default": {**FAST, **(default or {})}}
        procs.update(processes or {})
        return write_config(
            self.tmp / file, self.db,
            {"monitor": {"mode": "binlog", "check_interval": 60, **(monitor or {})},
             "systemd": {"bus": self.sbx.address, "call_timeout": 3, "job_timeout": 5,
                         **(systemd or {})},
             "metrics": {"listen": "", **(metrics or {})}, **(sections or {})},
            procs,
        )

    def start(self, config: Path) -> Proc:
        p = Proc(["run", "--config", str(config)])
        self.procs.append(p)
        p.wait_stderr(r"ready: mode=")
        return p

    def alarm(self, pid: int) -> None:
        """Set the alarm the way an operator does: the stock mariadb client."""
        self.db.client("-e", f"UPDATE {DB}.STATUS_PROCESS SET alarma=1 WHERE process_id={pid}")

    def row(self, pid: int) -> tuple[int, str | None]:
        alarma, notes = self.db.execute(
            "SELECT alarma, notes FROM STATUS_PROCESS WHERE process_id = %s", (pid,),
            database=DB)[0]
        return int(alarma), notes

    def steps(self, pid: int) -> list[str]:
        rows = self.db.execute("SELECT step FROM REACTOR_AUDIT WHERE process_id = %s "
                               "ORDER BY id", (pid,), database=DB)
        return [r[0] for r in rows]

    def audit(self, pid: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT cycle, step, unit, source, latency_ms, detail FROM REACTOR_AUDIT "
            "WHERE process_id = %s ORDER BY id", (pid,), database=DB)
        keys = ("cycle", "step", "unit", "source", "latency_ms", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def wait_cleared(self, pid: int, timeout: float = 15) -> str:
        """The note of the cleared alarm, once its cycle's audit rows are written too (the
        reactor writes them in batches, a little after the clear)."""
        def cleared() -> str | None:
            alarma, notes = self.row(pid)
            return notes if alarma == 0 and notes else None

        note = str(wait_for(cleared, timeout, what=f"alarm of process {pid} cleared"))

        def recorded() -> bool:
            steps = self.steps(pid)
            last = len(steps) - steps[::-1].index("detected") if "detected" in steps else 0
            return "cleared" in steps[last:]

        wait_for(recorded, timeout, what=f"the audit rows of process {pid}'s cleared cycle")
        return note

    def sentinel(self, base: str, timeout: float = 30) -> int:
        """A later alarm of another process, handled end to end (restarted, cleared,
        audited). A check that something did *not* happen runs after this, never after a
        sleep: whatever an earlier alarm was going to do, its stream events came first."""
        pid, _ = self.add(base)
        self.alarm(pid)
        self.wait_cleared(pid, timeout)
        return pid

    def wait_step(self, pid: int, step: str, count: int = 1, timeout: float = 15) -> list[str]:
        return list(wait_for(lambda: (s := self.steps(pid)).count(step) >= count and s,
                             timeout, what=f"{count} x {step} for process {pid}"))

    def started_at(self, unit: str) -> int:
        return int(self.sbx.unit_property(unit, "ExecMainStartTimestamp", "Service") or 0)
