"""The circuit breakers of every process: their transitions (breaker.py, pure), kept in the
state file across restarts of reactor, and the trial of an open one when it half-opens.

    allows(target, alarm, step)  before a cycle acts: False (noted, skipped) while open
    result(target, ok, step)     after it: counts the failure, opens, or closes again

A breaker is per process name (what PROCESE calls it), as in the seed. While it is open
its alarms are recorded (a note and a `skipped` step) and not acted on; when it half-opens
`on_trial` is called with the alarm, if it is still set, for the one trial cycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger

from reactor.actions.breaker import Breaker, Event, State, transition
from reactor.actions.units import Target
from reactor.config import MonitorConfig
from reactor.events import Alarm
from reactor.storage.records import Store
from reactor.storage.statefile import StateFile

Step = Callable[..., None]


def hhmmss(t: float) -> str:
    """Local time of day; with the date when t is half a day or more away from now (a
    breaker's `until` after a long circuit_reset_time)."""
    fmt = "%Y-%m-%d %H:%M:%S" if abs(t - time.time()) >= 43200 else "%H:%M:%S"
    return time.strftime(fmt, time.localtime(t))


class Circuits:
    def __init__(self, state: StateFile, store: Store, monitor: Callable[[], MonitorConfig],
                 on_trial: Callable[[Alarm], None]) -> None:
        self.state = state
        self.store = store
        self.monitor = monitor  # the [monitor] section in force (a reload may change it)
        self.on_trial = on_trial
        self.breakers = {k: Breaker.from_json(v) for k, v in state.breakers().items()}
        self._trials: dict[int, asyncio.TimerHandle] = {}

    def _transition(self, b: Breaker, event: Event) -> Breaker:
        m = self.monitor()
        return transition(b, event, time.time(), max_failures=m.max_restart_failures,
                          reset_time=m.circuit_reset_time)

    def _save(self, name: str, b: Breaker) -> None:
        self.breakers[name] = b
        record = None if b == Breaker() else b.to_json()
        self.state.set_breaker(name, record)

    async def allows(self, target: Target, alarm: Alarm, step: Step) -> bool:
        before = self.breakers.get(target.name, Breaker())
        after = self._transition(before, Event.ALARM)
        if not after.allows:
            until = hhmmss(after.until)
            step("skipped", f"breaker open until {until}", target.unit)
            await self.store.note(alarm.process_id,
                                  f"breaker open until {until}: not restarted")
            logger.bind(process=target.name).warning(
                "breaker open for {} until {}: alarm recorded, not acted on", target.name, until)
            self._schedule_trial(alarm, after.until)
            return False
        if after != before:
            step("breaker_half_open", "trial cycle", target.unit)
            self._save(target.name, after)
        return True

    async def result(self, target: Target, ok: bool, step: Step) -> None:
        before = self.breakers.get(target.name, Breaker())
        after = self._transition(before, Event.SUCCESS if ok else Event.FAILURE)
        if after == before:
            return
        if after.state is State.OPEN:
            step("breaker_open", f"after {after.failures} failed cycle(s), until "
                                 f"{hhmmss(after.until)}", target.unit)
            logger.bind(process=target.name).error(
                "breaker opened for {} after {} failed cycle(s); next trial at {}",
                target.name, after.failures, hhmmss(after.until))
        elif before.state is not State.CLOSED and after.state is State.CLOSED:
            step("breaker_closed", "trial succeeded", target.unit)
            logger.bind(process=target.name).info("breaker closed for {}", target.name)
        self._save(target.name, after)

    def _schedule_trial(self, alarm: Alarm, until: float) -> None:
        """When the breaker half-opens, hand the alarm back for its trial."""
        pid = alarm.process_id
        if pid in self._trials:
            self._trials[pid].cancel()
        loop = asyncio.get_running_loop()

        def trial() -> None:
            self._trials.pop(pid, None)
            self.on_trial(alarm)

        self._trials[pid] = loop.call_later(max(0.0, until - time.time()) + 0.01, trial)

    def cancel_trials(self) -> None:
        for handle in self._trials.values():
            handle.cancel()
        self._trials.clear()
