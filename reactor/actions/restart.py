"""The restart strategies of the seed, over D-Bus instead of a shell.

- service: RestartUnit and wait for the job. A failed job is retried once after
  ResetFailedUnit (manual restarts count toward StartLimitBurst); a job that still fails
  or hangs gets the kill fallback: KillUnit SIGKILL, then StartUnit.
- process: for programs that are not units: SIGTERM the processes of that name, SIGKILL
  after stop_timeout, then run start_command.
- auto: service; the process strategy only when systemd answered for certain that the
  unit does not exist (NoSuchUnit), and only for a program whose own [process.NAME]
  section has a start_command ([process.default] cannot have one: config.py).

The process strategy is opt-in and never a guess. auto does not fall back when the
outcome of the restart is unknown (the call timed out, the bus dropped mid-call, the job
did not finish: the restart may still be running in systemd, and a second instance would
follow), nor when systemd refused it (a masked unit, a bad unit file, polkit's "Access
denied"): those are recorded failures, with systemd's reason in the note.

Error handling: returns an Attempt saying what happened for the reactor's own errors;
anything else (a bug) propagates to the pipeline, which records it as a failed cycle.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from reactor.actions import procs
from reactor.actions.systemd import Systemd
from reactor.actions.units import Target
from reactor.errors import (
    BusUnavailable,
    CallTimeout,
    JobTimeout,
    NoSuchUnit,
    ReactorError,
    UnitOperationFailed,
)


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool  # the restart action succeeded (not yet a health verdict)
    method: str  # service, service+reset-failed, kill-fallback, process
    detail: str
    via_unit: bool  # health is judged on the unit (else on the program)


async def restart(target: Target, systemd: Systemd, on_issued: Callable[[], None]) -> Attempt:
    strategy = target.settings.restart_strategy
    if strategy == "process":
        return await _process(target, on_issued, "")
    try:
        return await _service(target, systemd, on_issued)
    except NoSuchUnit as exc:
        if strategy == "auto":  # without a start_command the note names what is missing
            return await _process(target, on_issued, f"no unit {target.unit}")
        return Attempt(False, "service", f"no such unit {target.unit} ({exc})", True)
    except (BusUnavailable, CallTimeout) as exc:  # unknown outcome: never a second instance
        return Attempt(False, "service", f"D-Bus: {exc}", True)
    except UnitOperationFailed as exc:  # refused (AccessDenied included): a decision
        return Attempt(False, "service", str(exc), True)


async def _service(target: Target, systemd: Systemd, on_issued: Callable[[], None]) -> Attempt:
    unit = target.unit
    try:
        job = await systemd.restart(unit, on_sent=on_issued)
    except JobTimeout as exc:
        return await _kill_fallback(unit, systemd, str(exc))
    if job.result == "done":
        return Attempt(True, "service", f"RestartUnit done in {job.elapsed_ms:.0f} ms", True)
    # failed: often the start limit after repeated manual restarts
    await systemd.reset_failed(unit)
    try:
        again = await systemd.restart(unit)
    except JobTimeout as exc:
        return await _kill_fallback(unit, systemd, str(exc))
    if again.result == "done":
        return Attempt(True, "service+reset-failed",
                       f"RestartUnit {job.result}, done after ResetFailedUnit", True)
    return await _kill_fallback(unit, systemd, f"RestartUnit {job.result}, then {again.result}")


async def _kill_fallback(unit: str, systemd: Systemd, reason: str) -> Attempt:
    logger.bind(unit=unit).warning("restart of {} failed ({}); kill fallback", unit, reason)
    try:
        await systemd.kill(unit, signal.SIGKILL)
        await systemd.reset_failed(unit)
        job = await systemd.start(unit)
    except JobTimeout as exc:
        return Attempt(False, "kill-fallback", f"{reason}; start: {exc}", True)
    except ReactorError as exc:
        if isinstance(exc, NoSuchUnit | BusUnavailable):
            raise
        return Attempt(False, "kill-fallback", f"{reason}; {exc}", True)
    ok = job.result == "done"
    return Attempt(ok, "kill-fallback", f"{reason}; KillUnit SIGKILL + StartUnit {job.result}",
                   True)


async def _process(target: Target, on_issued: Callable[[], None], why: str) -> Attempt:
    s = target.settings
    prefix = f"{why}; " if why else ""
    if not s.start_command:
        return Attempt(False, "process",
                       f"{prefix}[process.{target.name}] has no start_command", False)
    found = await asyncio.to_thread(procs.find, target.name)
    on_issued()
    try:
        terminated, killed = await procs.stop(found, s.stop_timeout)
        await procs.start(s.start_command, target.name)
    except UnitOperationFailed as exc:
        return Attempt(False, "process", f"{prefix}{exc}", False)
    return Attempt(True, "process",
                   f"{prefix}stopped {terminated}, killed {killed}, started", False)
