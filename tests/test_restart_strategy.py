"""Which strategy `auto` falls back to, for each way systemd can refuse (pure decision
logic: systemd is a stand-in that raises the adapter's own errors; the real D-Bus paths
are covered in test_run.py and test_run_faults.py)."""

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
    NoSuchUnit,
    ReactorError,
    UnitOperationFailed,
)


class RefusingSystemd:
    def __init__(self, error: ReactorError) -> None:
        self.error = error

    async def restart(self, unit: str, on_sent: Any = None) -> Any:
        raise self.error


def attempt(error: ReactorError, tmp_path: Path) -> tuple[restart.Attempt, bool]:
    marker = tmp_path / "started"
    config = parse_config("[database]\nuser = r\n[process.default]\nrestart_strategy = auto\n"
                          f"start_command = /bin/touch {marker}\n")
    target = resolve(config, f"nothing-runs-as-this-{tmp_path.name}", 1)
    result = asyncio.run(restart.restart(target, RefusingSystemd(error),  # type: ignore[arg-type]
                                         lambda: None))
    return result, marker.exists()


@pytest.mark.parametrize("error", [
    NoSuchUnit("RestartUnit: no such unit"),
    UnitOperationFailed("RestartUnit: Unit x.service is masked."),
    BusUnavailable("RestartUnit: connection lost"),
    CallTimeout("RestartUnit: no answer within 5 s"),
])
def test_auto_falls_back_to_the_process_strategy(error: ReactorError, tmp_path: Path) -> None:
    result, started = attempt(error, tmp_path)
    assert result.method == "process" and result.ok and started


def test_auto_never_works_around_polkit(tmp_path: Path) -> None:
    """Access denied is the operator's decision: no kill by name, no start_command."""
    result, started = attempt(AccessDenied("RestartUnit: Access denied"), tmp_path)
    assert result.method == "service" and not result.ok and not started
    assert "Access denied" in result.detail
