"""What an alert is, and what a message to one sink carries (pure: no I/O).

An `Alert` is one event about one process (or about reactor itself) at one severity: the
host, the process id, name and unit, what happened, the note and when. Its `key` (event and
process) is what the cooldown and the resolve match on. A `Message` is what goes to one
sink at once: every alert collected within `[alerts] group_wait`, firing or resolved; it is
also the unit the spool keeps on disk (`as_json` / `from_json`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    """The seed's levels; a larger value is more severe (min_severity compares them)."""

    INFO = 1  # a process restarted after an alarm (off unless a sink asks for it)
    WARNING = 2  # an alarm refused, a gap in the stream, a purged binlog position
    MAJOR = 3  # a cycle failed: the process is still down, a later sweep retries
    CRITICAL = 4  # an open breaker, polling instead of streaming, the database or bus away

    @classmethod
    def parse(cls, name: str) -> Severity:
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Alert:
    """One event, firing or (resolved=True) over. `resolved_at` and `resolution` say when
    and how it ended; everything else stays as it fired, so that a sink that deduplicates
    on labels (Alertmanager) matches the resolve to the alert."""

    event: str  # breaker_open, cycle_failed, refused, restarted, polling, database_down ...
    severity: Severity
    host: str
    summary: str  # what happened, one line: "breaker opened for nginx: ..."
    at: float  # when it happened (wall clock)
    note: str = ""  # the detail: the step's detail, the notice's text
    process_id: int | None = None
    process_name: str | None = None
    unit: str | None = None
    stateful: bool = False  # a recovery will resolve it (breaker closed, stream back ...)
    resolved: bool = False
    resolved_at: float | None = None
    resolution: str = ""  # how it ended: "breaker closed: trial cycle succeeded"

    @property
    def key(self) -> str:
        """What the cooldown and the resolve match on: the event and the process."""
        return alert_key(self.event, self.process_id)

    @property
    def process(self) -> str:
        """The process as people call it: its name, else its id, else empty."""
        if self.process_name:
            return self.process_name
        return "" if self.process_id is None else f"process {self.process_id}"

    def resolve(self, at: float, resolution: str) -> Alert:
        return replace(self, resolved=True, resolved_at=at, resolution=resolution)

    def as_json(self) -> dict[str, Any]:
        """The fields that differ from their defaults (a storm's firing alerts stay small
        in the state file); `from_json` restores the rest."""
        out = {k: v for k, v in asdict(self).items()
               if k in REQUIRED or v != self.__dataclass_fields__[k].default}
        out["severity"] = self.severity.label
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        """Raises ValueError/KeyError/TypeError for a record that is not an alert."""
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        values["severity"] = Severity.parse(str(data["severity"]))
        alert = cls(**values)
        if not isinstance(alert.event, str) or not isinstance(alert.at, int | float):
            raise ValueError("not an alert record")
        return alert


REQUIRED = ("event", "severity", "host", "summary", "at")


def alert_key(event: str, process_id: int | None) -> str:
    return event if process_id is None else f"{event}:{process_id}"


@dataclass(frozen=True, slots=True)
class Message:
    """The alerts one sink gets at once. `refresh`: a re-send of alerts still firing
    (Alertmanager expects it), neither spooled nor news."""

    alerts: tuple[Alert, ...]
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    refresh: bool = False

    @property
    def severity(self) -> Severity:
        """The most severe of its alerts."""
        return max(a.severity for a in self.alerts)

    @property
    def resolved(self) -> bool:
        """Every alert in it is over."""
        return all(a.resolved for a in self.alerts)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created,
                "alerts": [a.as_json() for a in self.alerts]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        alerts = tuple(Alert.from_json(a) for a in data["alerts"])
        if not alerts:
            raise ValueError("a message without alerts")
        return cls(alerts, created=float(data["created"]), id=str(data["id"]))


def iso(t: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2026-11-30T03:42:54.576Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def local(t: float) -> str:
    """Local time for people: 2026-11-30 04:42:54 +0100."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))
