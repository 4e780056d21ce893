"""The pipeline: every delivered alarm becomes a cycle (cycle.py), one per process at a time,
run by a bounded set of workers over a table of pending cycles.

    submit(alarm) -> pending table (one Slot per process) -> ready queue -> workers
                     (at most WORKERS_PER_RESTART x max_concurrent_restarts cycles run at
                     once; the rest wait in the table, a few hundred bytes each, no task)

Per process, one cycle is in flight: alarms that arrive before the restart was issued
coalesce into it; one that arrives after earns exactly one more cycle (and the alarm is
cleared only by the last). A storm of 100,000 alarms is 100,000 table entries and a
fixed number of tasks; workers also wait, before they start a cycle, while the audit rows
of earlier ones are not written yet (the store's high-water mark), so that memory stays
bounded when the database is slower than the cycles.

A refusal is reported to `refused`, which looks at it again when its PROCESE row or the
config changes; an open breaker is noted and a trial is run when it half-opens
(circuit.py); a clear the database would not take is retried in the background
(clears.py), and an alarm the sweep brings back for it meanwhile only hurries that on.
`reconfigure` hands over a reloaded config: cycles that start from then on use it.

Stop (`close`): cycles not started or whose restart was not issued yet are cancelled at
once (their alarms stay set); those whose restart was issued may finish for up to
`shutdown_timeout` seconds, then are cancelled too; `close(urgent=True)` (a second SIGINT)
cancels them all at once, also while already waiting.

Error handling: a cycle never raises. A bug outside its attempts (store, breaker) is
logged with its traceback, the alarm, still set, is left to the next sweep, and the worker
goes on with the next cycle. Cancellation (stop) propagates.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from loguru import logger

from reactor.actions.breaker import Breaker
from reactor.actions.circuit import Circuits
from reactor.actions.clears import PendingClears
from reactor.actions.cycle import Counters, Cycles, Limits, Slot
from reactor.actions.systemd import Systemd
from reactor.config import Config
from reactor.events import Alarm, Observers, Source
from reactor.storage.records import Store
from reactor.storage.statefile import StateFile
from reactor.text import id_list

# cycles running at once, per restart slot: a cycle spends most of its time outside its
# restart action (health checks, settle time, delays, the clear), and the restart slots
# must not run dry while those wait
WORKERS_PER_RESTART = 4


class Pipeline:
    def __init__(self, config: Config, systemd: Systemd, store: Store, state: StateFile, *,
                 settle: Callable[[int], None], is_active: Callable[[int], bool],
                 refused: Callable[[int, str | None], None] | None = None,
                 observers: Observers | None = None) -> None:
        self.config = config
        self.store = store
        self.observers = observers if observers is not None else Observers([store])
        self.settle = settle
        self.refused = refused or (lambda pid, name: None)
        self.is_active = is_active
        self.counters = Counters()
        self.circuits = Circuits(state, store, lambda: self.config.monitor, self._trial)
        self.clears = PendingClears(store, settle)
        self.cycles = Cycles(systemd, store, self.observers, self.circuits, self.clears,
                             self.counters)
        self.limits = Limits.of(config.monitor.max_concurrent_restarts)
        self._slots: dict[int, Slot] = {}  # the pending table: every cycle wanted or running
        self._ready: collections.deque[int] = collections.deque()  # waiting for a worker
        self._has_ready = asyncio.Event()
        self._running: dict[asyncio.Task[None], Slot | None] = {}  # worker -> its cycle
        self._busy = 0  # workers running a cycle
        self._closing = asyncio.Event()
        self._urgent = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = asyncio.Event()  # set once run() can take cycles
        self.cancelled = 0

    @property
    def breakers(self) -> dict[str, Breaker]:
        return self.circuits.breakers

    @property
    def workers(self) -> int:
        return WORKERS_PER_RESTART * self.config.monitor.max_concurrent_restarts

    # ------------------------------------------------------------------ intake

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def cycles_running(self) -> int:
        """Cycles a worker is running now (not those waiting in the table)."""
        return self._busy

    def cycles_in_flight(self) -> list[tuple[Alarm, bool]]:
        """Each process's cycle wanted or running: its alarm, and whether its restart was
        issued (read-only: for status and metrics)."""
        return [(slot.alarm, slot.issued) for slot in self._slots.values()]

    def submit(self, alarm: Alarm) -> None:
        """Called for every delivered alarm (synchronously, in the event loop)."""
        if not self.started.is_set() or self._closing.is_set():
            logger.warning("alarm for process {} arrived while stopping; it stays set",
                           alarm.process_id)
            return
        pid = alarm.process_id
        if pid in self.clears and alarm.source is not Source.BINLOG:
            # still set because our clear has not landed: hurry it on, restart nothing
            self.counters.coalesced += 1
            self.clears.hurry(pid)
            return
        slot = self._slots.get(pid)
        if slot is not None:
            if slot.issued:
                slot.again = alarm
            else:
                self.counters.coalesced += 1
            return
        self._slots[pid] = Slot(alarm)
        self._ready.append(pid)
        self._has_ready.set()
        self._idle.clear()

    def _trial(self, alarm: Alarm) -> None:
        """A breaker half-opened: its trial, if the alarm is still set and not in hand."""
        pid = alarm.process_id
        if self.is_active(pid) and pid not in self._slots and not self._closing.is_set():
            self.submit(Alarm(pid, alarm.process_name, alarm.source))

    # ------------------------------------------------------------------ workers

    async def run(self) -> None:
        """Own the workers and the pending clears until close(); then stop them as the
        module docstring says."""
        async with asyncio.TaskGroup() as tg:
            retrier = tg.create_task(self.clears.run(), name="pending-clears")
            for n in range(self.workers):
                worker = tg.create_task(self._work(), name=f"worker-{n}")
                self._running[worker] = None
            self.started.set()
            await self._closing.wait()
            self._has_ready.set()  # idle workers see the close and end
            self.circuits.cancel_trials()
            self.clears.drop_all()
            retrier.cancel()
            waiting = self._drop_waiting()
            unissued = [t for t, s in self._running.items()
                        if s is not None and not s.issued and not t.done()]
            for task in unissued:
                task.cancel()
            if waiting or unissued:
                ids = sorted(waiting + [s.alarm.process_id for t in unissued
                                        if (s := self._running[t]) is not None])
                logger.info("cancelled {} cycle(s) whose restart was not issued yet (process "
                            "ids {}); their alarms stay set", len(ids),
                            id_list(ids))
            issued = [t for t, s in self._running.items()
                      if s is not None and t not in unissued and not t.done()]
            pending = await self._drain(tg, issued) if issued else set()
            for task in pending:
                task.cancel()
            self.cancelled = len(waiting) + len(unissued) + len(pending)
            if pending:
                logger.warning("cancelled {} cycle(s) still in flight (their restart was "
                               "issued); their alarms stay set and are handled at the next "
                               "start", len(pending))

    def _drop_waiting(self) -> list[int]:
        """Stopping: the cycles no worker has started (their alarms stay set)."""
        waiting = list(self._ready)
        self._ready.clear()
        for pid in waiting:
            self._slots.pop(pid, None)
        if not self._slots:
            self._idle.set()
        return waiting

    async def _next(self) -> Slot | None:
        """The next cycle to run, in arrival order; None once closing. Waits, before it
        hands one out, while the audit rows of earlier cycles are behind."""
        while not self._closing.is_set():
            if not self._ready:
                self._has_ready.clear()
                await self._has_ready.wait()
                continue
            await self.store.room()
            if self._ready and not self._closing.is_set():
                return self._slots[self._ready.popleft()]
        return None

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while (slot := await self._next()) is not None:
            self._running[me] = slot
            self._busy += 1
            try:
                await self._run_slot(slot)
            finally:
                self._running[me] = None
                self._busy -= 1

    async def _drain(self, tg: asyncio.TaskGroup,
                     tasks: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for the workers running `tasks`' cycles to finish them, up to the shutdown
        timeout, or until an urgent close; returns those still running."""
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
        self._has_ready.set()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config, for the cycles that start from now on (those in flight keep
        the one they started with; a changed max_concurrent_restarts bounds new restarts
        and commands, while those already running finish; the number of workers stays)."""
        limit = config.monitor.max_concurrent_restarts
        if limit != self.config.monitor.max_concurrent_restarts:
            self.limits = Limits.of(limit)
        self.config = config

    async def wait_idle(self) -> None:
        """Until no cycle is wanted or running."""
        await self._idle.wait()

    # ------------------------------------------------------------------ one process

    async def _run_slot(self, slot: Slot) -> None:
        pid = slot.alarm.process_id
        config, limits = self.config, self.limits  # a reload meanwhile is for the next one
        try:
            alarm: Alarm | None = slot.alarm
            last = slot.alarm
            done = False
            while alarm is not None:
                last, slot.refused = alarm, False
                done = await self.cycles.run(alarm, slot, config, limits)
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
