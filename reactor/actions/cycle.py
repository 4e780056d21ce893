"""One cycle of one alarm: the seed's workflow, over D-Bus.

    resolve name -> breaker -> pre_restart_command -> restart (x max_attempts, with delay)
                 -> health -> clear alarm + note -> breaker update; a step per stage

Every stage is reported as a Step to the observers (REACTOR_AUDIT, metrics, alerts). Two
processes that name the same unit take turns: one unit never has two restarts, or two
breaker trials, at once. Restart actions share `max_concurrent_restarts` slots and
commands as many more (both owned by the pipeline and handed in); waits (delays, settle
times) hold none.

Outcomes: success clears the alarm (if still set) with a note; failure leaves it set, with
a note saying why (a `cycle_failed` step), and lets a later sweep retry it; a refusal
(unknown id, bad or denied name) is noted; an open breaker is noted. A clear the database
would not take goes to the pending clears (clears.py).

Error handling: an unexpected exception during the attempts is logged with its traceback
and recorded like any failure (note, step `error`, breaker, retried by a later sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from loguru import logger

from reactor.actions import commands, health
from reactor.actions import restart as restarts
from reactor.actions.circuit import Circuits, hhmmss
from reactor.actions.clears import PendingClears
from reactor.actions.systemd import Systemd
from reactor.actions.units import Target, resolve
from reactor.config import RESTART_DELAY_MAX, Config
from reactor.errors import CallTimeout, Refused
from reactor.events import Alarm, Observers, Step
from reactor.storage.records import Store

StepFn = Callable[..., None]


@dataclass(slots=True)
class Slot:
    """One process's cycle, wanted or running: its entry in the pipeline's pending table."""

    alarm: Alarm
    issued_attempt: int = 0  # the attempt whose restart was issued; 0 = none yet
    again: Alarm | None = None  # an alarm raised after that: one more cycle
    refused: bool = False  # the current cycle was refused (units.resolve)

    @property
    def issued(self) -> bool:
        """The restart of the current cycle has been issued."""
        return self.issued_attempt > 0


@dataclass
class Counters:
    cycles: int = 0
    restarted: int = 0
    failed: int = 0
    refused: int = 0
    skipped: int = 0
    coalesced: int = 0  # alarms that joined a cycle already in flight


@dataclass
class _UnitTurn:
    lock: asyncio.Lock
    users: int = 0


@dataclass
class Limits:
    """The slots restart actions and commands share (replaced on a reload)."""

    restarts: asyncio.Semaphore
    commands: asyncio.Semaphore

    @classmethod
    def of(cls, n: int) -> Limits:
        return cls(asyncio.Semaphore(n), asyncio.Semaphore(n))


class Cycles:
    def __init__(self, systemd: Systemd, store: Store, observers: Observers,
                 circuits: Circuits, clears: PendingClears, counters: Counters) -> None:
        self.systemd = systemd
        self.store = store
        self.observers = observers
        self.circuits = circuits
        self.clears = clears
        self.counters = counters
        self._units: dict[str, _UnitTurn] = {}
        self._ids = itertools.count(time.time_ns() // 1000)

    async def run(self, alarm: Alarm, slot: Slot, config: Config, limits: Limits) -> bool:
        """One cycle. True when it acted (a later sweep may retry a failure); False when
        it was refused or the breaker is open (not retried until the row changes or the
        breaker's trial)."""
        pid = alarm.process_id
        cycle = next(self._ids)
        self.counters.cycles += 1
        log = logger.bind(process=alarm.process_name or pid)

        def step(name: str, detail: str = "", unit: str | None = None,
                 at: float | None = None, method: str = "") -> None:
            if at is None:
                at, latency = time.time(), (time.monotonic() - alarm.detected_mono) * 1000
            else:
                latency = (at - alarm.detected_at) * 1000
            self.observers.step(Step(
                at=at, cycle=cycle, process_id=pid, process_name=alarm.process_name, unit=unit,
                step=name, source=alarm.source.value, latency_ms=latency, detail=detail,
                method=method))

        step("detected", alarm.position or "", at=alarm.detected_at)
        self.clears.drop(pid)  # a new alarm: this cycle's outcome is the one to record
        try:
            target = resolve(config, alarm.process_name, pid)
        except Refused as exc:
            self.counters.refused += 1
            log.warning("alarm refused: {}", exc)
            step("refused", str(exc))
            slot.refused = True
            await self.store.note(pid, f"refused {hhmmss(time.time())}: {exc}")
            return False
        # two rows may name one unit (the same name twice, or `unit =`): their cycles take
        # turns, so that one unit never has two restarts or two breaker trials at once
        async with self._exclusive(target.unit):
            return await self._act(target, alarm, slot, step, limits)

    async def _act(self, target: Target, alarm: Alarm, slot: Slot, step: StepFn,
                   limits: Limits) -> bool:
        """A resolved alarm: breaker, attempts, outcome."""
        pid = alarm.process_id
        unit = target.unit
        log = logger.bind(process=alarm.process_name or pid, unit=unit)

        if not await self.circuits.allows(target, alarm, step):
            self.counters.skipped += 1
            return False

        try:
            ok, reason, method = await self._attempts(target, slot, step, limits)
        except Exception as exc:  # a bug: the cycle fails like any other, with a note
            log.opt(exception=exc).error("cycle for {} failed unexpectedly", unit)
            ok, reason, method = False, f"internal error: {exc!r}", ""
            step("error", reason, unit)
        elapsed_ms = (time.monotonic() - alarm.detected_mono) * 1000
        now = time.time()
        if ok:
            self.counters.restarted += 1
            note = f"restarted {hhmmss(now)} in {elapsed_ms:.0f} ms ({method})"
            if slot.again is not None:
                await self.store.note(pid, note + "; raised again")
                step("not_cleared", "raised again after the restart: one more cycle", unit)
            else:
                cleared = await self.store.clear(pid, note)
                if cleared:
                    step("cleared", note, unit)
                elif cleared is None:
                    step("not_cleared", "database unavailable: the clear is retried in the "
                                        "background; no new restart meanwhile", unit)
                    self.clears.add(alarm, note, step, unit)
                else:
                    step("not_cleared", "alarm no longer set", unit)
            log.info("restarted {} in {:.1f} ms ({})", unit, elapsed_ms, method)
            await self.circuits.result(target, True, step)
        else:
            self.counters.failed += 1
            log.error("restart of {} failed: {}", unit, reason)
            step("cycle_failed", reason, unit, method=method)
            await self.store.note(pid, f"restart failed {hhmmss(now)}: {reason}")
            await self.circuits.result(target, False, step)
        return True

    async def _attempts(self, target: Target, slot: Slot, step: StepFn,
                        limits: Limits) -> tuple[bool, str, str]:
        """pre_restart_command, then up to max_attempts restarts with health checks."""
        s = target.settings
        unit = target.unit
        if s.pre_restart_command:
            try:
                result = await commands.run(s.pre_restart_command, target.name,
                                            s.command_timeout, turns=limits.commands)
                failed = None if result.ok else result.summary()
            except CallTimeout as exc:
                failed = str(exc)
            if failed:
                step("pre_restart_failed", failed, unit)
                return False, f"pre-restart: {failed}", ""
            step("pre_restart_ok", result.summary(), unit)

        delay = s.restart_delay
        reason = ""
        for n in range(1, s.max_attempts + 1):
            def issued(n: int = n) -> None:
                """The attempt's first restart action is about to be sent (a fallback within
                the attempt, such as the process strategy, is not a new one)."""
                if slot.issued_attempt != n:
                    slot.issued_attempt = n
                    step("restart_issued", f"attempt {n}/{s.max_attempts}", unit)

            async with limits.restarts:
                attempt = await restarts.restart(target, self.systemd, issued)
            if attempt.ok:
                step("restarted", f"{attempt.method}: {attempt.detail}", unit,
                     method=attempt.method)
                verdict = await health.check(target, self.systemd, via_unit=attempt.via_unit,
                                             turns=limits.commands)
                if verdict.ok:
                    step("health_ok", f"after {verdict.elapsed_ms:.0f} ms", unit)
                    return True, "", attempt.method
                reason = f"health: {verdict.detail}"
                step("health_failed", verdict.detail, unit)
            else:
                reason = attempt.detail
                step("restart_failed", f"{attempt.method}: {attempt.detail}", unit,
                     method=attempt.method)
            if n < s.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * s.restart_backoff, RESTART_DELAY_MAX)
        return False, f"{reason} ({s.max_attempts} attempt(s))", ""

    @contextlib.asynccontextmanager
    async def _exclusive(self, unit: str) -> AsyncIterator[None]:
        entry = self._units.setdefault(unit, _UnitTurn(asyncio.Lock()))
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._units[unit]
