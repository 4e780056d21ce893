"""Records passed between the stages of the event path.

    source (binlog | poll | sweep) --RowChange / rows--> intake --Alarm--> pipeline
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class Source(StrEnum):
    BINLOG = "binlog"  # a 0->1 row change read from the binlog stream
    SWEEP = "sweep"  # a row found in alarm by the reconciliation sweep (binlog mode)
    POLL = "poll"  # a row found in alarm by the poller (poll mode)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row of STATUS_PROCESS or PROCESE as changed by a committed transaction."""

    table: str
    before: dict[str, object] | None  # None for an INSERT
    after: dict[str, object] | None  # None for a DELETE


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
