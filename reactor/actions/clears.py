"""Clears the database would not take: retried in the background, many at once, by one task.

A cycle that restarted its unit and found it healthy writes alarma = 0; when the database
is down (or the row stays locked) past the store's own retries, the clear goes here. One
task (`run`, owned by the pipeline) retries every pending clear when it is due, with a
backoff each (CLEAR_BACKOFF), for up to CLEAR_RETRY_FOR seconds, all due ones in one go
(the store batches them). Meanwhile the unit is healthy: an alarm the sweep or the poller
brings back for it only hurries its retry on (`hurry`), and never restarts it again; a new
alarm from the stream (the row went 0 then 1) is a new cycle, which drops it (`drop`).

Error handling: a clear the database refuses for good (a grant or the table missing) is
given up with an ERROR; one that stays unavailable past CLEAR_RETRY_FOR too; either way the
alarm stays set and is settled, so that a later sweep handles it as a new alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from reactor.errors import ReactorError
from reactor.events import Alarm
from reactor.retry import Backoff
from reactor.storage.records import Store

CLEAR_RETRY_FOR = 3600.0  # seconds a pending clear is retried before the alarm is let go
CLEAR_BACKOFF = (1.0, 30.0)  # first and longest wait between two tries of a pending clear

Step = Callable[..., None]


@dataclass
class _Pending:
    alarm: Alarm
    note: str
    step: Step  # the cycle's audit step writer: its outcome is that cycle's
    unit: str
    since: float  # monotonic
    backoff: Backoff
    due: float  # monotonic time of the next try


class PendingClears:
    def __init__(self, store: Store, settle: Callable[[int], None]) -> None:
        self.store = store
        self.settle = settle  # the alarm is the consumer's again (a sweep may bring it back)
        self._pending: dict[int, _Pending] = {}
        self._wake = asyncio.Event()

    def __contains__(self, pid: int) -> bool:
        return pid in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, alarm: Alarm, note: str, step: Step, unit: str) -> None:
        pid = alarm.process_id
        backoff = Backoff(*CLEAR_BACKOFF)
        now = time.monotonic()
        self._pending[pid] = _Pending(alarm, note, step, unit, now, backoff,
                                      now + backoff.next())
        logger.bind(process=alarm.process_name or pid, unit=unit).warning(
            "the clear of process {}'s alarm is pending (database unavailable): retried in "
            "the background for up to {:g} s; {} is not restarted again meanwhile",
            pid, CLEAR_RETRY_FOR, unit)
        self._wake.set()

    def hurry(self, pid: int) -> None:
        """An alarm for it came back: try now."""
        pending = self._pending.get(pid)
        if pending is not None:
            pending.due = time.monotonic()
            self._wake.set()

    def drop(self, pid: int) -> None:
        """A new cycle of its own: that one's outcome is the one to record."""
        self._pending.pop(pid, None)

    def drop_all(self) -> None:
        """Stopping: pending clears end with the daemon (their alarms stay set)."""
        if self._pending:
            logger.warning("stopping with {} alarm clear(s) pending (processes {}): those "
                           "alarms stay set", len(self._pending),
                           ", ".join(map(str, sorted(self._pending))))
        self._pending.clear()

    async def run(self) -> None:
        """Retry the pending clears when due, until cancelled."""
        while True:
            due = [p for p in self._pending.values() if p.due <= time.monotonic()]
            if not due:
                wait = min((p.due for p in self._pending.values()), default=None)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if wait is None
                                               else max(0.0, wait - time.monotonic())):
                        await self._wake.wait()
                continue
            try:
                answers = await self.store.clear_many([(p.alarm.process_id, p.note)
                                                       for p in due])
            except ReactorError as exc:  # refused: a grant or the table is missing
                for p in due:
                    self._end(p, f"gave up clearing process {p.alarm.process_id}'s alarm: "
                                 f"{exc}")
                continue
            for p in due:
                self._answered(p, answers.get(p.alarm.process_id))

    def _answered(self, p: _Pending, outcome: bool | None) -> None:
        pid = p.alarm.process_id
        if self._pending.get(pid) is not p:
            return  # dropped meanwhile: a new cycle records its own outcome
        log = logger.bind(process=p.alarm.process_name or pid, unit=p.unit)
        waited = time.monotonic() - p.since
        if outcome:
            p.step("cleared", p.note, p.unit)
            log.info("cleared process {}'s alarm {:.1f} s after its restart (the database "
                     "was unavailable)", pid, waited)
        elif outcome is False:
            p.step("not_cleared", "alarm no longer set", p.unit)
            log.info("process {}'s alarm was reset meanwhile: nothing to clear", pid)
        elif waited < CLEAR_RETRY_FOR:
            p.due = time.monotonic() + p.backoff.next()
            return
        else:
            self._end(p, f"gave up clearing process {pid}'s alarm after {waited:.0f} s: the "
                         "database stayed unavailable; a later sweep handles it as a new "
                         "alarm")
            return
        del self._pending[pid]
        self.settle(pid)

    def _end(self, p: _Pending, why: str) -> None:
        pid = p.alarm.process_id
        if self._pending.get(pid) is p:
            logger.bind(process=p.alarm.process_name or pid, unit=p.unit).error(why)
            del self._pending[pid]
            self.settle(pid)
