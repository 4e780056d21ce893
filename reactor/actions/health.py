"""Is the process healthy after a restart? Probes, retried until health_check_timeout.

One round checks, in order:
- a unit (service strategy): ActiveState is active, and stays active with the same MainPID
  and NRestarts for `settle_time` (a Type=simple unit reads active before a broken
  ExecStart has even exited); a Type=oneshot service is healthy once its run succeeded
  (inactive, Result success: its restart job ended when the run did). With settle_time 0
  nothing is read: the attempt ends only with a restart job whose result is "done", which
  systemd reports once the unit is active again (a oneshot: has run to success); a read
  right after it says nothing more, and in a storm costs systemd a call per cycle;
- a plain program (process strategy), when no probe below is configured: a process of
  that name runs, and still runs after `settle_time`;
- health_check_command exits 0 (%s = process name; argv, no shell);
- health_check_tcp accepts a connection;
- health_check_url answers with health_check_status.
A failed round is retried every RETRY_INTERVAL until the timeout; the verdict keeps the
last reason.

Error handling: probe failures, timeouts and D-Bus errors are reasons, never exceptions;
only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from reactor.actions import commands, procs
from reactor.actions.systemd import Systemd
from reactor.actions.units import Target
from reactor.errors import ReactorError

RETRY_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str
    elapsed_ms: float


async def check(target: Target, systemd: Systemd, *, via_unit: bool,
                turns: asyncio.Semaphore | None = None) -> Verdict:
    """`turns`: the semaphore a health_check_command waits for (commands.run)."""
    s = target.settings
    start = time.monotonic()
    deadline = start + s.health_check_timeout
    while True:
        try:
            reason = await _round(target, systemd, via_unit, deadline, turns)
        except ReactorError as exc:
            reason = str(exc)
        elapsed = (time.monotonic() - start) * 1000
        if reason is None:
            return Verdict(True, "healthy", elapsed)
        left = deadline - time.monotonic()
        if left <= 0:
            return Verdict(False, reason, elapsed)
        await asyncio.sleep(min(RETRY_INTERVAL, left))


async def _round(target: Target, systemd: Systemd, via_unit: bool,
                 deadline: float, turns: asyncio.Semaphore | None) -> str | None:
    s = target.settings
    probes = bool(s.health_check_command or s.health_check_tcp or s.health_check_url)
    if via_unit:
        if s.settle_time > 0:  # 0: the restart job's result, "done", is the verdict
            reason = await _unit_settled(target.unit, systemd, s.settle_time)
            if reason:
                return reason
    elif not probes:
        reason = await _process_settled(target.name, s.settle_time)
        if reason:
            return reason
    budget = max(0.05, deadline - time.monotonic())
    if s.health_check_command:
        result = await commands.run(s.health_check_command, target.name,
                                    min(s.command_timeout, budget), turns=turns)
        if not result.ok:
            return f"health check {result.summary()}"
    if s.health_check_tcp:
        host, port = s.health_check_tcp
        try:
            async with asyncio.timeout(budget):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
        except (OSError, TimeoutError) as exc:
            return f"tcp {host}:{port}: {exc or 'timeout'}"
    if s.health_check_url:
        try:
            async with asyncio.timeout(budget):
                status = await http_status(s.health_check_url)
        except (OSError, TimeoutError, ValueError) as exc:
            return f"GET {s.health_check_url}: {exc or 'timeout'}"
        if status != s.health_check_status:
            return f"GET {s.health_check_url}: HTTP {status}, want {s.health_check_status}"
    return None


async def _unit_settled(unit: str, systemd: Systemd, settle: float) -> str | None:
    first = await systemd.unit_state(unit)
    if first.active_state == "inactive" and await systemd.ran_to_success(unit):
        return None  # a oneshot service that has run: nothing is left to settle
    if first.active_state != "active":
        return f"{unit} is {first.active_state}/{first.sub_state}" + (
            f" ({first.result})" if first.result and first.result != "success" else "")
    await asyncio.sleep(settle)
    then = await systemd.unit_state(unit)
    if then.active_state != "active" or then.main_pid != first.main_pid \
            or then.n_restarts != first.n_restarts:
        return f"{unit} did not stay active for {settle:g} s (now {then.active_state}/" \
               f"{then.sub_state}, {then.result})"
    return None


async def _process_settled(name: str, settle: float) -> str | None:
    found = await asyncio.to_thread(procs.find, name)
    if not found:
        return f"no process named {name}"
    if settle > 0:
        await asyncio.sleep(settle)
        if not await asyncio.to_thread(procs.find, name):
            return f"{name} exited within {settle:g} s"
    return None


async def http_status(url: str) -> int:
    """GET url with HTTP/1.0 and return the status code (no redirects followed)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if secure else None)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                     "User-Agent: reactor-health\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    fields = line.decode("latin-1").split()
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:40]!r}")
    return int(fields[1])
