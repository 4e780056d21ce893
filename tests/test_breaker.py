"""The circuit breaker (pure: `now` is any number)."""

from __future__ import annotations

import re
import time

from reactor.actions.breaker import Breaker, Event, State, transition
from reactor.actions.circuit import hhmmss

LIMITS = {"max_failures": 3, "reset_time": 100.0}


def step(b: Breaker, event: Event, now: float) -> Breaker:
    return transition(b, event, now, **LIMITS)  # type: ignore[arg-type]


def test_opens_after_max_failures_in_a_row() -> None:
    b = Breaker()
    for now in (1, 2):
        b = step(b, Event.FAILURE, now)
        assert b.state is State.CLOSED
    b = step(b, Event.FAILURE, 3)
    assert (b.state, b.failures, b.until) == (State.OPEN, 3, 103)


def test_success_resets_the_count() -> None:
    b = step(step(Breaker(), Event.FAILURE, 1), Event.FAILURE, 2)
    b = step(b, Event.SUCCESS, 3)
    assert b == Breaker()
    assert step(b, Event.FAILURE, 4).state is State.CLOSED


def test_open_blocks_alarms_until_the_reset_time_then_half_opens() -> None:
    b = Breaker(State.OPEN, 3, 100.0)
    assert step(b, Event.ALARM, 99.9) == b and not b.allows
    trial = step(b, Event.ALARM, 100.0)
    assert trial.state is State.HALF_OPEN and trial.allows


def test_trial_result_closes_or_reopens() -> None:
    trial = Breaker(State.HALF_OPEN, 3, 100.0)
    assert step(trial, Event.SUCCESS, 150) == Breaker()
    again = step(trial, Event.FAILURE, 150)
    assert (again.state, again.until) == (State.OPEN, 250)


def test_late_failure_while_open_keeps_it_open() -> None:
    b = step(Breaker(State.OPEN, 3, 100.0), Event.FAILURE, 50)
    assert b.state is State.OPEN and b.until == 150


def test_round_trip_through_json() -> None:
    b = Breaker(State.OPEN, 4, 123.5)
    assert Breaker.from_json(b.to_json()) == b
    assert Breaker.from_json({"state": "bogus"}) == Breaker()
    # the object older versions wrote still reads
    assert Breaker.from_json({"state": "open", "failures": 3, "until": 5.0}) == \
        Breaker(State.OPEN, 3, 5.0)
    assert Breaker.from_json(["open", 3]) == Breaker()
    assert Breaker(State.CLOSED, 2).to_json() == 2 and Breaker.from_json(2) == \
        Breaker(State.CLOSED, 2)


def test_note_times_carry_the_date_when_far_from_now() -> None:
    """`breaker open until 09:30:00` is ambiguous after a circuit_reset_time of days."""
    assert re.fullmatch(r"\d\d:\d\d:\d\d", hhmmss(time.time() + 60))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", hhmmss(time.time() + 3 * 86400))
