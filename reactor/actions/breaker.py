"""Pure: the per-process circuit breaker (the seed's: open after `max_restart_failures`
failed cycles, reset after `circuit_reset_time`), with a half-open trial.

    CLOSED --N failures--> OPEN --reset time passed, an alarm--> HALF_OPEN
    HALF_OPEN --trial succeeds--> CLOSED        HALF_OPEN --trial fails--> OPEN

Times are wall-clock seconds (time.time) so that the state survives a restart of the
reactor in the state file; the caller passes `now`, tests pass any number.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class State(StrEnum):
    CLOSED = "closed"  # restarts allowed; counting failed cycles
    OPEN = "open"  # restarts blocked until `until`
    HALF_OPEN = "half_open"  # one trial cycle running; its result closes or reopens


class Event(StrEnum):
    ALARM = "alarm"  # a cycle wants to start
    SUCCESS = "success"  # the cycle ended healthy
    FAILURE = "failure"  # the cycle ended without a healthy process


@dataclass(frozen=True, slots=True)
class Breaker:
    state: State = State.CLOSED
    failures: int = 0  # failed cycles in a row
    until: float = 0.0  # OPEN: when a trial becomes allowed

    @property
    def allows(self) -> bool:
        """Whether the cycle that produced this state may act."""
        return self.state is not State.OPEN

    def to_json(self) -> int | list[Any]:
        """A closed breaker: its failures in a row (a number); another: [state, failures,
        until]. Small, because a storm can leave tens of thousands of breakers in the state
        file, and in its memory."""
        if self.state is State.CLOSED:
            return self.failures
        return [self.state.value, self.failures, self.until]

    @classmethod
    def from_json(cls, raw: Any) -> Breaker:
        """From to_json's forms, or from the object older versions wrote."""
        try:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return cls(State.CLOSED, raw)
            if isinstance(raw, dict):
                raw = [raw["state"], raw["failures"], raw["until"]]
            state, failures, until = raw
            return cls(State(state), int(failures), float(until))
        except (KeyError, ValueError, TypeError):
            return cls()


def transition(b: Breaker, event: Event, now: float, *, max_failures: int,
               reset_time: float) -> Breaker:
    """The one transition function. ALARM on an OPEN breaker whose time has come moves it to
    HALF_OPEN (the trial); on one still open it stays OPEN (the cycle must not act)."""
    match b.state, event:
        case State.OPEN, Event.ALARM:
            return replace(b, state=State.HALF_OPEN) if now >= b.until else b
        case _, Event.ALARM:
            return b
        case _, Event.SUCCESS:
            return Breaker()
        case State.HALF_OPEN, Event.FAILURE:
            return Breaker(State.OPEN, b.failures + 1, now + reset_time)
        case State.CLOSED, Event.FAILURE:
            failures = b.failures + 1
            if failures >= max_failures:
                return Breaker(State.OPEN, failures, now + reset_time)
            return Breaker(State.CLOSED, failures)
        case State.OPEN, Event.FAILURE:
            # a cycle that started before the breaker opened finished badly: stay open
            return Breaker(State.OPEN, b.failures + 1, max(b.until, now + reset_time))
    raise AssertionError(f"unhandled breaker transition {b.state} + {event}")
