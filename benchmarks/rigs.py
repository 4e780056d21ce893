"""The benchmark's throwaway world: one MariaDB, one sandboxed systemd, reactor configs and
subprocesses, and bulk helpers for many units (D-Bus calls, not one busctl per unit).

Everything started here is stopped by `Lab.close()` (reactors, systemd sandbox, MariaDB,
temporary directory), whatever happened before.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pymysql
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from lab import client
from lab.mariadb import MariaDB
from lab.proc import ReactorProcess
from lab.sandbox import CGROUP_ROOT, SystemdSandbox
from reactor.actions.systemd import JOB_MATCH, MANAGER, SD, SD_PATH, Systemd, UnitState
from reactor.config import SystemdConfig

DB = "v_process_monitor"
PASSWORD = "bench-pw"
# StartLimitIntervalSec=0: the workload restarts the same few units many times in a row;
# systemd's start rate limit would otherwise turn some restarts into the reset-failed path.
UNIT_TEXT = ("[Unit]\nDescription=reactor benchmark unit\nStartLimitIntervalSec=0\n"
             "[Service]\nExecStart=/bin/sleep infinity\n")
DBUS_CONCURRENCY = 64
# REACTOR_AUDIT.at is a naive DATETIME written from the reactor's local clock: every reactor
# runs in UTC, and the benchmark reads `at` as UTC (workload.audit_epoch), whatever the
# machine's zone (no DST jump or zone mismatch can shift a figure).
REACTOR_ENV = {"TZ": "UTC"}


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
                     settle: float, max_concurrent: int = 32, max_attempts: int = 2,
                     listen: str = "", extra: dict[str, dict[str, object]] | None = None) -> Path:
        """A reactor config for the lab; `listen` is its [metrics] listen (default: no
        listener); `extra` adds sections or keys ([alert.NAME] ...)."""
        path = self.base / f"{name}.ini"
        sections: dict[str, dict[str, object]] = {
            "database": {**self.database, "server_id": server_id},
            "monitor": {"mode": mode, "check_interval": check_interval,
                        "state_file": self.base / f"{name}-state.json",
                        "max_concurrent_restarts": max_concurrent},
            "systemd": {"bus": self.sandbox.address},
            "logging": {"level": "INFO", "log_file": ""},
            "metrics": {"listen": listen},
            "process.default": {"settle_time": settle, "health_check_timeout": 5,
                                "restart_delay": 0.5, "max_attempts": max_attempts},
        }
        for section, values in (extra or {}).items():
            sections.setdefault(section, {}).update(values)
        client.write_config(path, sections)
        return path

    def start_reactor(self, *args: str, ready: str) -> ReactorProcess:
        """`python -m reactor ARGS` (TZ=UTC), once its stderr shows `ready` (a regex)."""
        proc = ReactorProcess(list(args), REACTOR_ENV, echo_stderr=self.echo)
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

    def job_counter(self, units: list[str]) -> JobCounter:
        """A started JobCounter for these units on the sandbox's bus (stop() it)."""
        return JobCounter(self.sandbox.address, units).start()

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


class JobCounter:
    """Counts, per unit, the jobs systemd finished, independently of the reactor: a D-Bus
    connection of its own to the sandboxed systemd, subscribed to the Manager's JobRemoved
    signals, handled by an event loop in a thread of the benchmark process.

    Every job (RestartUnit, StartUnit, ...) ends in exactly one JobRemoved(id, job, unit,
    result); a restart job stays one job through its stop and start phases. So a unit
    restarted once shows one JobRemoved, result "done"; a kill fallback (KillUnit, which
    queues no job, then StartUnit) also shows one; a duplicate restart shows two.
    `counts[unit][result]` is the number of jobs of `unit` that ended with `result`."""

    def __init__(self, address: str, units: list[str]) -> None:
        self.address = address
        self.units = frozenset(units)
        self.counts: dict[str, collections.Counter[str]] = {}
        self.signals = 0  # JobRemoved signals seen, for any unit
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._drain = 0.0
        self._thread = threading.Thread(target=self._run, name="job-counter", daemon=True)

    def start(self, timeout: float = 30.0) -> JobCounter:
        """Returns once systemd is sure to send every later JobRemoved to this counter."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"job counter: no subscription within {timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"job counter: {self._error}") from self._error
        return self

    def stop(self, drain: float = 5.0) -> dict[str, collections.Counter[str]]:
        """Stop counting, once systemd has no job left for these units (at most `drain` s):
        a job queued before this call is counted when it ends. Returns `counts`."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            self._drain = drain
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(drain + 10)
        if self._error is not None:  # the connection failed: the counts may be short
            raise RuntimeError(f"job counter: {self._error}") from self._error
        return self.counts

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
        finally:
            self._ready.set()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL or msg.member != "JobRemoved":
            return None  # never a truthy value: that would swallow method replies
        self.signals += 1
        try:
            _, _, unit, result = msg.body
        except ValueError:
            return None
        if unit in self.units:
            self.counts.setdefault(unit, collections.Counter())[str(result)] += 1
        return None

    async def _call(self, bus: MessageBus, dest: str, path: str, iface: str, member: str,
                    signature: str = "", body: list[Any] | None = None) -> Message:
        reply = await asyncio.wait_for(bus.call(Message(
            destination=dest, path=path, interface=iface, member=member,
            signature=signature, body=body or [])), 30)
        if reply is None or reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member}: {None if reply is None else reply.body}")
        return reply

    async def _main(self) -> None:
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SESSION).connect()
        try:
            bus.add_message_handler(self._on_message)
            await self._call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "AddMatch", "s", [JOB_MATCH])
            await self._call(bus, SD, SD_PATH, MANAGER, "Subscribe")
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            # jobs still queued for our units end in a JobRemoved we must not miss
            deadline = self._loop.time() + self._drain
            while self._loop.time() < deadline:
                jobs = (await self._call(bus, SD, SD_PATH, MANAGER, "ListJobs")).body[0]
                if not any(job[1] in self.units for job in jobs):
                    break
                await asyncio.sleep(0.05)
            # ListJobs' reply and a JobRemoved sent before it arrive in order: all are in
        finally:
            bus.disconnect()


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
