"""Live demo: a throwaway MariaDB, `reactor watch`, alarms set with the stock mariadb client.

    scripts/demo.sh            (installs what it needs, then runs this)

Each alarm is set by running the `mariadb` command-line client, exactly as an operator
would; the same client session reads the server clock right after the commit, and the
latency shown is the reactor's detection time minus that commit time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from reactor.lab.mariadb import MariaDB
from reactor.lab.proc import ReactorProcess

DB = "v_process_monitor"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def write_config(path: Path, db: MariaDB, settings: dict[str, object]) -> Path:
    path.write_text(
        "[database]\nhost = 127.0.0.1\n"
        f"port = {db.port}\nuser = {settings['user']}\npassword = {settings['password']}\n"
        f"database = {DB}\nserver_id = 4242\nheartbeat = 1\n\n"
        "[monitor]\nmode = binlog\ncheck_interval = 300\n"
        f"state_file = {path.parent / 'state.json'}\n\n"
        "[logging]\nlog_file =\n"
    )
    path.chmod(0o600)
    return path


def set_alarm_with_client(db: MariaDB, pid: int) -> float:
    """UPDATE through the stock client; returns the server's clock right after the commit."""
    done = db.client("-N", "-e", f"UPDATE {DB}.STATUS_PROCESS SET alarma = 1 "
                     f"WHERE process_id = {pid}; SELECT UNIX_TIMESTAMP(NOW(6))")
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alarms", type=int, default=20, help="alarms to set (default 20)")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="reactor-demo-"))
    say(f"starting a throwaway MariaDB in {base} (127.0.0.1, binlog ROW/FULL)")
    db = MariaDB(base / "db").start()
    watcher: ReactorProcess | None = None
    try:
        settings = db.setup_reactor_schema()
        config = write_config(base / "config.ini", db, settings)
        say(f"port {db.port}; schema from sql/setup.sql, account from sql/grants.sql")
        say(f"reactor watch --config {config}")
        watcher = ReactorProcess(["watch", "--config", str(config)], echo_stderr=True)
        watcher.wait_stderr("watching for alarms")

        latencies = []
        for i in range(args.alarms):
            pid = 1 + i % 4
            committed = set_alarm_with_client(db, pid)
            alarm = json.loads(watcher.line())
            ms = (alarm["detected_at"] - committed) * 1000
            latencies.append(ms)
            if i < 4:
                say(f"mariadb -e \"UPDATE STATUS_PROCESS SET alarma=1 WHERE process_id={pid}\"")
                print(f"    reactor watch printed: {json.dumps(alarm)}")
                print(f"    commit -> detected: {ms:.2f} ms", flush=True)
            db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s", (pid,),
                       database=DB)
        latencies.sort()
        say(f"{len(latencies)} alarms set with the mariadb client, each seen once by the "
            f"binlog stream: median {statistics.median(latencies):.2f} ms, "
            f"worst {latencies[-1]:.2f} ms (the bash tool it replaces polled every 300 s)")
        return 0
    finally:
        if watcher is not None:
            watcher.stop()
        db.cleanup()
        say("stopped the reactor and removed the throwaway MariaDB")


if __name__ == "__main__":
    raise SystemExit(main())
