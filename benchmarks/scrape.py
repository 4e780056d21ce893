"""What a Prometheus scrape costs the binlog path: dispatch with /metrics scraped every
100 ms against the same workload without scraping, in one run, on one reactor.

One `reactor run` (binlog mode, `[metrics] listen` on a free loopback port) gets the alarm
workload twice, interleaved in blocks: block 1 without scraping, block 2 with a client
GETting /metrics every SCRAPE_INTERVAL s over one kept-alive connection (as Prometheus
does), block 3 without, and so on, so that drift over the run (caches warming, the
machine's other load) falls on both conditions alike. The pauses before the alarms are
uniform in [0, SCRAPE_MAX_PAUSE), a multiple of the scrape interval: an alarm lands at a
uniformly random phase of the scrape cycle, so some arrive while a scrape is rendered.

Per condition: dispatch_ms (commit -> RestartUnit issued, as in the modes) p50/p90/p99,
the reactor's CPU (% of one core over the condition's blocks); for the scrapes: how many,
their round trip (client side: request -> whole body read) and the body's size. The target
printed with the other targets: the scraped p50 within 10 % of the unscraped p50.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.idle import cpu_seconds
from benchmarks.report import summarize
from benchmarks.rigs import Lab
from benchmarks.workload import PlannedAlarm, Sample, attach_audit, plan, record, run_alarms
from lab.mariadb import free_port

SCRAPE_INTERVAL = 0.1  # seconds between scrapes, as the issue asks
SCRAPE_MAX_PAUSE = 0.3  # pauses before each alarm: uniform in [0, this), 3 scrape periods
BLOCKS = 10  # the workload is cut in this many blocks per condition, alternating
CONDITIONS = ("without", "with")

Tick = Callable[[int], None]


class Scraper:
    """A thread that GETs /metrics every `interval` s while `active` is set."""

    def __init__(self, port: int, interval: float = SCRAPE_INTERVAL) -> None:
        self.port = port
        self.interval = interval
        self.active = threading.Event()
        self.round_trips_ms: list[float] = []
        self.sizes: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.active.set()  # wake it
        self._thread.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self._stop.is_set():
                self.active.wait()
                next_at = time.monotonic()
                while self.active.is_set() and not self._stop.is_set():
                    self._scrape(conn)
                    next_at += self.interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            conn.close()

    def _scrape(self, conn: http.client.HTTPConnection) -> None:
        start = time.perf_counter()
        try:
            conn.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
            reply = conn.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(repr(exc))
            conn.close()  # the next request reconnects
            return
        if reply.status != 200:
            self.errors.append(f"HTTP {reply.status}")
            return
        self.round_trips_ms.append((time.perf_counter() - start) * 1000)
        self.sizes.append(len(body))


def blocks(workload: list[PlannedAlarm], count: int) -> list[list[PlannedAlarm]]:
    """`count` blocks of the workload for each condition: 2 * count in all, in order."""
    pieces = max(2, min(2 * count, len(workload)))
    size = len(workload) / pieces
    return [workload[round(i * size):round((i + 1) * size)] for i in range(pieces)]


Records = dict[str, list[dict[str, Any]]]


def run_scrape(lab: Lab, pids: list[int], alarms: int, seed: int, settle: float,
               server_id: int, tick: Tick) -> tuple[dict[str, Any], Records]:
    """The phase; returns results["scrape"] and every alarm's record per condition."""
    workload = plan(alarms, pids, SCRAPE_MAX_PAUSE, seed)
    port = free_port()
    config = lab.write_config("scrape", mode="binlog", check_interval=3600,
                              server_id=server_id, settle=settle, listen=f"127.0.0.1:{port}")
    reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=binlog\b")
    scraper = Scraper(port).start()
    samples: dict[str, list[Sample]] = {c: [] for c in CONDITIONS}
    cpu = dict.fromkeys(CONDITIONS, 0.0)
    wall = dict.fromkeys(CONDITIONS, 0.0)
    done = 0
    try:
        mark = lab.audit_mark()
        for i, block in enumerate(blocks(workload + workload, BLOCKS)):
            condition = CONDITIONS[i % 2]
            if condition == "with":
                scraper.active.set()
            c0, t0 = cpu_seconds(reactor.proc.pid), time.monotonic()
            def progress(n: int, base: int = done) -> None:
                tick(base + n)

            got = run_alarms(lab, block, 10.0, progress)
            cpu[condition] += cpu_seconds(reactor.proc.pid) - c0
            wall[condition] += time.monotonic() - t0
            scraper.active.clear()
            samples[condition].extend(got)
            done += len(block)
        every = samples["without"] + samples["with"]
        extra = attach_audit(lab, every, mark)
    finally:
        scraper.stop()
        lab.stop_reactor(reactor)
    records = {c: [record(s) for s in samples[c]] for c in CONDITIONS}
    out: dict[str, Any] = {
        "interval_s": SCRAPE_INTERVAL, "max_pause_s": SCRAPE_MAX_PAUSE,
        "alarms_per_condition": {c: len(samples[c]) for c in CONDITIONS},
        "scrapes": len(scraper.round_trips_ms), "scrape_errors": scraper.errors[:10],
        "scrape_round_trip_ms": summarize(scraper.round_trips_ms),
        "scrape_bytes": max(scraper.sizes, default=0),
        "reactor_cpu_percent": {c: round(cpu[c] / wall[c] * 100, 2) if wall[c] else None
                                for c in CONDITIONS},
        "unmatched_cycles": extra,
        "not_cleared": sum(1 for s in every if s.cleared is None),
    }
    return out, records


