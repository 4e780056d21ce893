"""Commands run as argv, never through a shell; %s is one argument; timeouts kill."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from reactor.actions import commands
from reactor.errors import CallTimeout


def test_percent_s_is_exactly_one_argument(tmp_path: Path) -> None:
    out = tmp_path / "args"
    template = ("/bin/sh", "-c", f'for a in "$@"; do echo "$a"; done > {out}', "sh", "[%s]",
                "%s")
    hostile = "a b; touch x $(id) `id` | > <"
    result = asyncio.run(commands.run(template, hostile, 5))
    assert result.ok
    assert out.read_text().splitlines() == [f"[{hostile}]", hostile]


def test_exit_status_and_output_tail() -> None:
    result = asyncio.run(commands.run(("/bin/sh", "-c", "echo nope; exit 4"), "x", 5))
    assert (result.status, result.ok) == (4, False)
    assert result.summary() == "sh exited 4: nope"


def test_missing_program_is_a_result_not_an_exception() -> None:
    result = asyncio.run(commands.run(("/no/such/program", "%s"), "x", 5))
    assert result.status == 127 and "not found" in result.output


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    start = time.monotonic()
    with pytest.raises(CallTimeout, match="did not finish within 0.3 s"):
        asyncio.run(commands.run(("/bin/sh", "-c", script), "x", 0.3))
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{child}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "Z":
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z"


def test_a_process_that_may_not_be_signalled_is_a_failure(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Without CAP_KILL another user's program cannot be signalled: the cycle fails with a
    reason instead of crashing (os.kill is replaced: these tests run as root)."""
    import os

    from reactor.actions import procs
    from reactor.errors import UnitOperationFailed

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    stat = procs._stat(os.getpid())
    assert stat is not None
    me = procs.ProcRef(os.getpid(), stat[1])
    with pytest.raises(UnitOperationFailed, match="CAP_KILL"):
        asyncio.run(procs.stop([me], 0.1))
