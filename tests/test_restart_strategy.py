"""Which strategy `auto` falls back to, for each way systemd can answer (pure decision
logic: systemd is a stand-in that raises the adapter's own errors; the real D-Bus paths
are in test_run_strategy.py).

The process strategy is opt-in and never a guess: auto kills by name only when systemd
said for certain that the unit does not exist, and only for a program whose own
[process.NAME] section has a start_command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reactor.actions import restart
from reactor.actions.units import resolve
from reactor.config import parse_config
from reactor.errors import (
    AccessDenied,
    BusUnavailable,
    CallTimeout,
    ConfigError,
    JobTimeout,
    NoSuchUnit,
    ReactorError,
    UnitOperationFailed,
)


class RefusingSystemd:
    def __init__(self, error: ReactorError) -> None:
        self.error = error
        self.calls: list[str] = []

    async def restart(self, unit: str, on_sent: Any = None) -> Any:
        self.calls.append("restart")
        raise self.error

    async def kill(self, unit: str, signal: int) -> None:
        self.calls.append("kill")
        raise self.error

    async def reset_failed(self, unit: str) -> None:
        self.calls.append("reset_failed")

    async def start(self, unit: str) -> Any:
        self.calls.append("start")
        raise self.error


def attempt(error: ReactorError, tmp_path: Path) -> tuple[restart.Attempt, bool]:
    """auto, with a start_command in the program's own section."""
    marker = tmp_path / "started"
    name = f"nothing-runs-as-this-{tmp_path.name}"
    config = parse_config(f"[database]\nuser = r\n[process.{name}]\nrestart_strategy = auto\n"
                          f"start_command = /bin/touch {marker}\n")
    target = resolve(config, name, 1)
    result = asyncio.run(restart.restart(target, RefusingSystemd(error),  # type: ignore[arg-type]
                                         lambda: None))
    return result, marker.exists()


def test_auto_falls_back_only_when_the_unit_certainly_does_not_exist(tmp_path: Path) -> None:
    result, started = attempt(NoSuchUnit("RestartUnit: Unit x.service not found."), tmp_path)
    assert result.method == "process" and result.ok and started
    assert result.detail.startswith("no unit ")


@pytest.mark.parametrize("error", [
    # refused: systemd's decision, recorded with its reason
    UnitOperationFailed("RestartUnit: Unit x.service is masked. "
                        "(org.freedesktop.systemd1.UnitMasked)"),
    UnitOperationFailed("RestartUnit: Unit x.service has a bad unit file setting."),
    UnitOperationFailed("RestartUnit: Unexpected load state (org.freedesktop.systemd1."
                        "LoadFailed)"),
    AccessDenied("RestartUnit: Access denied"),
    # unknown outcome: the restart may still run in systemd; a second instance would follow
    BusUnavailable("RestartUnit: connection lost"),
    CallTimeout("RestartUnit: no answer within 5 s"),
    JobTimeout("RestartUnit x.service: job 7 not finished after 90 s"),
])
def test_auto_never_kills_by_name_after_a_refusal_or_an_unknown_outcome(
        error: ReactorError, tmp_path: Path) -> None:
    result, started = attempt(error, tmp_path)
    assert not result.ok and not started
    assert result.method in ("service", "kill-fallback"), result
    assert str(error).split(": ", 1)[1][:20] in result.detail


def test_a_missing_unit_without_an_own_start_command_names_what_is_missing() -> None:
    config = parse_config("[database]\nuser = r\n")
    target = resolve(config, "ghost", 1)
    result = asyncio.run(restart.restart(
        target, RefusingSystemd(NoSuchUnit("no such unit")),  # type: ignore[arg-type]
        lambda: None))
    assert not result.ok
    assert result.detail == "no unit ghost.service; [process.ghost] has no start_command"


@pytest.mark.parametrize("setting", ["start_command = /bin/true",
                                     "restart_strategy = process\nstart_command = /bin/true"])
def test_process_default_cannot_enable_kill_by_name_for_every_name(setting: str) -> None:
    """A database writer can insert any name: [process.default] applies to all of them, so
    it may not choose the process strategy (check-config says why)."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"[database]\nuser = r\n[process.default]\n{setting}\n")
    assert any(p.startswith("[process.default] ") and "signals every process of a name" in p
               and "[process.NAME]" in p for p in info.value.problems), info.value.problems
