"""The benchmark's throwaway world: one MariaDB, one sandboxed systemd, reactor configs and
subprocesses, and bulk helpers for many units (D-Bus calls, not one busctl per unit).

Everything started here is stopped by `Lab.close()` (reactors, systemd sandbox, MariaDB,
temporary directory), whatever happened before.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pymysql

from reactor.config import SystemdConfig
from reactor.lab import client
from reactor.lab.mariadb import MariaDB
from reactor.lab.proc import ReactorProcess
from reactor.lab.sandbox import CGROUP_ROOT, SystemdSandbox
from reactor.systemd import Systemd, UnitState

DB = "v_process_monitor"
PASSWORD = "bench-pw"
# StartLimitIntervalSec=0: the workload restarts the same few units many times in a row;
# systemd's start rate limit would otherwise turn some restarts into the reset-failed path.
UNIT_TEXT = ("[Unit]\nDescription=reactor benchmark unit\nStartLimitIntervalSec=0\n"
             "[Service]\nExecStart=/bin/sleep infinity\n")
DBUS_CONCURRENCY = 64


class Lab:
    def __init__(self, *, echo: bool = False) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="reactor-bench-"))
        self.echo = echo
        self.db: MariaDB | None = None
        self.sbx: SystemdSandbox | None = None
        self.reactors: list[ReactorProcess] = []
        self.database: dict[str, Any] = {}  # the [database] settings of the reactor account

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Lab:
        self.db = MariaDB(self.base / "db").start()
        self.database = self.db.setup_reactor_schema(password=PASSWORD, samples=False)
        self.sbx = SystemdSandbox(self.base / "systemd").start()
        return self

    def close(self) -> None:
        for proc in self.reactors:
            proc.kill()
        self.reactors.clear()
        if self.sbx is not None:
            self.sbx.stop()
        if self.db is not None:
            self.db.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def server(self) -> MariaDB:
        assert self.db is not None, "Lab.start() first"
        return self.db

    @property
    def sandbox(self) -> SystemdSandbox:
        assert self.sbx is not None, "Lab.start() first"
        return self.sbx

    def connect(self) -> pymysql.Connection:
        """A root connection to the benchmark schema (autocommit, Unix socket)."""
        return self.server.connect(DB)

    def query(self, sql: str, args: Any = None) -> list[Any]:
        return self.server.execute(sql, args, database=DB)

    # ------------------------------------------------------------------ reactor

    def write_config(self, name: str, *, mode: str, check_interval: float, server_id: int,
                     settle: float, max_concurrent: int = 32) -> Path:
        path = self.base / f"{name}.ini"
        sections: dict[str, dict[str, object]] = {
            "database": {**self.database, "server_id": server_id},
            "monitor": {"mode": mode, "check_interval": check_interval,
                        "state_file": self.base / f"{name}-state.json",
                        "max_concurrent_restarts": max_concurrent},
            "systemd": {"bus": self.sandbox.address},
            "logging": {"level": "INFO", "log_file": ""},
            "process.default": {"settle_time": settle, "health_check_timeout": 5,
                                "restart_delay": 0.5, "max_attempts": 2},
        }
        client.write_config(path, sections)
        return path

    def start_reactor(self, *args: str, ready: str) -> ReactorProcess:
        """`python -m reactor ARGS`, once its stderr shows `ready` (a regex)."""
        proc = ReactorProcess(list(args), echo_stderr=self.echo)
        self.reactors.append(proc)
        proc.wait_stderr(ready, timeout=60)
        return proc

    def stop_reactor(self, proc: ReactorProcess) -> None:
        try:
            proc.stop(timeout=30)
        finally:
            proc.kill()
            if proc in self.reactors:
                self.reactors.remove(proc)

    # ------------------------------------------------------------------ rows and units

    def add_rows(self, rows: list[tuple[int, str]]) -> None:
        """PROCESE and STATUS_PROCESS rows (alarma=0) for (process_id, process_name)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO PROCESE (process_id, process_name) VALUES (%s, %s)",
                            rows)
            cur.executemany("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)",
                            [(pid,) for pid, _ in rows])

    def add_units(self, rows: list[tuple[int, str]]) -> None:
        """One started `NAME.service` (sleep infinity) and its rows per (process_id, NAME):
        every unit file first, one reload, then StartUnit for all over one D-Bus connection."""
        for _, name in rows:
            self.sandbox.write_unit(f"{name}.service", UNIT_TEXT, reload=False)
        self.sandbox.reload()
        results = asyncio.run(_start_units(self.sandbox.address,
                                           [f"{name}.service" for _, name in rows]))
        failed = {u: r for u, r in results.items() if r != "done"}
        if failed:
            raise RuntimeError(f"{len(failed)} unit(s) did not start: "
                               f"{dict(list(failed.items())[:5])}")
        self.add_rows(rows)

    def unit_states(self, units: list[str]) -> dict[str, UnitState]:
        return asyncio.run(_unit_states(self.sandbox.address, units))

    def sandbox_cpu_seconds(self) -> float | None:
        """CPU used so far by everything in the systemd sandbox (systemd, dbus-daemon, the
        units), from its cpuacct cgroup; None when that controller is not mounted."""
        usage = CGROUP_ROOT / "cpuacct" / self.sandbox.name / "cpuacct.usage"
        try:
            return int(usage.read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def audit_mark(self) -> int:
        """The newest REACTOR_AUDIT id: rows after it belong to what comes next."""
        return int(self.query("SELECT COALESCE(MAX(id), 0) FROM REACTOR_AUDIT")[0][0])


def _client(address: str) -> Systemd:
    return Systemd(SystemdConfig(bus=address, call_timeout=30, job_timeout=120))


async def _start_units(address: str, units: list[str]) -> dict[str, str]:
    sd = _client(address)
    sem = asyncio.Semaphore(DBUS_CONCURRENCY)

    async def one(unit: str) -> tuple[str, str]:
        async with sem:
            return unit, (await sd.start(unit)).result

    try:
        await sd.connect()
        return dict(await asyncio.gather(*(one(u) for u in units)))
    finally:
        await sd.close()


async def _unit_states(address: str, units: list[str]) -> dict[str, UnitState]:
    sd = _client(address)
    try:
        await sd.connect()
        states = await sd.unit_states(units)
    finally:
        await sd.close()
    for unit, state in states.items():
        if not isinstance(state, UnitState):
            raise RuntimeError(f"cannot read {unit}: {state}")
    return {u: s for u, s in states.items() if isinstance(s, UnitState)}
