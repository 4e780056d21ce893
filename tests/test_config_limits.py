"""Every value `check-config` accepts must run; what cannot run is rejected, naming
`[section] key`.

- each number has a range (config.Number): the bounds parse, the values just past them do
  not, and the extremes that used to pass check-config and then crash `reactor run`
  (1e308 seconds: OverflowError or PyMySQL's ValueError, exit 70) are refused;
- no value holds a control character (a NUL passed, then every cycle failed with
  "embedded null byte"), and none is longer than VALUE_MAX characters (a 1 MB command
  took check-config 20 s in shlex);
- `reactor run` with every number at its lowest, and again at its highest, starts, handles
  an alarm and stops cleanly, against the real MariaDB and systemd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor.config import KEYS, VALUE_MAX, Key, Number, _figure, parse_config
from reactor.errors import ConfigError
from tests.conftest import REACTOR, REPO, Proc, write_config
from tests.rig import Rig

MINIMAL = "[database]\nuser = reactor\n"
NUMBERS = [k for k in KEYS if isinstance(k.parse, Number)]


def text_with(key: Key, value: str) -> str:
    section = "process.x" if key.section == "process" else key.section
    head = "" if key.section == "database" else f"[{section}]\n"
    return f"{MINIMAL}{head}{key.name} = {value}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def label(key: Key) -> str:
    return f"[{'process.x' if key.section == 'process' else key.section}] {key.name}"


def test_every_number_has_a_range() -> None:
    """Every key whose value is a number is parsed by Number (a new one cannot slip in
    without bounds), and every default is inside its range."""
    untyped = [k.name for k in KEYS if k.default.strip().lstrip("-").replace(".", "", 1)
               .isdigit() and not isinstance(k.parse, Number)]
    assert not untyped, f"numeric keys without a range: {untyped}"
    for key in NUMBERS:
        assert isinstance(key.parse, Number)
        assert key.parse.low <= key.parse(key.default) <= key.parse.high, key.name


@pytest.mark.parametrize("key", NUMBERS, ids=lambda k: f"{k.section}.{k.name}")
def test_the_bounds_parse_and_the_values_past_them_do_not(key: Key) -> None:
    assert isinstance(key.parse, Number)
    low, high = key.parse.low, key.parse.high
    for inside in (low, high):
        parse_config(text_with(key, _figure(inside)))
    step = 1 if key.parse.whole else max(low * 0.001, 1e-6)
    outside = [low - step, high + (1 if key.parse.whole else high * 0.001), "1e308", "-1e308",
               "nan", "inf"]
    for value in outside:
        found = problems(text_with(key, str(value)))
        assert len(found) == 1 and found[0].startswith(f"{label(key)}: must be "), found
        assert key.parse.describe() in found[0], found


@pytest.mark.parametrize(("section", "key"), [
    ("database", "heartbeat"), ("database", "connect_timeout"), ("monitor", "check_interval"),
    ("systemd", "call_timeout"), ("systemd", "job_timeout"), ("monitor", "shutdown_timeout"),
    ("process.x", "health_check_timeout"), ("process.x", "command_timeout"),
])
def test_extreme_seconds_that_used_to_pass_are_refused(section: str, key: str) -> None:
    head = "" if section == "database" else f"[{section}]\n"
    found = problems(f"{MINIMAL}{head}{key} = 1e308\n")
    assert found[0].startswith(f"[{section}] {key}: must be from ") and "got 1e308" in found[0]


@pytest.mark.parametrize(("section", "key", "value"), [
    ("process.x", "health_check_command", "/bin/true\0"),
    ("process.x", "pre_restart_command", "/bin/echo 'a\x1b[2Jb'"),
    ("process.x", "start_command", "/bin/true \x7f"),
    ("database", "host", "db\0.example"),
    ("database", "password", "pw\0rd"),
    ("monitor", "state_file", "/var/lib/reactor/\x00state.json"),
    ("logging", "log_file", "/var/log/reactor/r\x08.log"),
    ("monitor", "allowed_units", "app-*.service \x1b"),
    ("process.x", "unit", "x\u2028.service"),
])
def test_a_control_character_in_any_value_is_refused(section: str, key: str,
                                                     value: str) -> None:
    head = "" if section == "database" else f"[{section}]\n"
    found = problems(f"{MINIMAL}{head}{key} = {value}\n")
    assert len(found) == 1 and found[0].startswith(f"[{section}] {key}: "), found
    assert "control character" in found[0], found


def test_a_command_may_span_lines_but_a_path_may_not() -> None:
    config = parse_config(MINIMAL + "[process.x]\nhealth_check_command = /bin/sh -c\n"
                                    "  'exit 0'\n")
    assert config.for_process("x").health_check_command == ("/bin/sh", "-c", "exit 0")
    found = problems(MINIMAL + "[monitor]\nstate_file = /var/lib/reactor\n  /state.json\n")
    assert found == ["[monitor] state_file: must be one line (an indented line continues "
                     "the value above it)"], found


def test_a_process_section_name_with_a_control_character_is_refused() -> None:
    assert problems(MINIMAL + "[process.a\x1bb]\n") == [
        "[process.a\\x1bb]: a process name holds no control character"]


def test_a_value_longer_than_the_limit_is_refused_before_it_is_parsed() -> None:
    parse_config(MINIMAL + "[process.x]\nhealth_check_command = /bin/echo "
                 + "a" * (VALUE_MAX - len("/bin/echo ")) + "\n")
    found = problems(MINIMAL + "[process.x]\nhealth_check_command = /bin/echo "
                     + "a" * (1 << 20) + "\n")
    assert found == [f"[process.x] health_check_command: must be at most {VALUE_MAX} "
                     f"characters, got {(1 << 20) + len('/bin/echo ')}"], found


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REACTOR, "check-config", "--config", str(path)],
                          capture_output=True, text=True, cwd=REPO, check=False, timeout=60)


@pytest.mark.parametrize(("body", "expected"), [
    ("[database]\nheartbeat = 1e308\n",
     "[database] heartbeat: must be from 0.1 to 3600 seconds, got 1e308"),
    ("[database]\nconnect_timeout = 1e308\n",
     "[database] connect_timeout: must be from 0.1 to 3600 seconds, got 1e308"),
    ("[process.web]\nhealth_check_command = /usr/bin/curl -f http://127.0.0.1/\0\n",
     "[process.web] health_check_command: the word http://127.0.0.1/\\x00 holds a control "
     "character (\\x00)"),
    ("[process.web]\nhealth_check_command = /bin/echo " + "x" * (1 << 20) + "\n",
     f"[process.web] health_check_command: must be at most {VALUE_MAX} characters"),
])
def test_check_config_refuses_what_run_could_not_use(tmp_path: Path, body: str,
                                                     expected: str) -> None:
    """Each of these passed check-config: `reactor run` then died with a traceback (exit
    70), or failed every cycle with "embedded null byte"."""
    path = tmp_path / "c.ini"
    path.write_text(body.replace("[database]\n", "") + "[database]\nuser = r\n"
                    if not body.startswith("[database]") else body + "user = r\n")
    path.chmod(0o600)
    done = check_config(path)
    assert done.returncode == 1, done
    assert done.stderr.splitlines()[0].startswith(f"{path}: {expected}"), done.stderr


# ------------------------------------------------------------------ every bound runs


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


# keys a run cannot take at their bound for reasons of the test rig, not of the value:
# the port is the test server's, whose own server id is 1 (a reader needs another); the
# bus must answer within the call timeout on a busy machine; a health check that must
# last an hour (settle_time at its highest) would hold the test that long
KEEP = {"port", "server_id", "call_timeout", "settle_time"}


def at_bounds(high: bool) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for key in NUMBERS:
        if key.name in KEEP:
            continue
        assert isinstance(key.parse, Number)
        value = key.parse.high if high else key.parse.low
        name = "default" if key.section == "process" else key.section
        sections.setdefault(name, {})[key.name] = _figure(value)
    return sections


@pytest.mark.mariadb
@pytest.mark.systemd
@pytest.mark.parametrize("high", [False, True], ids=["lowest", "highest"])
def test_reactor_runs_with_every_number_at_its_bound(rig: Rig, high: bool) -> None:
    """Every number at its lowest, then at its highest (but for KEEP): the daemon connects
    (binlog stream with that heartbeat, pool with that connect timeout), restarts a unit
    (at the lowest job_timeout, maybe by the kill fallback), clears its alarm, and stops
    with exit 0. (heartbeat = 1e308 used to end in an
    OverflowError, connect_timeout = 1e308 in PyMySQL's ValueError: exit 70.)"""
    values = at_bounds(high)
    pid, _ = rig.add("bounds-high" if high else "bounds-low")
    config = write_config(rig.tmp / "bounds.ini", rig.db, {
        "database": values["database"],
        "logging": {**values["logging"], "log_file": rig.tmp / "bounds.log"},
        "monitor": {**values["monitor"], "mode": "binlog"},
        "systemd": {**values["systemd"], "bus": rig.sbx.address, "call_timeout": 3},
    }, {"default": {**values["default"], "settle_time": 0}})
    parse_config(config.read_text())  # what check-config accepts
    p = rig.start(config)
    rig.alarm(pid)
    assert rig.wait_cleared(pid, timeout=30).startswith("restarted")
    assert p.stop() == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
