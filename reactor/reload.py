"""What a config reload (SIGHUP, `systemctl reload reactor`) may change while reactor runs.

    SIGHUP -> read the file -> invalid: one ERROR per problem ([section] key), and the
                                        running config stays in force
                            -> valid:   settings that need a restart keep their running
                                        value (a WARNING names each one that differs);
                                        the others are used from now on

Live: [process.*] sections, [monitor] allowed_units, denied_units, check_interval (from
the next sweep or poll), max_restart_failures, circuit_reset_time, max_concurrent_restarts,
shutdown_timeout, [systemd] call_timeout and job_timeout, [logging]. Cycles in flight
finish with the config they started with.

Need a restart (the binlog stream and the connections stay as they are): all of
[database] (connection, account, server_id, heartbeat, TLS) and of [binlog], [monitor]
mode, state_file, host, take_unassigned and fleet_interval, [systemd] bus, and all of
[metrics] (the listener is bound) and of [alerts] and the [alert.NAME] sinks (their
queues and spools are open).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reactor.config import Config

RESTART_ONLY: dict[str, tuple[str, ...] | None] = {
    "database": None,  # every key
    "binlog": None,  # the stream's servers and account
    "monitor": ("mode", "state_file", "host", "take_unassigned", "fleet_interval"),
    "systemd": ("bus",),
    "metrics": None,
    "alerts": None,  # with its sinks: the [alert.NAME] sections
}


def _held(running: Any, new: Any, keys: tuple[str, ...] | None) -> list[str]:
    names = keys or tuple(f.name for f in dataclasses.fields(running))
    return [name for name in names if getattr(running, name) != getattr(new, name)]


def live_config(running: Config, new: Config) -> tuple[Config, list[str]]:
    """`new`, with every setting that needs a restart taken from `running`; and the
    `[section] key` of each such setting the new file changes (values are not shown: one
    is the password)."""
    held: list[str] = []
    changes: dict[str, Any] = {"path": running.path}
    for section, keys in RESTART_ONLY.items():
        old_part, new_part = getattr(running, section), getattr(new, section)
        differ = _held(old_part, new_part, keys)
        held.extend(f"[{section}] {key}" for key in differ)
        if keys is None:
            changes[section] = old_part
        else:
            changes[section] = dataclasses.replace(
                new_part, **{key: getattr(old_part, key) for key in keys})
    return dataclasses.replace(new, **changes), held
