"""What the daemon shows of itself at a given moment: a read-only snapshot.

The daemon builds one (`Daemon.snapshot()`) whenever a scrape, a /status.json or /healthz
request, or a textfile write asks for it; metrics, the status document and the health
verdict are computed from it and from nothing else, so they never reach into the daemon's
private objects and cannot change them.

Health: healthy when started (the first sweep is done), the source is connected (binlog
mode) or polling as configured (mode = poll), the database answers and the bus is up. Each
degraded condition (events.Condition) in force is a reason to be unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from reactor.actions.breaker import Breaker


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """Where alarms come from, and how far behind the stream reads."""

    mode: str  # binlog | poll | "" (not chosen yet)
    connected: bool | None  # the binlog stream is connected; None when not in binlog mode
    position: str | None  # the last transaction boundary read (file:pos)
    seconds_behind_source: float | None  # whole seconds; None until a change or heartbeat
    seconds_since_last_event: float | None  # heartbeats count; None before the first event
    reconnects: int  # binlog sessions that ended in an error and were opened again
    transactions: int  # transactions read from the binlog
    sweeps: int  # sweeps (binlog mode) and polls (poll mode) done
    sweep_seconds: float  # the time they took, in all
    last_sweep_at: float | None  # wall clock of the last one's end


@dataclass(frozen=True, slots=True)
class CycleSnapshot:
    """One process's cycle in flight."""

    process_id: int
    process_name: str | None
    source: str
    detected_at: float  # wall clock
    restart_issued: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str
    pid: int
    configured_mode: str  # [monitor] mode
    started_at: float  # wall clock of the daemon's start
    ready: bool  # the first sweep after the source connected is done
    source: SourceSnapshot
    bus_connected: bool
    conditions: dict[str, str]  # the degraded conditions in force -> their detail
    in_flight: tuple[CycleSnapshot, ...]
    breakers: dict[str, Breaker]  # process name -> its breaker (processes that had cycles)
    names: dict[int, str]  # process id -> name, as the daemon knows them (PROCESE)
    counters: dict[str, int] = field(default_factory=dict)  # pipeline counters, alarms
    dbus_calls: dict[str, int] = field(default_factory=dict)  # D-Bus calls sent, per member
    database_calls: dict[str, int] = field(default_factory=dict)  # pool calls, per query

    def problems(self) -> list[str]:
        """Why reactor is not healthy now; empty when it is."""
        out = []
        if not self.ready:
            out.append("starting: the source has not connected and swept yet")
        for condition, detail in sorted(self.conditions.items()):
            out.append(f"{condition}: {detail}")
        if self.source.mode == "binlog" and self.source.connected is False \
                and "stream_down" not in self.conditions and self.ready:
            out.append("stream_down: the binlog stream is not connected")
        if not self.bus_connected and "bus_down" not in self.conditions:
            out.append("bus_down: not connected to D-Bus")
        return out


class SnapshotSource(Protocol):
    """What the metrics, status and health endpoints read: the daemon implements it."""

    def snapshot(self) -> Snapshot: ...
