"""A restart that succeeded but whose clear the database would not take (pure logic of the
pipeline: systemd and the store are small stand-ins; the real database outage is in
test_run_outcomes.py).

- the clear is retried in the background; an alarm the sweep brings back meanwhile only
  hurries that retry on, and restarts nothing;
- an alarm from the stream (the row went 0, then 1 again) is a new cycle, which drops the
  pending clear;
- stopping ends pending clears at once (their alarms stay set).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from reactor.actions import clears
from reactor.actions.pipeline import Pipeline
from reactor.actions.systemd import JobResult
from reactor.config import parse_config
from reactor.events import Alarm, Notice, Observers, Source, Step
from reactor.storage.statefile import StateFile


class FakeSystemd:
    def __init__(self) -> None:
        self.restarts = 0

    async def restart(self, unit: str, on_sent: Callable[[], None] | None = None) -> JobResult:
        if on_sent is not None:
            on_sent()
        self.restarts += 1
        return JobResult("done", 1.0)

    async def active_state(self, unit: str) -> tuple[str, str]:
        return "active", "running"

    async def ran_to_success(self, unit: str) -> bool:
        return False


class FakeStore:
    """The database is away for clear() (it gave up); clear_many answers each from
    `answers` (None = still away)."""

    def __init__(self) -> None:
        self.answers: list[bool | None] = []
        self.tries = 0
        self.steps: list[str] = []
        self.changed = asyncio.Event()

    async def clear(self, pid: int, note: str) -> bool | None:
        return None

    async def clear_many(self, items: list[tuple[int, str]]) -> dict[int, bool | None]:
        out: dict[int, bool | None] = {}
        for pid, _ in items:
            self.tries += 1
            out[pid] = self.answers.pop(0) if self.answers else None
        self.changed.set()
        return out

    async def room(self) -> None:
        pass

    async def note(self, pid: int, note: str) -> bool | None:
        return True

    def on_step(self, step: Step) -> None:
        self.steps.append(step.step)
        self.changed.set()

    def on_notice(self, notice: Notice) -> None:
        pass

    async def wait_step(self, step: str, count: int = 1) -> None:
        await self.until(lambda: self.steps.count(step) >= count)

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                self.changed.clear()
                await self.changed.wait()


class Rig:
    def __init__(self) -> None:
        config = parse_config("[database]\nuser = r\n[process.default]\nsettle_time = 0\n"
                              "max_attempts = 1\n")
        self.systemd = FakeSystemd()
        self.store = FakeStore()
        self.settled: list[int] = []
        self.pipeline = Pipeline(config, self.systemd, self.store,  # type: ignore[arg-type]
                                 StateFile(None), settle=self.settled.append,
                                 is_active=lambda pid: True,
                                 observers=Observers([self.store]))


def run(test: Callable[[Rig], Any]) -> None:
    async def main() -> None:
        rig = Rig()
        task = asyncio.create_task(rig.pipeline.run())
        await rig.pipeline.started.wait()
        try:
            await test(rig)
        finally:
            rig.pipeline.close()
            async with asyncio.timeout(10):
                await task

    asyncio.run(main())


@pytest.fixture(autouse=True)
def slow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background retries a minute apart: only an alarm that comes back hurries one on."""
    monkeypatch.setattr(clears, "CLEAR_BACKOFF", (60.0, 60.0))


def test_a_swept_alarm_hurries_the_pending_clear_and_restarts_nothing() -> None:
    async def test(rig: Rig) -> None:
        rig.pipeline.submit(Alarm(1, "web", Source.BINLOG))
        await rig.store.wait_step("not_cleared")
        assert rig.systemd.restarts == 1 and rig.settled == [1]
        rig.store.answers = [None, True]
        rig.pipeline.submit(Alarm(1, "web", Source.SWEEP))  # still set: the database is away
        await rig.store.until(lambda: rig.store.tries == 1)
        rig.pipeline.submit(Alarm(1, "web", Source.SWEEP))  # back
        await rig.store.wait_step("cleared")
        assert rig.systemd.restarts == 1 and rig.store.tries == 2
        assert rig.store.steps.count("detected") == 1
        assert rig.settled == [1, 1]  # once after the cycle, once the clear landed

    run(test)


def test_a_stream_alarm_is_a_new_cycle_that_drops_the_pending_clear() -> None:
    async def test(rig: Rig) -> None:
        rig.pipeline.submit(Alarm(1, "web", Source.BINLOG))
        await rig.store.wait_step("not_cleared")
        rig.pipeline.submit(Alarm(1, "web", Source.BINLOG))  # reset and raised again
        await rig.store.wait_step("not_cleared", 2)
        assert rig.systemd.restarts == 2 and rig.store.steps.count("detected") == 2
        assert rig.store.tries == 0

    run(test)


def test_stopping_ends_a_pending_clear_at_once() -> None:
    async def test(rig: Rig) -> None:
        rig.pipeline.submit(Alarm(1, "web", Source.BINLOG))
        await rig.store.wait_step("not_cleared")
        # run()'s caller gives it 10 s to return: a pending clear must not hold it an hour

    run(test)
