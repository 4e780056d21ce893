"""systemd over D-Bus (dbus-fast, low-level messages: no introspection round trips).

    await sd.connect()                    AddMatch(JobRemoved) + Manager.Subscribe()
    result = await sd.restart(unit)       RestartUnit, then the job's JobRemoved result
    state = await sd.unit_state(unit)     ActiveState, SubState, MainPID, NRestarts, ...

Jobs: the JobRemoved signal can arrive before RestartUnit's reply, so results are kept by
job path from either side; signals for jobs that are not ours are dropped. The message
handler never returns a truthy value (that would swallow method replies).

Error handling: every call runs under `[systemd] call_timeout` and every job wait under
`job_timeout`. D-Bus errors are mapped here: NoSuchUnit -> NoSuchUnit (permanent); access
denied (polkit) -> AccessDenied; other refusals (masked, bad setting) -> UnitOperationFailed
(permanent); a
timeout -> CallTimeout and a lost or unopenable connection -> BusUnavailable (transient).
After a loss the next call reconnects, and subscribes again.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from loguru import logger

from reactor.config import SystemdConfig
from reactor.errors import (
    AccessDenied,
    BusUnavailable,
    CallTimeout,
    JobTimeout,
    NoSuchUnit,
    ReactorError,
    UnitOperationFailed,
)
from reactor.events import Condition, Observers

SD = "org.freedesktop.systemd1"
SD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPS = "org.freedesktop.DBus.Properties"
JOB_MATCH = (f"type='signal',sender='{SD}',path='{SD_PATH}',interface='{MANAGER}',"
             "member='JobRemoved'")
_UNIT_PROPS = ((UNIT_IFACE, "LoadState"), (UNIT_IFACE, "ActiveState"), (UNIT_IFACE, "SubState"))
_SERVICE_PROPS = ((SERVICE_IFACE, "Result"), (SERVICE_IFACE, "MainPID"),
                  (SERVICE_IFACE, "NRestarts"), (SERVICE_IFACE, "ExecMainStartTimestamp"))
EARLY_RESULTS_KEPT = 4096
# dbus-fast tears the connection down when a send hits EAGAIN (a full socket buffer;
# upstream python-dbus-next#153, inherited by dbus-fast). A Unix socket buffer holds a few
# hundred small messages, which a storm of restarts and health checks can queue: calls
# in flight are bounded well below that. Calls that act on a unit (RestartUnit, StartUnit,
# KillUnit, ResetFailedUnit) and calls that only read (Get) have a bound each: in a storm,
# the health reads of the cycles that just restarted must not hold back the next restarts,
# or systemd's job queue runs below max_concurrent_restarts (measured: 56 jobs in flight
# on average instead of 64, 0.88x of a bare client's restarts per second).
MAX_CALLS_IN_FLIGHT = 64  # per kind of call

# only NoSuchUnit says for certain that a unit does not exist; LoadFailed is a unit in an
# unexpected load state (it may well exist): a refusal like the others
_NOT_FOUND = {f"{SD}.NoSuchUnit"}
_DENIED = {
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
}
_TRANSIENT = {
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.LimitsExceeded",
}


def unit_path(unit: str) -> str:
    """The unit's object path, built locally (saves a GetUnit round trip): bytes outside
    [A-Za-z0-9] become _xx."""
    out = []
    for byte in unit.encode():
        ch = chr(byte)
        out.append(ch if ch.isascii() and ch.isalnum() else f"_{byte:02x}")
    return "/org/freedesktop/systemd1/unit/" + "".join(out)


def map_error(reply: Message, what: str) -> Exception:
    """An ERROR reply -> the reactor's own exception."""
    name = reply.error_name or "unknown"
    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
    message = f"{what}: {text} ({name})"
    if name in _NOT_FOUND:
        return NoSuchUnit(message)
    if name in _DENIED:
        return AccessDenied(message)
    if name in _TRANSIENT:
        return CallTimeout(message) if "Timeout" in name or "NoReply" in name else \
            BusUnavailable(message)
    return UnitOperationFailed(message)


@dataclass(frozen=True, slots=True)
class UnitState:
    load_state: str  # loaded, not-found, masked, error ...
    active_state: str  # active, activating, deactivating, inactive, failed, reloading
    sub_state: str
    result: str  # Service.Result: success, exit-code, start-limit-hit ...
    main_pid: int
    n_restarts: int
    exec_main_start_us: int  # ExecMainStartTimestamp, µs since the epoch; 0 = never

    @property
    def exists(self) -> bool:
        return self.load_state not in ("not-found", "")


@dataclass(frozen=True, slots=True)
class JobResult:
    result: str  # done, canceled, timeout, failed, dependency, skipped
    elapsed_ms: float


class Systemd:
    def __init__(self, cfg: SystemdConfig, observers: Observers | None = None) -> None:
        self.cfg = cfg
        self.observers = observers if observers is not None else Observers()
        self._bus: MessageBus | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._early: OrderedDict[str, str] = OrderedDict()
        self._acting = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)  # calls that act on a unit
        self._reading = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)  # property reads
        self.calls: collections.Counter[str] = collections.Counter()  # sent, per member
        # one task per connection, waiting for its end; a lost connection's ends with it
        self._watchers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ connection

    def _bus_args(self) -> dict[str, Any]:
        bus = self.cfg.bus
        if bus == "system":
            return {"bus_type": BusType.SYSTEM}
        if bus == "user":
            address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
            if not address:
                raise BusUnavailable("[systemd] bus = user, but DBUS_SESSION_BUS_ADDRESS is unset")
            return {"bus_address": address, "bus_type": BusType.SESSION}
        return {"bus_address": bus, "bus_type": BusType.SESSION}

    def describe(self) -> str:
        return self.cfg.bus

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    async def connect(self) -> None:
        """Open the bus, subscribe to job results. Raises BusUnavailable."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.connected:
                return
            self._drop("reconnecting")
            try:
                async with asyncio.timeout(self.cfg.call_timeout):
                    bus = await MessageBus(**self._bus_args()).connect()
            except BusUnavailable as exc:
                self.observers.begin(Condition.BUS_DOWN, str(exc))
                raise
            except (TimeoutError, OSError, EOFError, ValueError) as exc:
                why = f"cannot connect to the {self.cfg.bus} bus: {exc or type(exc).__name__}"
                self.observers.begin(Condition.BUS_DOWN, why)
                raise BusUnavailable(why) from exc
            except Exception as exc:  # dbus-fast auth and protocol errors have no common base
                why = f"cannot connect to the {self.cfg.bus} bus: {exc}"
                self.observers.begin(Condition.BUS_DOWN, why)
                raise BusUnavailable(why) from exc
            bus.add_message_handler(self._on_message)
            # the bus is used only once job results are sure to reach us
            try:
                await self._send(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", "AddMatch", "s", [JOB_MATCH])
                await self._send(bus, SD, SD_PATH, MANAGER, "Subscribe")
            except Exception as exc:  # whatever failed, this connection is not usable
                bus.disconnect()
                raise BusUnavailable(f"systemd does not answer on the {self.cfg.bus} bus: "
                                     f"{exc}") from exc
            self._bus = bus
            # owned here: close() ends and awaits them
            watcher = asyncio.get_running_loop().create_task(self._watch(bus),
                                                             name="bus-watcher")
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            if Condition.BUS_DOWN in self.observers.active:
                self.observers.end(Condition.BUS_DOWN, f"connected to the {self.cfg.bus} bus")

    async def _watch(self, bus: MessageBus) -> None:
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - any end of the connection is a loss
            reason = str(exc) or type(exc).__name__
        else:
            reason = "disconnected"
        if self._bus is bus:
            logger.warning("D-Bus connection lost ({}); will reconnect on next use", reason)
            self._lose(reason)

    def _lose(self, reason: str) -> None:
        """The connection in use broke: the bus is down until a connect succeeds."""
        self.observers.begin(Condition.BUS_DOWN, f"D-Bus connection lost: {reason}")
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        bus, self._bus = self._bus, None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(BusUnavailable(f"D-Bus connection lost: {reason}"))
        self._waiting.clear()
        self._early.clear()
        if bus is not None:
            try:
                bus.disconnect()
            except Exception:  # noqa: BLE001 - already broken
                pass

    async def close(self) -> None:
        """Disconnect, and end the tasks that watch the connection."""
        self._drop("closed")
        watchers = set(self._watchers)
        for watcher in watchers:
            watcher.cancel()
        if watchers:
            await asyncio.wait(watchers)

    def _on_message(self, msg: Message) -> None:
        """Every incoming message passes here; only JobRemoved is ours. Returns None always."""
        if msg.message_type is not MessageType.SIGNAL or msg.member != "JobRemoved":
            return None
        try:
            _, job, _unit, result = msg.body
        except ValueError:
            return None
        fut = self._waiting.pop(job, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
        else:  # not ours, or ours with its reply still on the way
            self._early[job] = result
            while len(self._early) > EARLY_RESULTS_KEPT:
                self._early.popitem(last=False)
        return None

    # ------------------------------------------------------------------ calls

    async def _call_raw(self, dest: str, path: str, iface: str, member: str,
                        signature: str = "", body: list[Any] | None = None, *,
                        before_send: Callable[[], None] | None = None) -> Message:
        if not self.connected:
            await self.connect()
        assert self._bus is not None
        return await self._send(self._bus, dest, path, iface, member, signature, body,
                                before_send)

    async def _send(self, bus: MessageBus, dest: str, path: str, iface: str, member: str,
                    signature: str = "", body: list[Any] | None = None,
                    before_send: Callable[[], None] | None = None) -> Message:
        """One call on `bus`, under the call timeout and the in-flight bound of its kind;
        before_send runs when the message is about to be written (the restart is
        'issued')."""
        msg = Message(destination=dest, path=path, interface=iface, member=member,
                      signature=signature, body=body or [])
        bound = self._reading if iface == PROPS else self._acting
        try:
            # the timeout starts once the call may be sent: waiting for the in-flight bound
            # (a storm) is not the bus being slow
            async with bound, asyncio.timeout(self.cfg.call_timeout):
                if before_send is not None:
                    before_send()
                self.calls[member] += 1
                reply = await bus.call(msg)
        except TimeoutError:
            raise CallTimeout(f"{member}: no answer within {self.cfg.call_timeout:g} s") from None
        except (OSError, EOFError) as exc:
            if bus is self._bus:
                self._lose(str(exc))
            raise BusUnavailable(f"{member}: {exc}") from exc
        except Exception as exc:  # dbus-fast raises plain Exceptions on a dead connection
            if not bus.connected:
                if bus is self._bus:
                    self._lose(str(exc))
                raise BusUnavailable(f"{member}: {exc}") from exc
            raise
        if reply is None:
            raise BusUnavailable(f"{member}: no reply (connection closed)")
        if reply.message_type is MessageType.ERROR:
            raise map_error(reply, member)
        return reply

    async def _manager(self, member: str, signature: str = "", *args: Any,
                       before_send: Callable[[], None] | None = None) -> Message:
        return await self._call_raw(SD, SD_PATH, MANAGER, member, signature, list(args),
                                    before_send=before_send)

    async def _job(self, member: str, unit: str, *, on_sent: Callable[[], None] | None = None,
                   mode: str = "replace") -> JobResult:
        """Queue a job and wait for its JobRemoved result."""
        start = time.monotonic()
        reply = await self._manager(member, "ss", unit, mode, before_send=on_sent)
        job = str(reply.body[0])
        result = self._early.pop(job, None)
        if result is None:
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._waiting[job] = fut
            try:
                async with asyncio.timeout(self.cfg.job_timeout):
                    result = await fut
            except TimeoutError:
                raise JobTimeout(f"{member} {unit}: job {job} not finished after "
                                  f"{self.cfg.job_timeout:g} s") from None
            finally:
                self._waiting.pop(job, None)
        return JobResult(result, (time.monotonic() - start) * 1000)

    async def restart(self, unit: str, on_sent: Callable[[], None] | None = None) -> JobResult:
        return await self._job("RestartUnit", unit, on_sent=on_sent)

    async def start(self, unit: str) -> JobResult:
        return await self._job("StartUnit", unit)

    async def kill(self, unit: str, signal: int) -> None:
        """Signal every process of the unit (KillUnit, who = all)."""
        await self._manager("KillUnit", "ssi", unit, "all", signal)

    async def reset_failed(self, unit: str) -> None:
        await self._manager("ResetFailedUnit", "s", unit)

    async def _get(self, unit: str, iface: str, prop: str) -> Any:
        reply = await self._call_raw(SD, unit_path(unit), PROPS, "Get", "ss", [iface, prop])
        return reply.body[0].value

    async def _props(self, unit: str, wanted: tuple[tuple[str, str], ...]) -> list[Any]:
        """Several properties with pipelined Gets: about one round trip, and a tenth of the
        work GetAll costs systemd (it renders every property of the interface)."""
        return list(await asyncio.gather(*(self._get(unit, i, p) for i, p in wanted)))

    async def ran_to_success(self, unit: str) -> bool:
        """A Type=oneshot service whose last run succeeded: inactive once it has run (without
        RemainAfterExit), and that is its healthy state."""
        if not unit.endswith(".service"):
            return False
        active, kind, result = await self._props(unit, ((UNIT_IFACE, "ActiveState"),
                                                        (SERVICE_IFACE, "Type"),
                                                        (SERVICE_IFACE, "Result")))
        return (str(active), str(kind), str(result)) == ("inactive", "oneshot", "success")

    async def unit_states(self, units: list[str]) -> dict[str, UnitState | ReactorError]:
        """unit_state of many units at once (concurrent; bounded by the in-flight limit);
        a unit that could not be read maps to its error."""
        answers = await asyncio.gather(*(self.unit_state(u) for u in units),
                                       return_exceptions=True)
        out: dict[str, UnitState | ReactorError] = {}
        for unit, answer in zip(units, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, ReactorError):
                raise answer
            out[unit] = answer
        return out

    async def unit_state(self, unit: str) -> UnitState:
        """The unit's state; for a unit systemd cannot find, load_state is 'not-found'."""
        service = unit.endswith(".service")
        values = await asyncio.gather(
            *(self._get(unit, i, p) for i, p in _UNIT_PROPS + (_SERVICE_PROPS if service else ())),
            return_exceptions=True)
        for value in values[:3]:  # the Unit interface always answers, or the call failed
            if isinstance(value, BaseException):
                raise value
        # Service properties of a unit that is not loaded: errors, read as "unknown"
        svc: list[Any] = [v if not isinstance(v, BaseException) else None for v in values[3:]]
        result, main_pid, n_restarts, started = svc or [None] * 4
        return UnitState(
            load_state=str(values[0]), active_state=str(values[1]), sub_state=str(values[2]),
            result=str(result or ""), main_pid=int(main_pid or 0),
            n_restarts=int(n_restarts or 0), exec_main_start_us=int(started or 0),
        )
