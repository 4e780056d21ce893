"""Fleet benchmark: what N binlog readers cost the database server, and what they do to a
probe reactor's detection latency; all on one server, then spread over a primary and two
replicas.

    benchmarks/run.sh --only fleet        (or: .venv/bin/python -m benchmarks.fleet)
    .venv/bin/python -m benchmarks.fleet --quick --output /tmp/fleet

For each layout (`one`: every reader on the primary; `spread`: readers round-robin over
the primary and two GTID replicas, lab/replication.py) and each reader count (1, 10, 50,
100 by default):

- N bare binlog readers (mysql-replication, one thread each in this process, each with its
  own server_id, decoding STATUS_PROCESS rows as a reactor would) stream from their server;
- a probe: the real `reactor watch`, its stream on the primary (`one`) or on replica 1
  (`spread`, the way a fleet host reads), rows from the primary;
- `--alarms` alarms (UPDATE ... alarma = 1 on the primary, a random pause in [0, 50 ms)
  before each): `detect_ms` is the probe's detected_at minus the client's commit time;
- `server_cpu_ms_per_alarm`: the database servers' CPU (utime + stime of every mariadbd,
  /proc/PID/stat) over the alarm window, divided by the alarms; also per server.

Results: results/fleet.json, fleet.md, fleet.png (`--output DIR` elsewhere). Figures are
outputs, never assertions; on a busy machine they are higher, so the load average at the
start and end of the run is recorded with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, XidEvent
from pymysqlreplication.row_event import UpdateRowsEvent

from benchmarks.idle import cpu_seconds
from benchmarks.report import summarize
from lab import LabUnavailable, client
from lab.mariadb import MariaDB
from lab.proc import ReactorProcess
from lab.replication import Topology

RESULTS = Path(__file__).resolve().parent / "results"
DB = "v_process_monitor"
PASSWORD = "bench-pw"
READERS = (1, 10, 50, 100)
LAYOUTS = ("one", "spread")
FIRST_PID = 5001
PROBE_ID = 4400
READER_ID = 6000  # reader i has server_id READER_ID + i
EXIT_UNAVAILABLE = 77


class Readers:
    """N binlog readers in threads of this process; stop() ends their dump threads on the
    servers (KILL CONNECTION), which ends the threads."""

    def __init__(self, servers: list[MariaDB], count: int) -> None:
        self.servers = servers
        self.count = count
        self.rows = [0] * count
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self, timeout: float = 60.0) -> Readers:
        for i in range(self.count):
            server = self.servers[i % len(self.servers)]
            t = threading.Thread(target=self._read, args=(i, server), daemon=True,
                                 name=f"reader-{i}")
            t.start()
            self.threads.append(t)
        deadline = time.monotonic() + timeout
        while self.dump_threads() < self.count:  # every reader's dump is on a server
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.dump_threads()} of {self.count} readers "
                                   f"connected: {self.errors[:3]}")
            time.sleep(0.05)
        return self

    def dump_threads(self) -> int:
        return sum(len(self._dumps(s)) for s in self.servers)

    @staticmethod
    def _dumps(server: MariaDB) -> list[int]:
        return [int(row[0]) for row in server.execute("SHOW PROCESSLIST")
                if row[4] == "Binlog Dump" and row[1] == "reactor"]

    def _read(self, i: int, server: MariaDB) -> None:
        stream = BinLogStreamReader(
            connection_settings={"host": "127.0.0.1", "port": server.port, "user": "reactor",
                                 "password": PASSWORD, "read_timeout": 10},
            server_id=READER_ID + i, resume_stream=True, blocking=True,
            only_events=[UpdateRowsEvent, XidEvent, HeartbeatLogEvent],
            only_schemas=[DB], only_tables=["STATUS_PROCESS"], slave_heartbeat=1)
        try:
            for event in stream:
                if isinstance(event, UpdateRowsEvent):
                    self.rows[i] += len(event.rows)
                if self._stopping.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - ended by stop(), or a real failure
            if not self._stopping.is_set():
                self.errors.append(repr(exc))
        finally:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the connection is gone already
                pass

    def stop(self) -> None:
        self._stopping.set()
        for server in self.servers:
            for conn_id in self._dumps(server):
                try:
                    server.execute(f"KILL CONNECTION {conn_id}")
                except pymysql.err.MySQLError:
                    pass  # ended meanwhile
        for t in self.threads:
            t.join(15)


def add_rows(primary: MariaDB, count: int) -> list[int]:
    pids = [FIRST_PID + i for i in range(count)]
    with primary.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)",
                        [(p, f"fleet-bench-{p}") for p in pids])
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)",
                        [(p,) for p in pids])
    return pids


def probe(base: Path, topo: Topology, stream_from: MariaDB) -> ReactorProcess:
    cfg = client.write_config(base / f"probe-{stream_from.port}.ini", {
        "database": {"host": "127.0.0.1", "port": topo.primary.port, "user": "reactor",
                     "password": PASSWORD, "database": DB, "server_id": PROBE_ID - 1,
                     "heartbeat": 1},
        "binlog": {"host": "127.0.0.1", "port": stream_from.port},
        "monitor": {"mode": "binlog", "check_interval": 3600},
        "logging": {"level": "INFO", "log_file": ""},
        "metrics": {"listen": ""},
    })
    proc = ReactorProcess(["watch", "--config", cfg], {"TZ": "UTC"})
    try:
        proc.wait_stderr(r"binlog stream connected", timeout=60)
    except AssertionError:
        proc.kill()
        raise
    return proc


def run_alarms(topo: Topology, watch: ReactorProcess, pids: list[int], seed: int
               ) -> tuple[list[float], int]:
    """Alarms one after another; each one's detect_ms, and how many were not seen."""
    rng = random.Random(seed)
    detect: list[float] = []
    missed = 0
    with topo.primary.connect(DB) as conn, conn.cursor() as cur:
        for pid in pids:
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s", (pid,))
        while not watch.out.empty():  # the resets print nothing; drop any stale line
            watch.out.get_nowait()
        for pid in pids:
            time.sleep(rng.uniform(0, 0.05))
            cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s", (pid,))
            committed = time.time()
            deadline = time.monotonic() + 10
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    missed += 1
                    break
                try:
                    line = json.loads(watch.line(timeout=left))
                except AssertionError:
                    missed += 1
                    break
                if line.get("process_id") == pid and line.get("source") == "binlog":
                    detect.append((float(line["detected_at"]) - committed) * 1000)
                    break
    return detect, missed


def measure(topo: Topology, base: Path, layout: str, readers: int, pids: list[int],
            seed: int) -> dict[str, Any]:
    servers = [topo.primary] if layout == "one" else topo.servers
    stream_from = topo.primary if layout == "one" else topo.replicas[0]
    pool = Readers(servers, readers).start()
    watch = probe(base, topo, stream_from)
    try:
        time.sleep(1.0)  # connections settled
        pids_of = {s.port: s.proc.pid for s in topo.servers if s.proc is not None}
        before = {port: cpu_seconds(pid) for port, pid in pids_of.items()}
        t0 = time.monotonic()
        detect, missed = run_alarms(topo, watch, pids, seed)
        window = time.monotonic() - t0
        topo.sync()
        after = {port: cpu_seconds(pid) for port, pid in pids_of.items()}
    finally:
        watch.kill()
        pool.stop()
    used = {("primary" if port == topo.primary.port else f"replica{i}"): after[port] - before[port]
            for i, port in enumerate(pids_of)}
    n = max(1, len(pids) - missed)
    return {
        "layout": layout, "readers": readers, "alarms": len(pids), "missed": missed,
        "detect_ms": summarize(detect), "window_s": round(window, 2),
        "server_cpu_ms_per_alarm": round(sum(used.values()) * 1000 / n, 3),
        "server_cpu_ms_per_alarm_by_server": {k: round(v * 1000 / n, 3)
                                              for k, v in used.items()},
        "server_cpu_percent": round(sum(used.values()) / window * 100, 2),
        "reader_errors": pool.errors[:5],
        "rows_per_reader_min": min(pool.rows) if pool.rows else 0,
    }


# ------------------------------------------------------------------ report


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [f"Measured {m['date']} on {m['cpu_model']} ({m['cores']} cores), {m['mariadb']}; "
           f"load average at start {m['load_average_start']}, at end "
           f"{m.get('load_average_end')}; {m['alarms']} alarms per row"
           + (" (QUICK: reduced, not representative)" if m["quick"] else "") + ".", "",
           "| layout | readers | detect p50 ms | detect p99 ms | server CPU ms / alarm | "
           "server CPU % | missed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        d = r["detect_ms"]
        out.append(f"| {r['layout']} | {r['readers']} | {d['p50']} | {d['p99']} | "
                   f"{r['server_cpu_ms_per_alarm']} | {r['server_cpu_percent']} | "
                   f"{r['missed']} |")
    out += ["", "`one`: every reader and the probe on the primary. `spread`: readers "
            "round-robin over the primary and two replicas, the probe on replica 1 "
            "(its detection includes replication). Server CPU: all mariadbd processes "
            "over the alarm window, per alarm."]
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for layout, style in (("one", "o-"), ("spread", "s--")):
        runs = [r for r in results["runs"] if r["layout"] == layout]
        if not runs:
            continue
        xs = [r["readers"] for r in runs]
        lat.plot(xs, [r["detect_ms"]["p50"] for r in runs], style, label=f"{layout} p50")
        lat.plot(xs, [r["detect_ms"]["p99"] for r in runs], style, alpha=0.5,
                 label=f"{layout} p99")
        cpu.plot(xs, [r["server_cpu_ms_per_alarm"] for r in runs], style, label=layout)
    lat.set(xscale="log", xlabel="binlog readers", ylabel="probe detect ms (commit -> watch)",
            title="detection latency")
    cpu.set(xscale="log", xlabel="binlog readers", ylabel="server CPU ms per alarm",
            title="database servers' CPU per alarm")
    for ax in (lat, cpu):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/fleet.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: readers 1 and 10, 10 alarms (figures not representative)")
    p.add_argument("--readers", type=int, nargs="+", help=f"reader counts (default {READERS})")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, help="default: both")
    p.add_argument("--alarms", type=int, help="alarms per run (default 100; quick 10)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    # the readers' own reconnect after stop() kills their dump threads is expected
    logging.getLogger("pymysqlreplication").setLevel(logging.CRITICAL)
    readers = tuple(a.readers or ((1, 10) if a.quick else READERS))
    alarms = a.alarms or (10 if a.quick else 100)
    base = Path(tempfile.mkdtemp(prefix="reactor-fleet-bench-"))
    results: dict[str, Any] = {"runs": []}
    try:
        try:
            topo = Topology(base / "topo").start()
        except LabUnavailable as exc:
            print(f"benchmark cannot run here: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        try:
            topo.primary.setup_reactor_schema(PASSWORD, samples=False)
            pids = add_rows(topo.primary, alarms)
            topo.sync()
            results["machine"] = {
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "cpu_model": next((ln.split(":", 1)[1].strip() for ln in
                                   Path("/proc/cpuinfo").read_text().splitlines()
                                   if ln.startswith("model name")), platform.machine()),
                "cores": os.cpu_count(), "kernel": platform.release(),
                "python": platform.python_version(),
                "mariadb": topo.primary.execute("SELECT VERSION()")[0][0],
                "load_average_start": [round(x, 2) for x in os.getloadavg()],
                "alarms": alarms, "readers": list(readers), "quick": a.quick}
            for layout in a.layouts or LAYOUTS:
                for count in readers:
                    print(f"==> {layout}: {count} reader(s), {alarms} alarms", flush=True)
                    run = measure(topo, base, layout, count, pids, a.seed)
                    d = run["detect_ms"]
                    print(f"    detect p50 {d['p50']} ms, p99 {d['p99']} ms; server CPU "
                          f"{run['server_cpu_ms_per_alarm']} ms/alarm; missed "
                          f"{run['missed']}", flush=True)
                    results["runs"].append(run)
            results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            topo.cleanup()
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(base, ignore_errors=True)
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "fleet.json").write_text(json.dumps(results, indent=1) + "\n")
    (a.output / "fleet.md").write_text(render(results))
    plot(results, a.output / "fleet.png")
    print("\n" + render(results))
    print("results: " + ", ".join(str(a.output / f"fleet.{e}") for e in ("json", "md", "png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
