"""What a reactor costs while nothing happens: CPU, database queries, memory.

Over a window of `seconds`, with no alarm and no other client busy:
- cpu_percent: the reactor process's utime+stime delta (/proc/PID/stat, all threads) over
  the window, in % of one core; db_cpu_percent likewise for mariadbd;
- queries_per_s: the server's global `Questions` delta over the window, minus the
  statements this measurement itself sent (calibrated with two back-to-back reads);
- rss_kb: the reactor's VmRSS at the end of the window (/proc/PID/status).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql

Tick = Callable[[int], None]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is state
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def questions(conn: pymysql.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
        return int(cur.fetchone()[1])


def measure(conn: pymysql.Connection, reactor_pid: int, db_pid: int, seconds: float,
            tick: Tick) -> dict[str, Any]:
    """`conn` must be a connection of its own, used by nothing else during the window."""
    own = -questions(conn) + questions(conn)  # statements counted per read of the counter
    q0 = questions(conn)
    c0, d0, t0 = cpu_seconds(reactor_pid), cpu_seconds(db_pid), time.monotonic()
    end = t0 + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        tick(int(time.monotonic() - t0))
    c1, d1, t1 = cpu_seconds(reactor_pid), cpu_seconds(db_pid), time.monotonic()
    q1 = questions(conn)
    window = t1 - t0
    reactor_queries = q1 - q0 - own
    return {
        "seconds": round(window, 3),
        "cpu_percent": round((c1 - c0) / window * 100, 3),
        "queries": reactor_queries,
        "queries_per_s": round(reactor_queries / window, 3),
        "rss_kb": memory_kb(reactor_pid),
        "db_cpu_percent": round((d1 - d0) / window * 100, 3),
    }
