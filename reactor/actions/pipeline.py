"""handle(alarm): the seed's workflow, one cycle per alarm, over D-Bus.

    resolve name -> breaker -> pre_restart_command -> restart (x max_attempts, with delay)
                 -> health -> clear alarm + note -> breaker update; an audit row per step

Per process, one cycle is in flight: alarms that arrive before the restart was issued
coalesce into it; one that arrives after earns exactly one more cycle (and the alarm is
cleared only by the last). Two processes that name the same unit take turns. Restart
actions share a semaphore of `max_concurrent_restarts` (commands another of the same
size; both owned here); waits (delays, settle times) hold nothing, so a slow or failing
process never delays another.

Outcomes: success clears the alarm (if still set) with a note; failure leaves it set, with
a note saying why, and lets a later sweep retry it; a refusal (unknown id, bad or denied
name) is noted and reported to `refused`, which looks at it again when its PROCESE row or
the config changes; an open breaker is noted and a trial is scheduled for when it
half-opens. `reconfigure` hands over a reloaded config: new cycles use it.

Stop (`close`): cycles whose restart was not issued yet are cancelled at once (their
alarms stay set); those whose restart was issued may finish for up to `shutdown_timeout`
seconds, then are cancelled too; `close(urgent=True)` (a second SIGINT) cancels them all
at once, also while already waiting.

A clear the database would not take (down, or the row locked, past RECORD_RETRY_FOR) is
retried in the background with backoff, for up to CLEAR_RETRY_FOR: the unit was restarted
and is healthy, so an alarm the sweep (or the poller) brings back meanwhile only hurries
that retry on, and never restarts the unit again. A new alarm from the stream (the row
went 0 then 1 again) is a new cycle, which drops the pending clear.

Error handling: a cycle never raises. An unexpected exception during the attempts is
logged with its traceback and recorded like any failure (note, audit step 'error',
breaker, retried by a later sweep); one elsewhere in the cycle is logged and the alarm,
still set, is left to the next sweep. Cancellation (shutdown) propagates.
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
from reactor.actions.breaker import Breaker, Event, State, transition
from reactor.actions.systemd import Systemd
from reactor.actions.units import Target, resolve
from reactor.config import RESTART_DELAY_MAX, Config
from reactor.errors import CallTimeout, ReactorError, Refused
from reactor.events import Alarm, Observers, Source, Step
from reactor.retry import Backoff
from reactor.storage.records import Store
from reactor.storage.statefile import StateFile

CLEAR_RETRY_FOR = 3600.0  # seconds a pending clear is retried before the alarm is let go
CLEAR_BACKOFF = (1.0, 30.0)  # first and longest wait between two tries of a pending clear


def hhmmss(t: float) -> str:
    """Local time of day; with the date when t is half a day or more away from now (a
    breaker's `until` after a long circuit_reset_time)."""
    fmt = "%Y-%m-%d %H:%M:%S" if abs(t - time.time()) >= 43200 else "%H:%M:%S"
    return time.strftime(fmt, time.localtime(t))


@dataclass
class Slot:
    """One process's cycle in flight."""

    alarm: Alarm
    issued_attempt: int = 0  # the attempt whose restart was issued; 0 = none yet
    again: Alarm | None = None  # an alarm raised after that: one more cycle
    refused: bool = False  # the current cycle was refused (units.resolve)

    @property
    def issued(self) -> bool:
        """The restart of the current cycle has been issued."""
        return self.issued_attempt > 0


@dataclass
class _PendingClear:
    """A restart that succeeded, whose clear the database has not taken yet."""

    note: str
    wake: asyncio.Event  # set to try again now (an alarm for it came back)
    task: asyncio.Task[None] | None = None


@dataclass
class _UnitTurn:
    lock: asyncio.Lock
    users: int = 0


@dataclass
class Counters:
    cycles: int = 0
    restarted: int = 0
    failed: int = 0
    refused: int = 0
    skipped: int = 0
    coalesced: int = 0  # alarms that joined a cycle already in flight


class Pipeline:
    def __init__(self, config: Config, systemd: Systemd, store: Store, state: StateFile, *,
                 settle: Callable[[int], None], is_active: Callable[[int], bool],
                 refused: Callable[[int, str | None], None] | None = None,
                 observers: Observers | None = None) -> None:
        self.config = config
        self.systemd = systemd
        self.store = store
        self.observers = observers if observers is not None else Observers([store])
        self.state = state
        self.settle = settle
        self.refused = refused or (lambda pid, name: None)
        self.is_active = is_active
        self.counters = Counters()
        self.breakers = {k: Breaker.from_json(v) for k, v in state.breakers().items()}
        self._slots: dict[int, Slot] = {}
        self._tasks: dict[asyncio.Task[None], Slot] = {}
        self._clears: dict[int, _PendingClear] = {}
        self._trials: dict[int, asyncio.TimerHandle] = {}
        self._sem = asyncio.Semaphore(config.monitor.max_concurrent_restarts)
        self._turns = asyncio.Semaphore(config.monitor.max_concurrent_restarts)  # commands
        self._units: dict[str, _UnitTurn] = {}
        self._ids = itertools.count(time.time_ns() // 1000)
        self._tg: asyncio.TaskGroup | None = None
        self._closing = asyncio.Event()
        self._urgent = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = asyncio.Event()  # set once run() can take cycles
        self.cancelled = 0

    # ------------------------------------------------------------------ intake

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def cycles_in_flight(self) -> list[tuple[Alarm, bool]]:
        """Each process's cycle in flight: its alarm, and whether its restart was issued
        (read-only: for status and metrics)."""
        return [(slot.alarm, slot.issued) for slot in self._slots.values()]

    def submit(self, alarm: Alarm) -> None:
        """Called for every delivered alarm (synchronously, in the event loop)."""
        if self._tg is None or self._closing.is_set():
            logger.warning("alarm for process {} arrived while stopping; it stays set",
                           alarm.process_id)
            return
        pending = self._clears.get(alarm.process_id)
        if pending is not None and alarm.source is not Source.BINLOG:
            # still set because our clear has not landed: hurry it on, restart nothing
            self.counters.coalesced += 1
            pending.wake.set()
            return
        slot = self._slots.get(alarm.process_id)
        if slot is not None:
            if slot.issued:
                slot.again = alarm
            else:
                self.counters.coalesced += 1
            return
        slot = Slot(alarm)
        self._slots[alarm.process_id] = slot
        self._idle.clear()
        task = self._tg.create_task(self._run_slot(slot), name=f"cycle-{alarm.process_id}")
        self._tasks[task] = slot
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def run(self) -> None:
        """Own the cycles until close(); then stop them as the module docstring says."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self.started.set()
            await self._closing.wait()
            for handle in self._trials.values():
                handle.cancel()
            self._trials.clear()
            self._drop_clears()
            unissued = [t for t, slot in self._tasks.items() if not slot.issued and not t.done()]
            for task in unissued:
                task.cancel()
            if unissued:
                ids = sorted(self._tasks[t].alarm.process_id for t in unissued)
                logger.info("cancelled {} cycle(s) whose restart was not issued yet (process "
                            "ids {}); their alarms stay set", len(ids),
                            ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else ""))
            issued = [t for t in self._tasks if t not in unissued and not t.done()]
            pending = await self._drain(tg, issued) if issued else set()
            for task in pending:
                task.cancel()
            self.cancelled = len(unissued) + len(pending)
            if pending:
                logger.warning("cancelled {} cycle(s) still in flight (their restart was "
                               "issued); their alarms stay set and are handled at the next "
                               "start", len(pending))

    async def _drain(self, tg: asyncio.TaskGroup,
                     tasks: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for `tasks` up to the shutdown timeout, or until an urgent close; returns
        those still running."""
        pending: set[asyncio.Task[None]] = set(tasks)
        if self._urgent.is_set():
            return pending
        timeout = self.config.monitor.shutdown_timeout
        logger.info("waiting up to {:g} s for {} cycle(s) whose restart was issued", timeout,
                    len(pending))
        urgent = tg.create_task(self._until_urgent(), name="urgent-stop")
        deadline = time.monotonic() + timeout
        try:
            while pending and not urgent.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                _, pending = await asyncio.wait({*pending, urgent}, timeout=left,
                                                return_when=asyncio.FIRST_COMPLETED)
                pending.discard(urgent)
        finally:
            urgent.cancel()
        return {t for t in pending if not t.done()}

    async def _until_urgent(self) -> None:
        await self._urgent.wait()

    def close(self, *, urgent: bool = False) -> None:
        """Stop taking alarms; urgent: do not wait for cycles in flight either."""
        if urgent:
            self._urgent.set()
        self._closing.set()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config, for the cycles that start from now on (those in flight keep
        the one they started with; a changed max_concurrent_restarts bounds new restarts
        and commands, while those already running finish)."""
        limit = config.monitor.max_concurrent_restarts
        if limit != self.config.monitor.max_concurrent_restarts:
            self._sem = asyncio.Semaphore(limit)
            self._turns = asyncio.Semaphore(limit)
        self.config = config

    async def wait_idle(self) -> None:
        """Until no cycle is in flight."""
        await self._idle.wait()

    # ------------------------------------------------------------------ one process

    async def _run_slot(self, slot: Slot) -> None:
        pid = slot.alarm.process_id
        try:
            alarm: Alarm | None = slot.alarm
            last = slot.alarm
            while alarm is not None:
                last, slot.refused = alarm, False
                done = await self._cycle(alarm, slot)
                alarm, slot.again, slot.issued_attempt = slot.again, None, 0
            if done:  # only now: a sweep may bring the alarm back if it is still set
                self.settle(pid)
            elif slot.refused:  # looked at again when its row or the config changes
                self.refused(pid, last.process_name)
        except Exception:  # a bug outside the attempts (store, breaker): keep the others going
            logger.exception("cycle for process {} failed unexpectedly; its alarm stays set",
                             pid)
            self.settle(pid)
        finally:
            self._slots.pop(pid, None)
            if not self._slots:
                self._idle.set()

    async def _cycle(self, alarm: Alarm, slot: Slot) -> bool:
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
        self._drop_clear(pid)  # a new alarm: this cycle's outcome is the one to record
        try:
            target = resolve(self.config, alarm.process_name, pid)
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
            return await self._act(target, alarm, slot, step)

    async def _act(self, target: Target, alarm: Alarm, slot: Slot,
                   step: Callable[..., None]) -> bool:
        """A resolved alarm: breaker, attempts, outcome."""
        pid = alarm.process_id
        unit = target.unit
        log = logger.bind(process=alarm.process_name or pid, unit=unit)

        if not await self._breaker_allows(target, alarm, step):
            return False

        try:
            ok, reason, method = await self._attempts(target, slot, step)
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
                    self._clear_later(alarm, note, step, unit)
                else:
                    step("not_cleared", "alarm no longer set", unit)
            log.info("restarted {} in {:.1f} ms ({})", unit, elapsed_ms, method)
            await self._breaker_result(target, True, step)
        else:
            self.counters.failed += 1
            log.error("restart of {} failed: {}", unit, reason)
            step("cycle_failed", reason, unit, method=method)
            await self.store.note(pid, f"restart failed {hhmmss(now)}: {reason}")
            await self._breaker_result(target, False, step)
        return True

    async def _attempts(self, target: Target, slot: Slot,
                        step: Callable[..., None]) -> tuple[bool, str, str]:
        """pre_restart_command, then up to max_attempts restarts with health checks."""
        s = target.settings
        unit = target.unit
        if s.pre_restart_command:
            try:
                result = await commands.run(s.pre_restart_command, target.name,
                                            s.command_timeout, turns=self._turns)
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

            async with self._sem:
                attempt = await restarts.restart(target, self.systemd, issued)
            if attempt.ok:
                step("restarted", f"{attempt.method}: {attempt.detail}", unit,
                     method=attempt.method)
                verdict = await health.check(target, self.systemd, via_unit=attempt.via_unit,
                                             turns=self._turns)
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

    # ------------------------------------------------------------------ pending clears

    def _clear_later(self, alarm: Alarm, note: str, step: Callable[..., None],
                     unit: str) -> None:
        """Retry the clear of a restarted process in the background (see module docstring)."""
        pid = alarm.process_id
        self._drop_clear(pid)
        if self._closing.is_set():  # stopping: nothing may outlive the drain
            logger.bind(process=alarm.process_name or pid, unit=unit).warning(
                "stopping: process {}'s alarm stays set (its clear did not land)", pid)
            return
        pending = _PendingClear(note, asyncio.Event())
        self._clears[pid] = pending
        logger.bind(process=alarm.process_name or pid, unit=unit).warning(
            "the clear of process {}'s alarm is pending (database unavailable): retried in "
            "the background for up to {:g} s; {} is not restarted again meanwhile",
            pid, CLEAR_RETRY_FOR, unit)
        assert self._tg is not None
        pending.task = self._tg.create_task(self._retry_clear(alarm, pending, step, unit),
                                            name=f"clear-{pid}")

    async def _retry_clear(self, alarm: Alarm, pending: _PendingClear,
                           step: Callable[..., None], unit: str) -> None:
        pid = alarm.process_id
        log = logger.bind(process=alarm.process_name or pid, unit=unit)
        backoff = Backoff(*CLEAR_BACKOFF)
        start = time.monotonic()
        outcome: bool | None = None
        try:
            while outcome is None and time.monotonic() - start < CLEAR_RETRY_FOR:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.next()):
                        await pending.wake.wait()
                pending.wake.clear()
                outcome = await self.store.clear_once(pid, pending.note)
        except ReactorError as exc:  # refused: a grant or the table is missing
            log.error("gave up clearing process {}'s alarm: {}", pid, exc)
        except Exception:  # a bug: never take the other cycles down with it
            log.exception("clearing process {}'s alarm failed unexpectedly; it stays set", pid)
        else:
            waited = time.monotonic() - start
            if outcome:
                step("cleared", pending.note, unit)
                log.info("cleared process {}'s alarm {:.1f} s after its restart (the "
                         "database was unavailable)", pid, waited)
            elif outcome is False:
                step("not_cleared", "alarm no longer set", unit)
                log.info("process {}'s alarm was reset meanwhile: nothing to clear", pid)
            else:
                log.error("gave up clearing process {}'s alarm after {:.0f} s: the database "
                          "stayed unavailable; a later sweep handles it as a new alarm",
                          pid, waited)
        finally:
            if self._clears.get(pid) is pending:
                del self._clears[pid]
                self.settle(pid)  # a sweep may deliver it again if it is still set

    def _drop_clear(self, pid: int) -> None:
        pending = self._clears.pop(pid, None)
        if pending is not None and pending.task is not None:
            pending.task.cancel()

    def _drop_clears(self) -> None:
        """Stopping: pending clears end with the daemon (their alarms stay set)."""
        if self._clears:
            logger.warning("stopping with {} alarm clear(s) pending (processes {}): those "
                           "alarms stay set", len(self._clears),
                           ", ".join(map(str, sorted(self._clears))))
        for pid in list(self._clears):
            self._drop_clear(pid)

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

    # ------------------------------------------------------------------ breaker

    def _transition(self, b: Breaker, event: Event) -> Breaker:
        m = self.config.monitor
        return transition(b, event, time.time(), max_failures=m.max_restart_failures,
                          reset_time=m.circuit_reset_time)

    def _save_breaker(self, name: str, b: Breaker) -> None:
        self.breakers[name] = b
        record = None if b == Breaker() else b.to_json()
        self.state.set_breaker(name, record)

    async def _breaker_allows(self, target: Target, alarm: Alarm,
                              step: Callable[..., None]) -> bool:
        before = self.breakers.get(target.name, Breaker())
        after = self._transition(before, Event.ALARM)
        if not after.allows:
            self.counters.skipped += 1
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
            self._save_breaker(target.name, after)
        return True

    async def _breaker_result(self, target: Target, ok: bool, step: Callable[..., None]) -> None:
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
        self._save_breaker(target.name, after)

    def _schedule_trial(self, alarm: Alarm, until: float) -> None:
        """When the breaker half-opens, run the trial if the alarm is still set."""
        pid = alarm.process_id
        if pid in self._trials:
            self._trials[pid].cancel()
        loop = asyncio.get_running_loop()

        def trial() -> None:
            self._trials.pop(pid, None)
            if self.is_active(pid) and pid not in self._slots:
                self.submit(Alarm(pid, alarm.process_name, alarm.source))

        self._trials[pid] = loop.call_later(max(0.0, until - time.time()) + 0.01, trial)
