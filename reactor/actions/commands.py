"""External commands (pre-restart, health check, start): argv, never a shell, under a timeout.

`%s` in any argument is replaced by the process name, inside that one argument: a name
can never add, remove or split arguments, whatever characters it holds.

At most `max_concurrent_restarts` commands run at once (`turns`, a semaphore the pipeline
owns): one UPDATE that alarms a thousand processes must not fork a thousand health checks
at the same moment. The timeout of a command starts when it starts, not while it waits for
its turn.

Error handling: a command that cannot be started (not found, not executable) is a result
with exit status 127/126, not an exception; a timeout kills the command's whole process
group (it runs in a session of its own) and raises CallTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

from reactor.errors import CallTimeout

OUTPUT_KEPT = 300  # characters of output kept for notes and logs


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    status: int
    output: str  # the last OUTPUT_KEPT characters of stdout+stderr
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.status == 0

    def summary(self) -> str:
        last = self.output.strip().splitlines()[-1:] if self.output.strip() else []
        tail = f": {last[0][:80]}" if last else ""
        return f"{os.path.basename(self.argv[0])} exited {self.status}{tail}"


def substitute(template: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(arg.replace("%s", name) for arg in template)


async def run(template: tuple[str, ...], name: str, timeout: float, *,
              turns: asyncio.Semaphore | None = None) -> CommandResult:
    """Run template with %s = name, when `turns` gives it a turn (None: at once); wait for
    it to exit within timeout."""
    async with turns if turns is not None else contextlib.nullcontext():
        return await _run(substitute(template, name), timeout)


async def _run(argv: tuple[str, ...], timeout: float) -> CommandResult:
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    except FileNotFoundError:
        return CommandResult(argv, 127, f"{argv[0]}: not found", 0.0)
    except PermissionError:
        return CommandResult(argv, 126, f"{argv[0]}: permission denied", 0.0)
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise CallTimeout(f"{argv[0]} did not finish within {timeout:g} s (killed)") from None
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    text = out.decode(errors="replace")[-OUTPUT_KEPT:]
    status = proc.returncode if proc.returncode is not None else -1
    return CommandResult(argv, status, text, (time.monotonic() - start) * 1000)


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group we created for one command (start_new_session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
