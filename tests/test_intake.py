"""Intake (pure logic around the tracker; the database is a stand-in that fails)."""

from __future__ import annotations

import asyncio
from typing import Any

from reactor.errors import DatabaseUnavailable
from reactor.events import Alarm, RowChange, Source
from reactor.sources.intake import Intake
from reactor.storage.statefile import Checkpoint


class DownDatabase:
    async def call(self, fn: Any, *args: Any) -> Any:
        raise DatabaseUnavailable("server gone")


def test_alarm_whose_name_cannot_be_looked_up_is_left_to_the_next_sweep() -> None:
    """The stream's cache lacks the name and the database is down: the alarm is not
    emitted nameless (that would be a refusal), and the next sweep delivers it."""
    emitted: list[Alarm] = []

    async def scenario() -> None:
        intake = Intake(emitted.append, DownDatabase())  # type: ignore[arg-type]
        intake.on_batch([RowChange("STATUS_PROCESS", {"process_id": 9, "alarma": 0},
                                   {"process_id": 9, "alarma": 1})], Checkpoint("b.1", 4))
        await asyncio.sleep(0.01)
        assert emitted == [] and not intake.tracker.is_active(9)
        assert intake.on_sweep([(9, "worker")], intake.sweep_started(), Source.SWEEP) == [9]

    asyncio.run(scenario())
    assert [(a.process_id, a.process_name) for a in emitted] == [(9, "worker")]


def test_sweep_row_without_a_name_is_delivered_as_unknown_at_once() -> None:
    """The sweep's LEFT JOIN already says PROCESE has no such id: no extra lookup."""
    emitted: list[Alarm] = []

    async def scenario() -> None:
        intake = Intake(emitted.append, DownDatabase())  # type: ignore[arg-type]
        assert intake.on_sweep([(7, None)], intake.sweep_started(), Source.SWEEP) == [7]

    asyncio.run(scenario())
    assert [(a.process_id, a.process_name) for a in emitted] == [(7, None)]
