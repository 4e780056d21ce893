"""The metrics registry, and the observer that keeps its counters and histograms.

`Metrics` is one listener of the Observers fan-out (events.py): each Step and Notice
updates a counter or a histogram, in the event loop, in a few microseconds. It also keeps
what the status document shows of each process from the daemon's memory: its last step.
Gauges that describe the daemon's state now (breakers, cycles in flight, the binlog's lag)
are not kept here but read at scrape time by collector.py from a Snapshot.

The registry is private (not prometheus_client's global REGISTRY): nothing else in the
process adds to it, and tests can build as many as they like.

Latencies are from the alarm's detection (Step.latency_ms): reactor cannot time the commit
itself, since the binlog gives a commit's time in whole seconds only; how far behind the
stream reads is the gauge reactor_binlog_seconds_behind_source (see collector.py).

Error handling: on_step/on_notice never raise for a record they do not know (an unknown
step is ignored); the Observers fan-out logs and skips a listener that raises anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import metrics as _metrics

from reactor.events import Happening, Notice, Source, Step
from reactor.metrics.collector import AlertsCollector, LiveCollector, SinkCounters
from reactor.metrics.snapshot import SnapshotSource

# 0.25 ms to a minute: a binlog dispatch takes ~1 ms, a cycle with settle_time = 1 s a
# little over a second, a failing one with retries and timeouts up to a minute
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# how a cycle ends: the last step the pipeline reports for it
CYCLE_RESULTS = ("cleared", "not_cleared", "cycle_failed", "refused", "skipped")
# the steps timed from the alarm's detection, by the name of the histogram's step label
TIMED_STEPS = {"restart_issued": "restart_issued", "health_ok": "healthy",
               "cleared": "cleared"}
ISSUED_MEMORY = 10_000  # cycles remembered as having issued a restart (first one only)


@dataclass(frozen=True, slots=True)
class LastStep:
    """The last step of a process's cycles, as the status document shows it."""

    step: str
    at: float  # wall clock
    detail: str
    process_name: str | None
    unit: str | None


class Metrics:
    """The registry, its counters and histograms, and the observer that updates them."""

    def __init__(self) -> None:
        # *_created series double every counter in the text format and say little here
        _metrics.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.alarms = Counter(
            "reactor_alarms_detected", "Alarms that started a cycle, by the source that "
            "detected them (binlog, sweep, poll)", ["source"], registry=r)
        self.cycles = Counter(
            "reactor_cycles", "Cycles ended, by result: cleared, not_cleared (healthy, but "
            "the alarm was not cleared), cycle_failed, refused, skipped (breaker open)",
            ["result"], registry=r)
        self.restarts = Counter(
            "reactor_restart_actions", "Restart actions, by strategy (service, "
            "service+reset-failed, kill-fallback, process) and result (ok, failed)",
            ["strategy", "result"], registry=r)
        self.latency = Histogram(
            "reactor_alarm_latency_seconds", "Seconds from the alarm's detection to a step "
            "of its cycle: restart_issued (the first RestartUnit or signal sent), healthy "
            "(health verdict ok), cleared (alarma = 0 written)", ["step", "source"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.sweep_caught = Counter(
            "reactor_sweep_caught_alarms", "Alarms a sweep found that the binlog stream had "
            "not delivered (expected 0: a bug, or a server setting the stream cannot read)",
            registry=r)
        self.happenings = Counter(
            "reactor_happenings", "Degraded one-off events: sweep_caught, position_lost "
            "(binlog error 1236), event_unreadable, fleet_unrecorded", ["kind"], registry=r)
        for source in Source:
            self.alarms.labels(source.value)
        for result in CYCLE_RESULTS:
            self.cycles.labels(result)
        for kind in Happening:
            self.happenings.labels(kind.value)
        self.caught = 0  # alarms the sweep caught, for the status document
        self.last: dict[int, LastStep] = {}  # process id -> its last step
        self._issued: set[int] = set()  # cycles whose first restart_issued was timed

    def watch(self, source: SnapshotSource) -> None:
        """Export the daemon's live state (read at each scrape) and the process's own
        (CPU, memory, open files: process_*)."""
        self.registry.register(LiveCollector(source))
        ProcessCollector(registry=self.registry)

    def watch_alerts(self, dispatcher: SinkCounters) -> None:
        """Export an alert dispatcher's per-sink counters (reactor_alerts_*_total): the
        daemon calls this with reactor/alerts' dispatcher when alerts are configured."""
        self.registry.register(AlertsCollector(dispatcher))

    # ------------------------------------------------------------------ Observer

    def on_step(self, step: Step) -> None:
        name = step.step
        self.last[step.process_id] = LastStep(name, step.at, step.detail, step.process_name,
                                              step.unit)
        if name == "detected":
            self.alarms.labels(step.source).inc()
        elif name in ("restarted", "restart_failed"):
            self.restarts.labels(step.method or "unknown",
                                 "ok" if name == "restarted" else "failed").inc()
        if name in TIMED_STEPS and step.latency_ms is not None:
            if name == "restart_issued":
                # a later attempt's restart is not the alarm's dispatch
                if step.cycle in self._issued:
                    return
                if len(self._issued) >= ISSUED_MEMORY:
                    self._issued.clear()
                self._issued.add(step.cycle)
            self.latency.labels(TIMED_STEPS[name], step.source).observe(
                max(0.0, step.latency_ms / 1000))
        if name in CYCLE_RESULTS:
            self.cycles.labels(name).inc()
            self._issued.discard(step.cycle)

    def on_notice(self, notice: Notice) -> None:
        if not isinstance(notice.kind, Happening):
            return  # conditions are read at scrape time from Observers.active
        self.happenings.labels(notice.kind.value).inc()
        if notice.kind is Happening.SWEEP_CAUGHT:
            caught = len(notice.process_ids) or 1
            self.caught += caught
            self.sweep_caught.inc(caught)
