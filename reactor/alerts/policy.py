"""Which steps and notices are alerts, at which severity, and what ends them (pure).

    step breaker_open                    -> critical  breaker_open     (resolved by breaker_closed)
    step cycle_failed                    -> major     cycle_failed     (resolved by health_ok,
                                                                         cleared)
    step refused                         -> warning   refused
    step cleared (after a restart)       -> info      restarted
    notice POLLING begins                -> critical  polling          (resolved when it ends)
    notice STREAM_DOWN / DATABASE_DOWN /
           BUS_DOWN lasting unreachable_after -> critical             (resolved when it ends)
    notice SWEEP_CAUGHT / POSITION_LOST /
           EVENT_UNREADABLE              -> warning

`from_step` and `from_notice` turn one record into actions for the dispatcher: `Fire` an
alert now, `Arm` one that fires at `due` unless it is resolved first (a condition must last
`[alerts] unreachable_after`), `Resolve` whatever fires under a key. Every other step
(detected, restart_issued, ...) gives nothing, at the cost of one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reactor.alerts.model import Alert, Severity, alert_key
from reactor.events import Condition, Happening, Notice, Step


@dataclass(frozen=True, slots=True)
class Event:
    """How one kind of alert reads: alone, many at once, and once over."""

    severity: Severity
    one: str  # "{process} failed to restart"
    many: str  # "{n} processes failed to restart"
    over: str = ""  # resolved, alone: "{process} restarted"
    over_many: str = ""  # resolved, many: "{n} processes restarted"
    stateful: bool = False  # a recovery resolves it


EVENTS: dict[str, Event] = {
    "breaker_open": Event(
        Severity.CRITICAL, "breaker opened for {process}: not restarted until it resets",
        "{n} processes' breakers opened: not restarted until they reset",
        "breaker closed for {process}", "{n} breakers closed", stateful=True),
    "cycle_failed": Event(
        Severity.MAJOR, "{process} failed to restart", "{n} processes failed to restart",
        "{process} restarted", "{n} processes restarted", stateful=True),
    "refused": Event(Severity.WARNING, "alarm refused for {process}", "{n} alarms refused"),
    "restarted": Event(Severity.INFO, "{process} restarted after an alarm",
                       "{n} processes restarted after an alarm"),
    "polling": Event(
        Severity.CRITICAL, "binlog stream lost: reactor fell back to polling",
        "binlog stream lost ({n} times)", "binlog stream back",
        "binlog stream back", stateful=True),
    "stream_down": Event(
        Severity.CRITICAL, "binlog stream down for more than {after}",
        "binlog stream down ({n} times)", "binlog stream connected again",
        "binlog stream connected again", stateful=True),
    "database_down": Event(
        Severity.CRITICAL, "database unreachable for more than {after}",
        "database unreachable ({n} times)", "database reachable again",
        "database reachable again", stateful=True),
    "bus_down": Event(
        Severity.CRITICAL, "D-Bus (systemd) unreachable for more than {after}",
        "D-Bus (systemd) unreachable ({n} times)", "D-Bus reachable again",
        "D-Bus reachable again", stateful=True),
    "sweep_caught": Event(
        Severity.WARNING, "the sweep found alarms the binlog stream never delivered",
        "the sweep found alarms the binlog stream never delivered ({n} times)"),
    "position_lost": Event(
        Severity.WARNING, "binlog position purged or impossible (error 1236): resynchronised "
        "by a sweep", "binlog position lost {n} times (error 1236)"),
    "event_unreadable": Event(
        Severity.WARNING, "the binlog stream met an event it cannot read",
        "the binlog stream met {n} events it cannot read"),
    "fleet_unrecorded": Event(
        Severity.WARNING, "this reactor's REACTOR_FLEET row cannot be written: `reactor "
        "fleet` does not show it", "fleet row not written ({n} times)"),
    "test": Event(Severity.INFO, "test alert from `reactor alert test`",
                  "{n} test alerts"),
}
DELAYED = (Condition.STREAM_DOWN, Condition.DATABASE_DOWN, Condition.BUS_DOWN)
IDS_SHOWN = 50  # process ids listed in a sweep_caught note


@dataclass(frozen=True, slots=True)
class Fire:
    alert: Alert


@dataclass(frozen=True, slots=True)
class Arm:
    """Fire `alert` at `due` unless `Resolve(alert.key)` comes first."""

    alert: Alert
    due: float


@dataclass(frozen=True, slots=True)
class Resolve:
    key: str
    at: float
    resolution: str


Action = Fire | Arm | Resolve


def seconds(value: float) -> str:
    return f"{value:g} s"


def make(event: str, host: str, at: float, note: str = "", *, process_id: int | None = None,
         process_name: str | None = None, unit: str | None = None, after: float = 0.0) -> Alert:
    """An alert of a catalogued event, its summary filled in."""
    kind = EVENTS[event]
    process = process_name or ("" if process_id is None else f"process {process_id}")
    return Alert(event=event, severity=kind.severity, host=host,
                 summary=kind.one.format(process=process, after=seconds(after)), at=at,
                 note=note, process_id=process_id, process_name=process_name, unit=unit,
                 stateful=kind.stateful)


def _of_step(event: str, step: Step, host: str) -> Alert:
    return make(event, host, step.at, step.detail, process_id=step.process_id,
                process_name=step.process_name, unit=step.unit)


def _breaker_open(step: Step, host: str) -> list[Action]:
    return [Fire(_of_step("breaker_open", step, host))]


def _breaker_closed(step: Step, host: str) -> list[Action]:
    return [Resolve(alert_key("breaker_open", step.process_id), step.at,
                    f"breaker closed: {step.detail or 'trial cycle succeeded'}")]


def _cycle_failed(step: Step, host: str) -> list[Action]:
    return [Fire(_of_step("cycle_failed", step, host))]


def _health_ok(step: Step, host: str) -> list[Action]:
    return [Resolve(alert_key("cycle_failed", step.process_id), step.at,
                    f"restarted and healthy ({step.detail})" if step.detail
                    else "restarted and healthy")]


def _cleared(step: Step, host: str) -> list[Action]:
    return [Resolve(alert_key("cycle_failed", step.process_id), step.at,
                    "restarted, alarm cleared"),
            Fire(_of_step("restarted", step, host))]


def _refused(step: Step, host: str) -> list[Action]:
    return [Fire(_of_step("refused", step, host))]


STEPS: dict[str, Callable[[Step, str], list[Action]]] = {
    "breaker_open": _breaker_open,
    "breaker_closed": _breaker_closed,
    "cycle_failed": _cycle_failed,
    "health_ok": _health_ok,
    "cleared": _cleared,
    "refused": _refused,
}


def from_step(step: Step, host: str) -> list[Action]:
    handler = STEPS.get(step.step)
    return handler(step, host) if handler is not None else []


def from_notice(notice: Notice, host: str, unreachable_after: float) -> list[Action]:
    kind = notice.kind
    event = kind.value
    if isinstance(kind, Condition):
        if not notice.active:
            return [Resolve(alert_key(event, None), notice.at, notice.detail or "over")]
        alert = make(event, host, notice.at, notice.detail, after=unreachable_after)
        if kind in DELAYED:
            return [Arm(alert, notice.at + unreachable_after)]
        return [Fire(alert)]
    note = notice.detail
    if kind is Happening.SWEEP_CAUGHT and notice.process_ids:
        ids = notice.process_ids
        shown = ", ".join(map(str, ids[:IDS_SHOWN])) + (" ..." if len(ids) > IDS_SHOWN else "")
        note = f"{note} (process ids {shown})"
    return [Fire(make(event, host, notice.at, note))]
