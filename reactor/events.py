"""Records passed between the stages of the event path, and what the stages report.

    source (binlog | poll | sweep) --RowChange / rows--> intake --Alarm--> pipeline

Every stage reports what it does to one `Observers` fan-out, which never blocks it:
- a `Step` of an alarm's cycle (detected, restart_issued, cleared, cycle_failed ...): the
  audit writer stores it in REACTOR_AUDIT, metrics count and time it, alerts turn the bad
  ones (and their recovery) into messages;
- a `Notice` about reactor itself: a degraded condition that begins and later ends (the
  binlog stream down, polling instead of streaming, the database or the bus unreachable)
  or a one-off happening (the sweep caught alarms the stream had not delivered, a purged
  binlog position, an event the stream could not read).
Listeners are called in the event loop, synchronously: each one only queues or counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from loguru import logger


class Source(StrEnum):
    BINLOG = "binlog"  # a 0->1 row change read from the binlog stream
    SWEEP = "sweep"  # a row found in alarm by the reconciliation sweep (binlog mode)
    POLL = "poll"  # a row found in alarm by the poller (poll mode)


@dataclass(frozen=True, slots=True)
class AlarmaChange:
    """A row of STATUS_PROCESS whose alarma changed in a committed transaction, reduced by
    the binlog reader to what detection reads (a 100,000-row UPDATE keeps 100,000 of these,
    not 100,000 row images, until its commit)."""

    pid: int
    before: int | None  # alarma before; None: no row before (an INSERT)
    after: int | None  # alarma after; None: no row after (a DELETE)


@dataclass(frozen=True, slots=True)
class NameChange:
    """A row of PROCESE inserted, changed or deleted in a committed transaction."""

    pid: int
    name: str | None  # process_name after; None: the row was deleted
    host: str | None = None  # PROCESE.host after (sql/fleet.sql); None: NULL, or no column


RowChange = AlarmaChange | NameChange


@dataclass(frozen=True, slots=True)
class Alarm:
    """A process whose alarma became 1."""

    process_id: int
    process_name: str | None  # None until resolved (not in the name cache yet)
    source: Source
    detected_at: float = field(default_factory=time.time)  # wall clock, seconds
    detected_mono: float = field(default_factory=time.monotonic)
    position: str | None = None  # binlog file:pos of the transaction's end, binlog only

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "process_id": self.process_id,
            "process_name": self.process_name,
            "source": self.source.value,
            "detected_at": round(self.detected_at, 6),
            "detected_iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.detected_at))
            + f".{int(self.detected_at * 1e6) % 1_000_000:06d}",
        }
        if self.position:
            out["binlog_position"] = self.position
        return out


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an alarm's cycle: a REACTOR_AUDIT row, and what metrics and alerts see."""

    at: float  # wall clock of the step
    cycle: int
    process_id: int
    process_name: str | None
    unit: str | None
    step: str  # detected, restart_issued, restarted, health_ok, cleared, cycle_failed ...
    source: str  # the alarm's Source value
    latency_ms: float | None  # since the alarm was detected
    detail: str = ""
    method: str = ""  # restarted / restart_failed: the strategy (service, process ...)


class Condition(StrEnum):
    """A degraded state of reactor itself: it begins, lasts, and ends."""

    STREAM_DOWN = "stream_down"  # the binlog stream is not connected (reconnecting)
    POLLING = "polling"  # binlog wanted or possible, but alarms come only from polling
    DATABASE_DOWN = "database_down"  # queries and writes fail: the database is unreachable
    BUS_DOWN = "bus_down"  # the D-Bus connection to systemd is lost


class Happening(StrEnum):
    """A one-off degraded event."""

    SWEEP_CAUGHT = "sweep_caught"  # the sweep found alarms the stream had not delivered
    POSITION_LOST = "position_lost"  # the binlog position is purged or impossible (1236)
    EVENT_UNREADABLE = "event_unreadable"  # the stream met an event it cannot decode
    FLEET_UNRECORDED = "fleet_unrecorded"  # this reactor's REACTOR_FLEET row cannot be written


@dataclass(frozen=True, slots=True)
class Notice:
    """A condition that began (active) or ended (not active), or a happening (active)."""

    kind: Condition | Happening
    detail: str
    active: bool = True
    at: float = field(default_factory=time.time)
    process_ids: tuple[int, ...] = ()  # SWEEP_CAUGHT: the processes concerned


class Observer(Protocol):
    """What a listener of the Observers fan-out implements. Both calls must return at once
    (queue the work), and never raise for a bad record."""

    def on_step(self, step: Step) -> None: ...

    def on_notice(self, notice: Notice) -> None: ...


class Observers:
    """The fan-out every stage reports to. A listener that raises is logged and skipped:
    reporting never breaks the event path. Conditions are reported on their edges only
    (begin once, end once), however often a stage calls begin() or end()."""

    def __init__(self, listeners: Iterable[Observer] = ()) -> None:
        self._listeners: list[Observer] = list(listeners)
        self.active: dict[Condition, Notice] = {}  # the conditions in force now

    def add(self, listener: Observer) -> None:
        self._listeners.append(listener)

    def step(self, step: Step) -> None:
        for listener in self._listeners:
            try:
                listener.on_step(step)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the cycle
                logger.exception("observer {} failed on step {}", type(listener).__name__,
                                 step.step)

    def notice(self, notice: Notice) -> None:
        for listener in self._listeners:
            try:
                listener.on_notice(notice)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the source
                logger.exception("observer {} failed on notice {}",
                                 type(listener).__name__, notice.kind)

    def begin(self, kind: Condition, detail: str) -> bool:
        """The condition holds (again): reported when it was not in force. True if new."""
        if kind in self.active:
            return False
        self.active[kind] = notice = Notice(kind, detail)
        self.notice(notice)
        return True

    def end(self, kind: Condition, detail: str = "") -> bool:
        """The condition is over: reported when it was in force. True if it was."""
        began = self.active.pop(kind, None)
        if began is None:
            return False
        self.notice(Notice(kind, detail or f"{kind.value} over", active=False))
        return True

    def happened(self, kind: Happening, detail: str, process_ids: Iterable[int] = ()) -> None:
        self.notice(Notice(kind, detail, process_ids=tuple(process_ids)))
