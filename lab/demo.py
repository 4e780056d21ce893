"""Live demo: a throwaway MariaDB, a sandboxed systemd with a few units, `reactor run`, and
alarms set with the stock mariadb client. Shows each alarm -> restart -> cleared, timed.

    scripts/demo.sh [--alarms N] [--settle SECONDS]

Each alarm is set by running the `mariadb` command-line client, as an operator would; the
same client session reads the server clock right after its commit. From that commit time:
- detected (first alarm only): `reactor watch`, running alongside with its own server_id,
  prints the alarm as a JSON line; its detected_at;
- restart: when the reactor sent RestartUnit (its audit row, REACTOR_AUDIT.at);
- cleared: when a client polling the row every 0.5 ms first saw alarma=0 again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import client
from lab.mariadb import MariaDB
from lab.proc import ReactorProcess
from lab.sandbox import SystemdSandbox

DB = "v_process_monitor"
UNITS = ("nginx", "apache2", "postfix", "cron")


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def write_config(path: Path, db: MariaDB, sbx: SystemdSandbox, database: dict[str, Any],
                 settle: float) -> str:
    return client.write_config(path, {
        "database": {**database, "server_id": 4242},
        "monitor": {"mode": "binlog", "check_interval": 300,
                    "state_file": path.parent / "state.json", "denied_units": "reactor.service"},
        "systemd": {"bus": sbx.address},
        "logging": {"log_file": path.parent / "reactor.log"},
        "metrics": {"listen": ""},  # the machine's port 9464 may be taken
        "process.default": {"settle_time": settle, "health_check_timeout": 5},
    })


def commit_with_client(db: MariaDB, pid: int) -> float:
    """Set the alarm with the stock client; the server's clock right after the commit."""
    done = db.client("-N", "-e", f"UPDATE {DB}.STATUS_PROCESS SET alarma = 1 "
                     f"WHERE process_id = {pid}; SELECT UNIX_TIMESTAMP(NOW(6))")
    return float(done.stdout.split()[-1])


def issued_at(db: MariaDB, pid: int, after_id: int, timeout: float = 5.0) -> tuple[int, float]:
    """This cycle's restart_issued audit row (id above `after_id`): its id and time. The
    reactor writes audit rows in batches, a little after the alarm is already cleared."""
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute("SELECT id, UNIX_TIMESTAMP(at) FROM REACTOR_AUDIT WHERE id > %s "
                          "AND process_id = %s AND step = 'restart_issued' ORDER BY id "
                          "LIMIT 1", (after_id, pid), database=DB)
        if rows:
            return int(rows[0][0]), float(rows[0][1])
        if time.monotonic() > deadline:
            raise RuntimeError(f"no restart_issued audit row for process {pid} "
                               f"within {timeout:g} s")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alarms", type=int, default=20, help="alarms to time (default 20)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="health policy: seconds a unit must stay active (default 0)")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="reactor-demo-"))
    say(f"throwaway MariaDB in {base}/db (127.0.0.1 only, binlog ROW/FULL)")
    db = MariaDB(base / "db").start()
    say("sandboxed systemd (own cgroup, PID and mount namespaces) with units "
        + ", ".join(f"{u}.service" for u in UNITS))
    sbx = SystemdSandbox(base / "systemd").start()
    reactor: ReactorProcess | None = None
    watcher: ReactorProcess | None = None
    try:
        database = db.setup_reactor_schema(password="demo-pw")
        for unit in UNITS:
            # no start-rate limit: the demo restarts each unit every few hundred ms
            sbx.write_unit(f"{unit}.service", f"[Unit]\nDescription=demo {unit}\n"
                           "StartLimitIntervalSec=0\n[Service]\n"
                           "ExecStart=/bin/sleep infinity\n", reload=False)
        sbx.reload()
        for unit in UNITS:
            sbx.manager("StartUnit", "ss", f"{unit}.service", "replace")
        config = write_config(base / "config.ini", db, sbx, database, args.settle)
        say(f"reactor run --config {config}")
        reactor = ReactorProcess(["run", "--config", str(config)], echo_stderr=True)
        # alongside, for the first alarm: the operator's tool, with its own server_id
        watcher = ReactorProcess(["watch", "--config", str(config)])
        reactor.wait_stderr("ready: mode=")
        watcher.wait_stderr("watching for alarms")

        to_restart, to_clear = [], []
        last_audit = 0
        poller = db.connect(DB)
        cur = poller.cursor()
        for i in range(args.alarms):
            pid = 1 + i % len(UNITS)
            unit = f"{UNITS[pid - 1]}.service"
            before = sbx.unit_property(unit, "ExecMainStartTimestamp", "Service")
            committed = commit_with_client(db, pid)
            cleared = client.wait_cleared(cur, pid, timeout=10)
            if cleared is None:
                raise RuntimeError(f"alarm of process {pid} not cleared within 10 s")
            last_audit, restart = issued_at(db, pid, last_audit)
            to_restart.append((restart - committed) * 1000)
            to_clear.append((cleared - committed) * 1000)
            if i < len(UNITS):
                after = sbx.unit_property(unit, "ExecMainStartTimestamp", "Service")
                note = db.execute("SELECT notes FROM STATUS_PROCESS WHERE process_id = %s",
                                  (pid,), database=DB)[0][0]
                say(f"mariadb -e \"UPDATE STATUS_PROCESS SET alarma=1 WHERE process_id={pid}\"")
                if watcher is not None:
                    line = watcher.line().strip()
                    seen = json.loads(line)
                    print(f"    reactor watch: {line}", flush=True)
                    print(f"    reactor watch detected it "
                          f"{(seen['detected_at'] - committed) * 1000:6.2f} ms after the commit",
                          flush=True)
                    watcher.stop()
                    watcher = None
                print(f"    RestartUnit {unit} sent {to_restart[-1]:6.2f} ms after the commit",
                      flush=True)
                print(f"    alarma=0 seen by a client {to_clear[-1]:6.2f} ms after the commit;"
                      f" notes: {note!r}", flush=True)
                print(f"    {unit} ExecMainStartTimestamp {before} -> {after}", flush=True)
            time.sleep(0.05)
        poller.close()
        say(f"{args.alarms} alarms (settle_time={args.settle:g} s): commit -> RestartUnit "
            f"median {statistics.median(to_restart):.2f} ms, worst {max(to_restart):.2f} ms; "
            f"commit -> alarma=0 median {statistics.median(to_clear):.2f} ms, "
            f"worst {max(to_clear):.2f} ms")
        rows = db.execute("SELECT step, COUNT(*) FROM REACTOR_AUDIT GROUP BY step ORDER BY 2 DESC",
                          database=DB)
        say("REACTOR_AUDIT: " + ", ".join(f"{s} x{n}" for s, n in rows))
        say("the bash tool this replaces polled every 300 s: its median wait was 150 s")
        return 0
    finally:
        if watcher is not None:
            watcher.stop()
        if reactor is not None:
            reactor.stop()
        sbx.stop()
        db.cleanup()
        say("stopped the reactor, the sandboxed systemd and the throwaway MariaDB")


if __name__ == "__main__":
    raise SystemExit(main())
