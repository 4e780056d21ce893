"""Names from the database: which are units, which are refused (pure)."""

from __future__ import annotations

import pytest

from reactor.actions.units import resolve, valid_unit_name
from reactor.config import parse_config
from reactor.errors import Refused

CONFIG = parse_config("[database]\nuser = r\n[monitor]\ndenied_units = sshd.service db-*\n"
                      "[process.billing]\nunit = billing@2.service\n")


@pytest.mark.parametrize("unit", [
    "nginx.service", "app@1.service", "getty@tty1.service", "a-b_c.d:e.service",
    "dev-disk-by\\x2duuid-1234.device", "x.timer", "user.slice",
])
def test_valid_unit_names(unit: str) -> None:
    assert valid_unit_name(unit)


@pytest.mark.parametrize("unit", [
    "nginx", ".service", "app@.service", "a@b@c.service", "a b.service", "a;b.service",
    "a$(x).service", "x.bogus", "é.service", "a" * 250 + ".service", "a/b.service",
])
def test_invalid_unit_names(unit: str) -> None:
    assert not valid_unit_name(unit)


def test_resolve_maps_names_to_units() -> None:
    assert resolve(CONFIG, "nginx", 1).unit == "nginx.service"
    assert resolve(CONFIG, "app@3.service", 1).unit == "app@3.service"
    assert resolve(CONFIG, "billing", 1).unit == "billing@2.service"


@pytest.mark.parametrize(("name", "reason"), [
    (None, "unknown process id 7"),
    ("x; rm -rf /", "invalid process name"),
    ("$(reboot)", "invalid process name"),
    ("`id`", "invalid process name"),
    ("a|b", "invalid process name"),
    ("-rf", "invalid process name"),
    ("a b", "invalid process name"),
    ("../etc", "invalid process name"),
    ("sshd", "sshd.service is denied"),
    ("db-main", "db-main.service is denied"),
    ("app@.service", "invalid unit name"),
])
def test_refused(name: str | None, reason: str) -> None:
    with pytest.raises(Refused, match=reason.replace("$", r"\$").replace("(", r"\(")):
        resolve(CONFIG, name, 7)


def test_process_strategy_names_need_not_be_unit_names() -> None:
    """'g++' is a program, never a unit: with the process strategy it is accepted."""
    config = parse_config("[database]\nuser = r\n[process.g++]\nrestart_strategy = process\n"
                          "start_command = /bin/true\n")
    assert resolve(config, "g++", 1).name == "g++"
    with pytest.raises(Refused, match="invalid unit name"):
        resolve(CONFIG, "g++", 1)


@pytest.mark.parametrize("name", [
    "reboot.target", "poweroff.target", "emergency.target", "multi-user.target",
    "user@0.service", "user-runtime-dir@0.service", "systemd", "systemd-logind",
    "dbus", "dbus-broker", "polkit", "reactor", "init.scope", "system.slice",
    "session-1.scope", "dev-sda.device", "swapfile.swap",
])
def test_built_in_deny_list_holds_whatever_the_config_says(name: str) -> None:
    """Units that take the machine, the bus, polkit or reactor down are refused even with
    everything allowed and the configurable deny list emptied; the process strategy too."""
    config = parse_config("[database]\nuser = r\n[monitor]\nallowed_units = *\n"
                          f"denied_units =\n[process.{name}]\nrestart_strategy = process\n"
                          "start_command = /bin/true\n")
    with pytest.raises(Refused, match="denied: reactor never acts on it"):
        resolve(config, name, 1)


def test_default_lists_allow_services_only_and_deny_the_database_server() -> None:
    config = parse_config("[database]\nuser = r\n")
    assert resolve(config, "nginx", 1).unit == "nginx.service"
    for name in ("mariadb", "mysql", "mysqld", "app.socket", "backup.timer", "data.mount"):
        with pytest.raises(Refused, match="is denied by"):
            resolve(config, name, 1)
