"""The process strategy, for programs that are not systemd units: find them by name in
/proc, SIGTERM, wait, SIGKILL the survivors, then run the configured start_command.

A process matches NAME when its command name (comm, which the kernel cuts at 15
characters) or the base name of its executable or argv[0] equals NAME. Never matched,
whatever their name: PID 1, the reactor's own process and its parent, and every process
of a unit on the built-in deny list (config.BUILTIN_DENIED_UNITS: the bus, systemd's own
services, polkit, PID 1's init.scope, a user manager), read from /proc/PID/cgroup. Other
scopes (login sessions) hold programs operators start by hand, and reactor's own unit the
ones start_command started: those may match. A PID is signalled only while its start
time is the one seen when it was found (no PID reuse accidents).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from reactor.actions.commands import substitute
from reactor.actions.units import own_unit, unit_of
from reactor.config import builtin_denied
from reactor.errors import UnitOperationFailed

PROC = "/proc"
START_CHECK = 0.3  # seconds a start_command may take to fail fast before it counts as started


@dataclass(frozen=True, slots=True)
class ProcRef:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: identifies this process, not just its PID


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) from /proc/PID/stat; None when it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after the last ')' are fixed
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _runs_as(pid: int, name: str) -> bool:
    """comm (cut at 15 characters), else argv[0], else the executable, is NAME; read in
    that order, so most processes cost one small read."""
    try:
        with open(f"{PROC}/{pid}/comm", "rb") as f:
            comm = f.read().decode(errors="replace").strip()
    except OSError:
        return False
    if comm in (name, name[:15]):
        return True
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        if argv0 and os.path.basename(argv0) == name:
            return True
        return os.path.basename(os.readlink(f"{PROC}/{pid}/exe")) == name
    except OSError:
        return False


def protected_unit(unit: str | None) -> bool:
    """A process of this unit is never signalled by name (see module docstring)."""
    if unit is None or unit == own_unit():
        return False
    if unit.endswith(".scope") and unit != "init.scope":
        return False
    return builtin_denied(unit)


def find(name: str) -> list[ProcRef]:
    """Processes running as NAME (see module docstring). Blocking: scans /proc."""
    mine = {1, os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) in mine or not _runs_as(int(entry), name):
            continue
        if protected_unit(unit_of(entry)):
            continue
        stat = _stat(int(entry))
        if stat is not None:
            found.append(ProcRef(int(entry), stat[1]))
    return found


def _alive(ref: ProcRef) -> bool:
    stat = _stat(ref.pid)
    return stat is not None and stat[1] == ref.start_ticks and stat[0] not in ("Z", "X")


def _signal(ref: ProcRef, sig: int) -> None:
    if _alive(ref):
        try:
            os.kill(ref.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise UnitOperationFailed(
                f"not allowed to signal PID {ref.pid} (another user's process: the reactor "
                "needs CAP_KILL for it)") from None


async def stop(refs: list[ProcRef], grace: float) -> tuple[int, int]:
    """SIGTERM, wait up to `grace` s, SIGKILL what is left. Returns (terminated, killed).
    Raises UnitOperationFailed when a process may not be signalled."""
    for ref in refs:
        _signal(ref, signal.SIGTERM)
    deadline = time.monotonic() + grace
    # not our children: no event announces their exit, so look every 50 ms
    while any(_alive(r) for r in refs) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    left = [r for r in refs if _alive(r)]
    for ref in left:
        _signal(ref, signal.SIGKILL)
    return len(refs) - len(left), len(left)


async def start(template: tuple[str, ...], name: str) -> None:
    """Start the program with start_command (%s = name). It runs in a session of its own and
    may stay in the foreground or fork; it fails only when it exits non-zero at once.

    A program still running after START_CHECK is left to itself: no task waits for it
    (the subprocess module reaps it once it has exited), and reactor stopping does not
    end it (under systemd it lives in reactor's cgroup, which KillMode= governs)."""
    if not template:
        raise UnitOperationFailed(f"{name} is not a unit and has no start_command")
    argv = substitute(template, name)
    try:
        proc = await asyncio.to_thread(
            subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise UnitOperationFailed(f"start_command {argv[0]}: {exc.strerror}") from exc
    deadline = time.monotonic() + START_CHECK
    # a program we do not wait for: no event announces its exit, so look every 20 ms
    while (status := proc.poll()) is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if status is not None and status != 0:
        raise UnitOperationFailed(f"start_command {os.path.basename(argv[0])} exited {status}")
