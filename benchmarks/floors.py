"""The floors the reactor is measured against, in the same run, with no reactor code:

- a bare mysql-replication reader: a BinLogStreamReader on STATUS_PROCESS that calls a
  0 -> 1 of `alarma` an alarm, nothing more. Single-alarm detection (from the UPDATE's send,
  the same workload as the reactor's binlog mode) and the last row of one UPDATE of many
  rows;
- a bare D-Bus client: dbus-fast, AddMatch(JobRemoved) + Subscribe, then RestartUnit of
  every unit, `concurrency` at a time, each waiting for its job's JobRemoved: the storm's
  restarts per second with the same units loaded in the same sandbox.

Absolute figures drift on a shared machine; the ratios of the reactor's figures to these,
measured minutes apart in one run, do not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import FormatDescriptionEvent
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from benchmarks.rigs import DB, Lab
from benchmarks.workload import RAISE_SQL, RESET_SQL, PlannedAlarm

Tick = Callable[[int], None]
SD = "org.freedesktop.systemd1"
SD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
JOB_MATCH = (f"type='signal',sender='{SD}',path='{SD_PATH}',interface='{MANAGER}',"
             "member='JobRemoved'")


class BareReader:
    """A thread reading the binlog with mysql-replication alone; `seen[pid]` is the wall
    clock at which each process's latest 0 -> 1 came out of the library."""

    def __init__(self, lab: Lab, server_id: int) -> None:
        # the reactor's own account and transport (TCP on loopback), as in its config
        db = lab.database
        self.settings = {"host": db["host"], "port": db["port"], "user": db["user"],
                         "passwd": db["password"], "read_timeout": 5.0}
        self.server_id = server_id
        self.seen: dict[int, float] = {}
        self.count = 0  # alarms seen
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stream: BinLogStreamReader | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bare-reader", daemon=True)

    def start(self) -> BareReader:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"bare reader did not start: {self._error}")
        return self

    def _run(self) -> None:
        try:
            self._stream = BinLogStreamReader(
                connection_settings=dict(self.settings), server_id=self.server_id,
                resume_stream=True, blocking=True, slave_heartbeat=1.0,
                only_events=[UpdateRowsEvent, WriteRowsEvent, FormatDescriptionEvent],
                only_schemas=[DB], only_tables=["STATUS_PROCESS"], enable_logging=False)
            for event in self._stream:
                now = time.time()
                if isinstance(event, FormatDescriptionEvent):
                    # the server accepted the dump: from here on every commit reaches us
                    self._ready.set()
                    continue
                with self._cond:
                    for row in event.rows:
                        after = row.get("after_values", row.get("values"))
                        before = row.get("before_values")
                        if after["alarma"] == 1 and (before is None or before["alarma"] != 1):
                            self.seen[after["process_id"]] = now
                            self.count += 1
                    self._cond.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - a stop() closes the socket under it
            if not self._stop.is_set():
                self._error = exc
        finally:
            self._ready.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, pid: int, after: float, timeout: float) -> float | None:
        """When the reader saw an alarm of `pid` at or after `after` (None: not in time)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (t := self.seen.get(pid)) is None or t < after:
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    return None
                self._cond.wait(left)
            return t

    def wait_count(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    return False
                self._cond.wait(left)
            return True

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a blocked reader is best effort
                pass
        self._thread.join(10)


def detect_floor(lab: Lab, workload: list[PlannedAlarm], server_id: int,
                 tick: Tick) -> list[dict[str, float]]:
    """The reactor's single-alarm workload (same pauses, same processes) with only the bare
    reader listening: per alarm, its UPDATE's send, commit, and the reader's decode."""
    reader = BareReader(lab, server_id).start()
    samples = []
    try:
        with lab.connect() as conn, conn.cursor() as cur:
            for i, alarm in enumerate(workload, 1):
                time.sleep(alarm.pause)
                sent = time.time()
                cur.execute(RAISE_SQL, (alarm.pid,))
                committed = time.time()
                seen = reader.wait_for(alarm.pid, sent, 10.0)
                cur.execute(RESET_SQL, (alarm.pid,))
                if seen is not None:
                    samples.append({"sent": sent, "committed": committed, "detected": seen})
                tick(i)
    finally:
        reader.stop()
    return samples


def rows_floor(lab: Lab, lo: int, hi: int, server_id: int) -> dict[str, Any]:
    """One UPDATE alarming the rows lo..hi with only the bare reader listening: when its
    last row came out of the library. The rows are reset afterwards."""
    rows = hi - lo + 1
    reader = BareReader(lab, server_id).start()
    try:
        with lab.connect() as conn, conn.cursor() as cur:
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 "
                        "WHERE process_id BETWEEN %s AND %s", (lo, hi))
            committed = time.time()
            complete = reader.wait_count(rows, max(60.0, rows / 100))
            last = max((t for pid, t in reader.seen.items() if lo <= pid <= hi), default=None)
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 0 "
                        "WHERE process_id BETWEEN %s AND %s", (lo, hi))
    finally:
        reader.stop()
    return {"rows": rows, "seen": sum(1 for pid in reader.seen if lo <= pid <= hi),
            "complete": complete,
            "last_ms": None if last is None else round((last - committed) * 1000, 3)}


async def _bare_storm(address: str, units: list[str], concurrency: int) -> dict[str, Any]:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()
    waiting: dict[str, asyncio.Future[str]] = {}
    early: dict[str, str] = {}

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "JobRemoved":
            _, job, _, result = msg.body
            fut = waiting.pop(job, None)
            if fut is None:
                early[job] = result
            elif not fut.done():
                fut.set_result(result)
        return None  # never truthy: that would swallow method replies

    async def call(path: str, iface: str, member: str, signature: str = "",
                   body: list[Any] | None = None, dest: str = SD) -> Message:
        reply = await bus.call(Message(destination=dest, path=path, interface=iface,
                                       member=member, signature=signature, body=body or []))
        if reply is None or reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member}: {None if reply is None else reply.body}")
        return reply

    try:
        bus.add_message_handler(on_message)
        await call("/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                   [JOB_MATCH], dest="org.freedesktop.DBus")
        await call(SD_PATH, MANAGER, "Subscribe")
        queue = list(reversed(units))
        results: dict[str, int] = {}

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            while queue:
                unit = queue.pop()
                job = str((await call(SD_PATH, MANAGER, "RestartUnit", "ss",
                                      [unit, "replace"])).body[0])
                result = early.pop(job, None)
                if result is None:
                    fut = waiting[job] = loop.create_future()
                    result = await asyncio.wait_for(fut, 120)
                results[result] = results.get(result, 0) + 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    finally:
        bus.disconnect()
    return {"units": len(units), "concurrency": concurrency, "seconds": round(elapsed, 3),
            "restarts_per_s": round(len(units) / elapsed, 1), "job_results": results}


def storm_floor(lab: Lab, units: list[str], concurrency: int) -> dict[str, Any]:
    """The bare D-Bus client restarting `units`, `concurrency` at a time, with the same
    JobRemoved counter listening as in the reactor's storm (a second subscriber costs the
    bus a little; both sides pay it)."""
    counter = lab.job_counter(units)
    cpu = lab.sandbox_cpu_seconds()
    try:
        out = asyncio.run(_bare_storm(lab.sandbox.address, units, concurrency))
    finally:
        counts = counter.stop()
    after = lab.sandbox_cpu_seconds()
    out["systemd_sandbox_cpu_s"] = None if cpu is None or after is None else round(after - cpu, 3)
    out["units_one_job_done"] = sum(1 for u in units
                                    if u in counts and counts[u] == {"done": 1})
    return out
