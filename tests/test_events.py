"""The Observers fan-out: every listener hears every step and notice, a broken listener
does not stop the others, and conditions are reported on their edges only."""

from __future__ import annotations

import time

from reactor.events import Condition, Happening, Notice, Observers, Step


class Recorder:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.notices: list[Notice] = []

    def on_step(self, step: Step) -> None:
        self.steps.append(step)

    def on_notice(self, notice: Notice) -> None:
        self.notices.append(notice)


class Broken:
    def on_step(self, step: Step) -> None:
        raise RuntimeError("listener bug")

    def on_notice(self, notice: Notice) -> None:
        raise RuntimeError("listener bug")


def _step(name: str) -> Step:
    return Step(time.time(), 1, 7, "web", "web.service", name, "binlog", 1.0)


def test_a_broken_listener_does_not_keep_the_others_from_hearing() -> None:
    first, last = Recorder(), Recorder()
    observers = Observers([first, Broken(), last])
    observers.step(_step("detected"))
    observers.happened(Happening.SWEEP_CAUGHT, "2 alarm(s)", [3, 4])
    assert [s.step for s in last.steps] == ["detected"]
    assert last.notices[0].process_ids == (3, 4) and first.notices == last.notices


def test_a_condition_is_reported_when_it_begins_and_when_it_ends_once_each() -> None:
    heard = Recorder()
    observers = Observers([heard])
    assert observers.begin(Condition.STREAM_DOWN, "server gone")
    assert not observers.begin(Condition.STREAM_DOWN, "still gone")
    assert Condition.STREAM_DOWN in observers.active
    assert observers.end(Condition.STREAM_DOWN, "reconnected")
    assert not observers.end(Condition.STREAM_DOWN)
    assert not observers.end(Condition.BUS_DOWN)
    assert [(n.kind, n.active, n.detail) for n in heard.notices] == [
        (Condition.STREAM_DOWN, True, "server gone"),
        (Condition.STREAM_DOWN, False, "reconnected"),
    ]
    assert observers.active == {}
