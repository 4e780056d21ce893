"""Gauges read at scrape time: the daemon's state now, from a Snapshot.

    LiveCollector(source)     build info, readiness, degraded conditions, cycles in flight,
                              breakers, the binlog stream (connected, lag, last event,
                              reconnects), sweeps, pipeline counters
    AlertsCollector(source)   alerts sent / failed per sink, from any object that
                              implements AlertCounts (the extension point for reactor/alerts)

Each scrape asks for one snapshot, which copies a few dicts: cheap enough to run in the
event loop (see benchmarks/scrape.py).

Error handling: a collector that raises makes that scrape fail with HTTP 500 (server.py)
and is logged there; the next scrape tries again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from reactor.actions.breaker import State
from reactor.events import Condition
from reactor.metrics.snapshot import Snapshot, SnapshotSource

BREAKER_STATES = tuple(s.value for s in State)


class LiveCollector(Collector):
    def __init__(self, source: SnapshotSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot()
        yield from _daemon(snap)
        yield from _pipeline(snap)
        yield from _calls(snap)
        yield from _stream(snap)


def _gauge(name: str, doc: str, value: float | None = None,
           labels: Iterable[str] = ()) -> GaugeMetricFamily:
    if value is None:
        return GaugeMetricFamily(name, doc, labels=list(labels))
    return GaugeMetricFamily(name, doc, value=value)


def _daemon(snap: Snapshot) -> Iterator[Metric]:
    info = InfoMetricFamily("reactor_build", "reactor's version and the mode it runs in "
                            "(binlog or poll; empty before the server was checked)",
                            labels=["version", "mode", "configured_mode"])
    info.add_metric([snap.version, snap.source.mode, snap.configured_mode], {})
    yield info
    yield _gauge("reactor_start_time_seconds", "Unix time the daemon started",
                 snap.started_at)
    yield _gauge("reactor_ready", "1 once the source has connected and swept once",
                 1.0 if snap.ready else 0.0)
    yield _gauge("reactor_healthy", "1 when /healthz answers 200: started, source "
                 "connected (or polling as configured), database and bus up",
                 0.0 if snap.problems() else 1.0)
    degraded = _gauge("reactor_degraded", "1 while a degraded condition is in force: "
                      "stream_down, polling (binlog wanted but not usable), database_down, "
                      "bus_down", labels=["condition"])
    for condition in Condition:
        degraded.add_metric([condition.value], 1.0 if condition.value in snap.conditions
                            else 0.0)
    yield degraded
    yield _gauge("reactor_bus_connected", "1 while the D-Bus connection to systemd is up",
                 1.0 if snap.bus_connected else 0.0)


def _pipeline(snap: Snapshot) -> Iterator[Metric]:
    yield _gauge("reactor_cycles_in_flight", "Processes with a cycle in flight",
                 float(len(snap.in_flight)))
    yield _gauge("reactor_oldest_cycle_seconds", "Seconds since the detection of the "
                 "alarm of the oldest cycle in flight (0 when none)",
                 max((time.time() - c.detected_at for c in snap.in_flight), default=0.0))
    coalesced = CounterMetricFamily(
        "reactor_alarms_coalesced", "Alarms that joined a cycle already in flight for the "
        "same process (no cycle of their own)", value=snap.counters.get("coalesced", 0))
    yield coalesced
    state = _gauge("reactor_breaker_state", "1 for the state each process's circuit "
                   "breaker is in (closed, open, half_open), 0 for the others; processes "
                   "that had a cycle since the breaker was last reset", labels=["process",
                                                                               "state"])
    failures = _gauge("reactor_breaker_failures", "Failed cycles in a row, per process",
                      labels=["process"])
    for name, breaker in sorted(snap.breakers.items()):
        for value in BREAKER_STATES:
            state.add_metric([name, value], 1.0 if breaker.state.value == value else 0.0)
        failures.add_metric([name], float(breaker.failures))
    yield state
    yield failures
    yield _gauge("reactor_breakers_open", "Processes whose breaker is open now",
                 float(sum(1 for b in snap.breakers.values() if b.state is State.OPEN)))


def _calls(snap: Snapshot) -> Iterator[Metric]:
    dbus = CounterMetricFamily("reactor_dbus_calls", "D-Bus calls sent to systemd, per "
                               "method (RestartUnit, Get ...)", labels=["member"])
    for member, n in sorted(snap.dbus_calls.items()):
        dbus.add_metric([member], n)
    yield dbus
    db = CounterMetricFamily("reactor_database_calls", "Calls to the database pool, per "
                             "query (a call may hold several statements: write_batch "
                             "writes the outcomes of many cycles)", labels=["query"])
    for query, n in sorted(snap.database_calls.items()):
        db.add_metric([query], n)
    yield db


def _stream(snap: Snapshot) -> Iterator[Metric]:
    src = snap.source
    sweeps = SummaryMetricFamily(
        "reactor_sweep_duration_seconds", "Seconds each sweep (binlog mode) or poll (poll "
        "mode) took: its query and handing its rows over", count_value=src.sweeps,
        sum_value=src.sweep_seconds)
    yield sweeps
    if src.last_sweep_at is not None:
        yield _gauge("reactor_sweep_last_timestamp_seconds", "Unix time the last sweep or "
                     "poll ended", src.last_sweep_at)
    if src.mode != "binlog":
        return  # no stream: its series are absent rather than a misleading 0
    yield _gauge("reactor_binlog_connected", "1 while the binlog stream is connected",
                 1.0 if src.connected else 0.0)
    if src.seconds_behind_source is not None:
        yield _gauge("reactor_binlog_seconds_behind_source", "Seconds between the last "
                     "change's binlog timestamp and its reading (whole seconds; 0 at a "
                     "heartbeat, which the server sends only when it has nothing left to "
                     "send), like Debezium's MilliSecondsBehindSource",
                     src.seconds_behind_source)
    if src.seconds_since_last_event is not None:
        yield _gauge("reactor_binlog_seconds_since_last_event", "Seconds since the stream "
                     "last read anything (heartbeats count: above 2.5 heartbeats the "
                     "stream is declared dead)", src.seconds_since_last_event)
    yield CounterMetricFamily("reactor_binlog_reconnects", "Binlog sessions that ended in "
                              "an error and were opened again", value=src.reconnects)
    yield CounterMetricFamily("reactor_binlog_transactions", "Transactions read from the "
                              "binlog (of any table)", value=src.transactions)


# ---------------------------------------------------------------- alerts extension point


class SinkCounters(Protocol):
    """What an alert dispatcher implements to have its counters exported: per sink name
    (alertmanager, webhook, smtp ...) a mapping with `sent` (messages delivered),
    `alerts` (alerts in them), `failed` (delivery attempts that failed), `dropped`
    (messages given up: too old, no room, rejected) and `queued` (messages waiting, in
    memory and on disk). Called at each scrape in the event loop: return at once."""

    def sink_counters(self) -> Mapping[str, Mapping[str, int]]: ...


class AlertsCollector(Collector):
    """reactor_alerts_{sent,failed,dropped}_total{sink}, reactor_alerts_delivered_total{sink}
    and reactor_alerts_queued{sink}, read from a SinkCounters at each scrape.
    `Metrics.watch_alerts(dispatcher)` registers one."""

    def __init__(self, source: SinkCounters) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        families = {
            "sent": CounterMetricFamily("reactor_alerts_sent", "Alert messages delivered, "
                                        "per sink (one message may group many alerts)",
                                        labels=["sink"]),
            "alerts": CounterMetricFamily("reactor_alerts_delivered", "Alerts delivered in "
                                          "those messages, per sink", labels=["sink"]),
            "failed": CounterMetricFamily("reactor_alerts_failed", "Delivery attempts that "
                                          "failed (each retry counts), per sink",
                                          labels=["sink"]),
            "dropped": CounterMetricFamily("reactor_alerts_dropped", "Alert messages given "
                                           "up (older than max_age, beyond max_queued, or "
                                           "rejected), per sink", labels=["sink"]),
        }
        queued = GaugeMetricFamily("reactor_alerts_queued", "Alert messages waiting for "
                                   "delivery (in memory and on disk), per sink",
                                   labels=["sink"])
        for sink, counts in sorted(self.source.sink_counters().items()):
            for key, family in families.items():
                family.add_metric([sink], counts.get(key, 0))
            queued.add_metric([sink], counts.get("queued", 0))
        yield from families.values()
        yield queued
