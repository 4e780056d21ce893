"""Pure detection: which row changes and sweep rows are alarms, each delivered once.

An alarm is a row of STATUS_PROCESS whose after-image has alarma=1 and whose before-image
did not (or an INSERT with alarma=1). The stream, the poller and the sweep all feed one
AlarmTracker so that the same alarm reaches the consumer once, whichever saw it first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

Position = tuple[str, int]  # a binlog position, as Checkpoint.key() orders it


def alarma_of(image: dict[str, object] | None) -> int | None:
    """alarma in a row image; None when there is no image (or no such column)."""
    if image is None:
        return None
    value = image.get("alarma")
    return int(value) if isinstance(value, int) else None


def is_alarm(before: int | None, after: int | None) -> bool:
    """A 0->1 transition of alarma, or a new row with alarma=1 (alarma before and after;
    None: no row)."""
    return after == 1 and before != 1


def is_clear(before: int | None, after: int | None) -> bool:
    """alarma left 1 (cleared, or the row was deleted)."""
    return before == 1 and after != 1


class AlarmTracker:
    """Remembers which alarms are in the consumer's hands, so that none is delivered twice.

    - A 0->1 from the stream is delivered unless that process is already delivered
      (the sweep saw the same row first).
    - A sweep delivers rows in alarm that are not in hand, or that the consumer settled
      (finished with, and the row is still in alarm: it is retried, as the bash tool did),
      unless `hold` says to leave a settled one alone (a refusal nothing has changed).
      `again` holds the retried ones of the last sweep (the others are new to it).
    - A process whose state changed after the sweep's query started is left to the
      stream: the query may have read the row before that change.
    - A sweep reads rows the stream may not have reached yet (`seen_at`: the server's
      binlog position read after the rows). A 0->1 the stream shows later at or before
      that position is one the sweep already delivered, not a new alarm, even once the
      consumer settled it or a sweep forgot it (reset meanwhile); one after it is new.
      A reset at or before that position is older than the row the sweep read: it does
      not free the alarm (the next sweep would deliver it again). A 0->1 committed in
      the instant between the sweep's rows and its position read is taken for the one it
      saw: it stays set, so the next sweep hands it over.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._delivered: set[int] = set()
        self._settled: set[int] = set()
        self._changed_at: dict[int, float] = {}
        # pid -> the server position of the last sweep that delivered it: the stream's
        # 0->1s up to there were delivered by that sweep
        self._swept_at: dict[int, Position] = {}
        self.again: set[int] = set()  # of the last sweep's deliveries: retries

    def _touch(self, pid: int) -> None:
        self._changed_at[pid] = self._clock()

    def now(self) -> float:
        return self._clock()

    def is_active(self, pid: int) -> bool:
        return pid in self._delivered

    def stream_change(self, pid: int, before: int | None, after: int | None,
                      at: Position | None = None) -> bool:
        """Feed one STATUS_PROCESS row change, alarma before and after (of the transaction
        ending at `at`); True when it is an alarm to deliver."""
        if not is_alarm(before, after) and not is_clear(before, after):
            return False
        swept_at = self._swept_at.get(pid)
        if swept_at is not None and at is not None:
            if at <= swept_at:
                return False  # a sweep read this row after this change: old news
            del self._swept_at[pid]
        if is_alarm(before, after):
            self._touch(pid)
            if pid in self._delivered and pid not in self._settled:
                return False
            self._delivered.add(pid)
            self._settled.discard(pid)
            return True
        if is_clear(before, after):
            self._touch(pid)
            self._delivered.discard(pid)
            self._settled.discard(pid)
        return False

    def sweep(self, in_alarm: Iterable[int], started: float,
              hold: Callable[[int], bool] = lambda pid: False,
              seen_at: Position | None = None) -> list[int]:
        """Feed the ids a sweep found in alarm (query began at `started`; the server's binlog
        position read after its rows: `seen_at`); returns those to deliver, and forgets
        alarms that are no longer in alarm."""
        found = set(in_alarm)
        deliver: list[int] = []
        self.again = set()
        for pid in sorted(found):
            if self._changed_at.get(pid, -math.inf) >= started:
                continue
            if pid in self._delivered:
                if pid not in self._settled or hold(pid):
                    continue
                self.again.add(pid)
            self._delivered.add(pid)
            self._settled.discard(pid)
            self._touch(pid)
            if seen_at is not None:
                self._swept_at[pid] = seen_at
            deliver.append(pid)
        for pid in list(self._delivered - found):
            if self._changed_at.get(pid, -math.inf) < started:
                self._delivered.discard(pid)
                self._settled.discard(pid)
        return deliver

    def stream_restarted(self) -> None:
        """The stream starts over at the server's current position (its own was lost, or
        belongs to another history): positions read before do not compare with its own."""
        self._swept_at.clear()

    def forget(self, pid: int) -> None:
        """The alarm could not be handed over after all: a later sweep delivers it."""
        self._delivered.discard(pid)
        self._settled.discard(pid)

    def redeliver(self, pid: int) -> bool:
        """Take a settled alarm back into the consumer's hands (its PROCESE row changed):
        True when it was settled, and is now delivered again."""
        if pid not in self._delivered or pid not in self._settled:
            return False
        self._settled.discard(pid)
        self._touch(pid)
        return True

    def take(self, pid: int) -> bool:
        """Take an alarm into the consumer's hands that no source delivered (its row became
        this reactor's): True unless it is in hand already."""
        if pid in self._delivered and pid not in self._settled:
            return False
        self._delivered.add(pid)
        self._settled.discard(pid)
        self._touch(pid)
        return True

    def settle(self, pid: int) -> None:
        """The consumer is done with this alarm; a later sweep may deliver it again."""
        if pid in self._delivered:
            self._settled.add(pid)
        self._touch(pid)
