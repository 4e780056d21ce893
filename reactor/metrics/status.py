"""The status document: what /status.json serves and what `reactor status --json` prints.

    {"daemon": {version, pid, mode, ready, healthy, problems, conditions, counters,
                source: {connected, position, seconds_behind_source, ...}, sweep_caught},
     "processes": [{id, name, unit, breaker, in_flight, last_action, last_action_at}, ...]}

/status.json builds it from the daemon's memory (a Snapshot and the metrics observer's last
step per process: steps since the daemon started). `reactor status --json`, a separate
short-lived process, takes "daemon" and each process's "in_flight" from the running
daemon's /status.json (null when the listener is off or the daemon does not answer) and the
rest from the database, the state file and D-Bus, adding alarma, notes and unit_state: for
the same state the fields both have are equal (the tests check it).

Error handling: fetch() never raises; it returns None and a reason to print instead.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

from reactor.actions.breaker import Breaker, State
from reactor.config import Config, MetricsConfig
from reactor.metrics.registry import LastStep
from reactor.metrics.snapshot import Snapshot
from reactor.storage.records import DETAIL_MAX

FETCH_TIMEOUT = 2.0  # seconds `reactor status` waits for the daemon's /status.json


def describe_breaker(b: Breaker) -> str:
    """closed | closed (2 failed) | open until 09:55:06 | half_open"""
    if b.state is State.OPEN:
        return "open until " + dt.datetime.fromtimestamp(b.until).strftime("%H:%M:%S")
    if b.state is State.CLOSED and b.failures:
        return f"closed ({b.failures} failed)"
    return b.state.value


def last_action(step: LastStep | None) -> tuple[str | None, str | None]:
    """(last_action, last_action_at) as REACTOR_AUDIT's latest row gives them."""
    if step is None:
        return None, None
    text = f"{step.step}: {step.detail[:DETAIL_MAX]}".rstrip(": ")
    return text, dt.datetime.fromtimestamp(step.at).isoformat(sep=" ", timespec="seconds")


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t).isoformat(
        sep=" ", timespec="seconds")


def daemon_document(snap: Snapshot, sweep_caught: int) -> dict[str, Any]:
    src = snap.source
    problems = snap.problems()
    return {
        "version": snap.version,
        "pid": snap.pid,
        "mode": src.mode,
        "configured_mode": snap.configured_mode,
        "started_at": _iso(snap.started_at),
        "ready": snap.ready,
        "healthy": not problems,
        "problems": problems,
        "conditions": dict(sorted(snap.conditions.items())),
        "bus_connected": snap.bus_connected,
        "counters": dict(snap.counters),
        "cycles_in_flight": [{"process_id": c.process_id, "process_name": c.process_name,
                              "source": c.source, "detected_at": _iso(c.detected_at),
                              "restart_issued": c.restart_issued} for c in snap.in_flight],
        "source": {
            "connected": src.connected,
            "position": src.position,
            "seconds_behind_source": src.seconds_behind_source,
            "seconds_since_last_event": None if src.seconds_since_last_event is None
            else round(src.seconds_since_last_event, 3),
            "reconnects": src.reconnects,
            "transactions": src.transactions,
            "sweeps": src.sweeps,
            "last_sweep_at": _iso(src.last_sweep_at),
        },
        "sweep_caught": sweep_caught,
    }


def process_documents(snap: Snapshot, config: Config,
                      last: dict[int, LastStep]) -> list[dict[str, Any]]:
    """Every process the daemon knows of (by id, from PROCESE as it read it), and any
    breaker of a name it no longer finds there (id null)."""
    names = dict(snap.names)
    for pid, step in last.items():
        if pid not in names and step.process_name:
            names[pid] = step.process_name
    flying = {c.process_id for c in snap.in_flight}
    out: list[dict[str, Any]] = []
    for pid, name in sorted(names.items()):
        action, at = last_action(last.get(pid))
        out.append({"id": pid, "name": name, "unit": config.unit_for(name),
                    "breaker": describe_breaker(snap.breakers.get(name, Breaker())),
                    "in_flight": pid in flying, "last_action": action, "last_action_at": at})
    known = set(names.values())
    for name, breaker in sorted(snap.breakers.items()):
        if name not in known:
            out.append({"id": None, "name": name, "unit": config.unit_for(name),
                        "breaker": describe_breaker(breaker), "in_flight": False,
                        "last_action": None, "last_action_at": None})
    return out


def document(snap: Snapshot, config: Config, last: dict[int, LastStep],
             sweep_caught: int) -> dict[str, Any]:
    return {"daemon": daemon_document(snap, sweep_caught),
            "processes": process_documents(snap, config, last)}


# ---------------------------------------------------------------- `reactor status`


def status_url(metrics: MetricsConfig) -> str | None:
    """Where the daemon serves /status.json, seen from this machine; None when off."""
    if metrics.listen is None:
        return None
    host, port = metrics.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status.json"


def fetch(metrics: MetricsConfig,
          timeout: float = FETCH_TIMEOUT) -> tuple[dict[str, Any] | None, str]:
    """The running daemon's status document, or None and why not."""
    url = status_url(metrics)
    if url is None:
        return None, "[metrics] listen is off"
    # never through an http_proxy of the environment: the daemon is on this machine
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as reply:
            data = json.loads(reply.read())
    except urllib.error.URLError as exc:
        return None, f"no answer from {url}: {exc.reason}"
    except (OSError, ValueError) as exc:
        return None, f"no answer from {url}: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("daemon"), dict):
        return None, f"{url} is not reactor's status document"
    return data, ""


def summary(daemon: dict[str, Any] | None, why: str) -> list[str]:
    """The lines `reactor status` prints under its table about the daemon itself."""
    if daemon is None:
        return [f"daemon: - ({why})", "source: -", "sweeps: -"]
    src = daemon["source"]
    health = "healthy" if daemon["healthy"] else "UNHEALTHY: " + "; ".join(daemon["problems"])
    lines = [f"daemon: reactor {daemon['version']} (pid {daemon['pid']}) since "
             f"{daemon['started_at']}, mode {daemon['mode'] or '-'}, {health}"]
    if daemon["mode"] == "binlog":
        behind = src["seconds_behind_source"]
        last = src["seconds_since_last_event"]
        lines.append(
            f"source: binlog stream {'connected' if src['connected'] else 'NOT connected'}"
            f" at {src['position'] or '-'}; "
            f"{'-' if behind is None else f'{behind:g}'} s behind the source; last event "
            f"{'-' if last is None else f'{last:.1f}'} s ago; {src['reconnects']} reconnect(s)")
    else:
        lines.append(f"source: polling ({daemon['mode'] or 'not started'})")
    lines.append(f"sweeps: {src['sweeps']} (last at {src['last_sweep_at'] or '-'}); alarms "
                 f"found by a sweep that the stream had not delivered: "
                 f"{daemon['sweep_caught']}")
    return lines
