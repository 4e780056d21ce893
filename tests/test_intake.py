"""Intake (pure logic around the tracker; the database is a stand-in that answers or fails)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from reactor.errors import DatabaseUnavailable
from reactor.events import Alarm, AlarmaChange, NameChange, RowChange, Source
from reactor.sources.intake import Intake
from reactor.storage import queries
from reactor.storage.statefile import Checkpoint


class FakeDatabase:
    """Answers fetch_names_of / fetch_statuses from dicts; `down` makes every call fail;
    `gate` holds every call until it is set."""

    def __init__(self, names: dict[int, str] | None = None,
                 alarms: dict[int, int] | None = None,
                 hosts: dict[int, str] | None = None) -> None:
        self.names = names or {}
        self.alarms = alarms or {}
        self.hosts = hosts or {}
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def call(self, fn: Any, *args: Any) -> Any:
        await self.gate.wait()
        if self.down:
            raise DatabaseUnavailable("server gone")
        pids = args[0]
        if fn is queries.fetch_processes_of:
            return {pid: (self.names[pid], self.hosts.get(pid)) for pid in pids
                    if pid in self.names}
        if fn is queries.fetch_statuses:
            return {pid: (self.alarms.get(pid, 0), self.names.get(pid), self.hosts.get(pid))
                    for pid in pids}
        raise AssertionError(fn)


def raised(pid: int) -> list[RowChange]:
    return [AlarmaChange(pid, 0, 1)]


def renamed(pid: int, name: str) -> list[RowChange]:
    return [NameChange(pid, name)]


def running(intake: Intake, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run scenario() while the intake owns its lookups."""
    async def main() -> None:
        task = asyncio.create_task(intake.run())
        await asyncio.sleep(0)
        try:
            await scenario()
        finally:
            intake.close()
            await task

    asyncio.run(main())


async def settle_down() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_alarm_whose_name_cannot_be_looked_up_asks_for_a_prompt_sweep() -> None:
    """The stream's cache lacks the name and the database is down: the alarm is not
    emitted nameless (that would be a refusal), the owner is asked for a sweep soon, and
    that sweep hands it over as a retry (not as an alarm the stream missed)."""
    emitted: list[Alarm] = []
    trouble: list[int] = []
    db = FakeDatabase()
    db.down = True
    intake = Intake(emitted.append, db)  # type: ignore[arg-type]
    intake.on_trouble = lambda: trouble.append(1)

    async def scenario() -> None:
        intake.on_batch(raised(9), Checkpoint("b.1", 4))
        await settle_down()
        assert emitted == [] and trouble == [1]
        assert intake.on_sweep([(9, "worker")], intake.sweep_started(), Source.SWEEP) == [9]
        assert intake.again == {9}

    running(intake, scenario)
    assert [(a.process_id, a.process_name) for a in emitted] == [(9, "worker")]


def test_sweep_row_without_a_name_is_delivered_as_unknown_at_once() -> None:
    """The sweep's LEFT JOIN already says PROCESE has no such id: no extra lookup."""
    emitted: list[Alarm] = []
    intake = Intake(emitted.append, FakeDatabase())  # type: ignore[arg-type]
    assert intake.on_sweep([(7, None)], intake.sweep_started(), Source.SWEEP) == [7]
    assert intake.again == set()
    assert [(a.process_id, a.process_name) for a in emitted] == [(7, None)]


def test_a_sweep_ahead_of_the_stream_then_a_reset_prints_the_alarm_once() -> None:
    """The flaky watch test's sequence: a sweep delivers an alarm whose UPDATE the stream
    has not decoded yet; the row is reset and a later sweep finds nothing; then the stream
    reaches the UPDATE. Its 0->1 is the alarm already delivered, not a second one."""
    emitted: list[Alarm] = []
    intake = Intake(emitted.append)
    rows = [(10000, "bulk-10000")]
    at = Checkpoint("binlog.000001", 2420726)  # the end of the UPDATE's transaction
    assert intake.on_sweep(rows, intake.sweep_started(), Source.SWEEP,
                           Checkpoint("binlog.000001", 2420726)) == [10000]
    assert intake.on_sweep([], intake.sweep_started(), Source.SWEEP,
                           Checkpoint("binlog.000001", 2491306)) == []
    intake.on_batch(raised(10000), at)
    intake.on_batch([AlarmaChange(10000, 1, 0)], Checkpoint("binlog.000001", 2491306))
    intake.on_batch(raised(10000), Checkpoint("binlog.000001", 2561886))  # a new one
    assert [(a.process_id, a.source) for a in emitted] == [
        (10000, Source.SWEEP), (10000, Source.BINLOG)]
    assert emitted[1].position == "binlog.000001:2561886"


def test_a_checkpoint_waits_for_the_lookups_of_earlier_transactions() -> None:
    """While a name lookup is in flight, no later position is declared safe (`reactor
    watch --state-file` must not checkpoint a row it has not printed yet)."""
    safe: list[Checkpoint] = []
    db = FakeDatabase(names={9: "worker"})
    db.gate.clear()
    intake = Intake(lambda alarm: None, db)  # type: ignore[arg-type]
    intake.on_safe = safe.append

    async def scenario() -> None:
        intake.on_batch([], Checkpoint("b.1", 10))
        intake.on_batch(raised(9), Checkpoint("b.1", 20))  # 9's name is not cached
        intake.on_batch([], Checkpoint("b.1", 30))
        await settle_down()
        assert safe == [Checkpoint("b.1", 10)]
        db.gate.set()
        await settle_down()
        assert safe == [Checkpoint("b.1", 10), Checkpoint("b.1", 30)]

    running(intake, scenario)


def test_a_lookup_cancelled_at_stop_declares_nothing_safe() -> None:
    safe: list[Checkpoint] = []
    db = FakeDatabase(names={9: "worker"})
    db.gate.clear()
    emitted: list[Alarm] = []
    intake = Intake(emitted.append, db)  # type: ignore[arg-type]
    intake.on_safe = safe.append

    async def scenario() -> None:
        intake.on_batch([], Checkpoint("b.1", 10))
        intake.on_batch(raised(9), Checkpoint("b.1", 20))
        await settle_down()

    running(intake, scenario)
    assert safe == [Checkpoint("b.1", 10)] and emitted == []


def test_an_unchanged_refusal_is_left_alone_by_sweeps() -> None:
    """A refused alarm is not handed over at every sweep (which would rewrite its note and
    audit rows) while its name and the config are those it was refused with."""
    emitted: list[Alarm] = []
    intake = Intake(emitted.append, FakeDatabase())  # type: ignore[arg-type]
    assert intake.on_sweep([(5, "bad name")], intake.sweep_started(), Source.SWEEP) == [5]
    intake.refused(5, "bad name")
    assert intake.on_sweep([(5, "bad name")], intake.sweep_started(), Source.SWEEP) == []
    assert intake.on_sweep([(5, "good")], intake.sweep_started(), Source.SWEEP) == [5]
    assert intake.again == {5}


def test_a_refusal_is_looked_at_again_after_a_reload() -> None:
    emitted: list[Alarm] = []
    intake = Intake(emitted.append, FakeDatabase())  # type: ignore[arg-type]
    intake.on_sweep([(5, "web")], intake.sweep_started(), Source.SWEEP)
    intake.refused(5, "web")
    assert intake.on_sweep([(5, "web")], intake.sweep_started(), Source.SWEEP) == []
    assert intake.reconfigured() == 1
    assert intake.on_sweep([(5, "web")], intake.sweep_started(), Source.SWEEP) == [5]


def refused_then_renamed(alarma: int) -> list[Alarm]:
    """Process 5 alarmed under a bad name and refused; then the stream shows its PROCESE row
    renamed to "web", while STATUS_PROCESS.alarma is `alarma`. What the intake emitted."""
    emitted: list[Alarm] = []
    db = FakeDatabase(names={5: "web"}, alarms={5: alarma})
    intake = Intake(emitted.append, db)  # type: ignore[arg-type]

    async def scenario() -> None:
        intake.on_batch(raised(5), Checkpoint("b.1", 10))
        intake.refused(5, "bad name")
        intake.on_batch(renamed(5, "web"), Checkpoint("b.1", 20))
        await settle_down()

    intake.names[5] = "bad name"
    running(intake, scenario)
    return emitted


def test_a_refused_alarm_heals_when_its_procese_row_changes_in_the_stream() -> None:
    """The rename is seen in the stream: the alarm is checked (still set?) and handed over
    again with the new name, without anyone touching alarma."""
    emitted = refused_then_renamed(alarma=1)
    assert [(a.process_id, a.process_name) for a in emitted] == [(5, "bad name"), (5, "web")]


def test_a_rename_of_a_process_whose_alarm_was_reset_hands_nothing_over() -> None:
    assert [a.process_id for a in refused_then_renamed(alarma=0)] == [5]
