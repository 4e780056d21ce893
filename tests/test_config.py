"""Config parsing (pure): defaults, one problem per line naming [section] key, check-config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reactor.config import KEYS, load_config, parse_config
from reactor.errors import ConfigError
from tests.conftest import REACTOR, REPO

MINIMAL = "[database]\nuser = reactor\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_minimal_config_takes_the_documented_defaults() -> None:
    c = parse_config(MINIMAL)
    assert (c.database.host, c.database.port, c.database.database) == (
        "localhost", 3306, "v_process_monitor")
    assert c.monitor.mode == "auto" and c.monitor.check_interval == 300
    assert (c.monitor.max_restart_failures, c.monitor.circuit_reset_time) == (3, 1800)
    assert (c.logging.max_log_size, c.logging.log_files_to_keep) == (5120, 5)
    assert c.systemd.bus == "system"
    d = c.for_process("anything")
    assert (d.restart_strategy, d.health_check_timeout, d.restart_delay, d.max_attempts) == (
        "auto", 5, 2, 2)


def test_shipped_config_is_valid_and_lists_every_key() -> None:
    """conf/config.ini parses, and names every key the code accepts (commented or not)."""
    text = (REPO / "conf" / "config.ini").read_text()
    parse_config(text)
    for key in KEYS:
        assert f"{key.name} =" in text, f"conf/config.ini does not show {key.name}"


def test_seed_config_still_parses() -> None:
    """The bash tool's config.ini, as documented, is a valid reactor config."""
    seed = """
[database]
host = localhost
user = root
password = your_password
database = v_process_monitor
[monitor]
; Check interval in seconds (5 minutes)
check_interval = 300
max_restart_failures = 3
circuit_reset_time = 1800
[logging]
max_log_size = 5120
log_files_to_keep = 5
[process.apache2]
restart_strategy = service
pre_restart_command = /usr/sbin/apachectl configtest
health_check_command = systemctl is-active apache2
health_check_timeout = 10
restart_delay = 5
max_attempts = 2
[process.default]
restart_strategy = auto
health_check_command = pgrep %s
health_check_timeout = 5
restart_delay = 2
max_attempts = 2
"""
    c = parse_config(seed)
    assert c.for_process("apache2").pre_restart_command == ("/usr/sbin/apachectl", "configtest")
    assert c.for_process("other").health_check_command == ("pgrep", "%s")
    # a process section inherits [process.default] for keys it does not set
    assert c.for_process("apache2").restart_backoff == 1


@pytest.mark.parametrize(("text", "expected"), [
    (MINIMAL + "[monitor]\ncheck_interval = -5\n",
     "[monitor] check_interval: must be from 0.01 to 86400 seconds, got -5"),
    (MINIMAL + "[monitor]\ncheck_interval = soon\n", "[monitor] check_interval: must be a number"),
    (MINIMAL + "[process.x]\nrestart_strategy = reboot\n",
     "[process.x] restart_strategy: must be one of auto, service, process"),
    ("[monitor]\nmode = auto\n", "[database]: missing section"),
    ("[database]\nhost = h\n", "[database] user: missing key"),
    (MINIMAL + "port = 33o6\n",
     "[database] port: must be a whole number from 1 to 65535, got '33o6'"),
    (MINIMAL + "port = 70000\n", "[database] port: must be from 1 to 65535, got 70000"),
    (MINIMAL + "[monitor]\nmode = stream\n", "[monitor] mode: must be one of auto, binlog, poll"),
    (MINIMAL + "[monitor]\nchek_interval = 5\n", "[monitor] chek_interval: unknown key"),
    (MINIMAL + "[monitr]\n", "[monitr]: unknown section"),
    (MINIMAL + "[logging]\nmax_log_size = 0\n",
     "[logging] max_log_size: must be from 1 to 10485760 KB, got 0"),
    (MINIMAL + "[process.x]\nhealth_check_tcp = localhost\n",
     "[process.x] health_check_tcp: must be host:port"),
    (MINIMAL + "[process.x]\nhealth_check_url = ftp://a/\n", "[process.x] health_check_url"),
    (MINIMAL + "[process.x]\nrestart_strategy = process\n",
     "[process.x] start_command: required when restart_strategy = process"),
    (MINIMAL + "[process.x]\npre_restart_command = 'unclosed\n",
     "[process.x] pre_restart_command: cannot split into words"),
    (MINIMAL + "[process.default]\nunit = x.service\n", "[process.default] unit"),
    ("not an ini file\n", "not an INI file"),
])
def test_each_problem_names_section_and_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(MINIMAL + "port = x\n[monitor]\ncheck_interval = -1\nmode = x\n")
    assert len(found) == 3


def test_password_keeps_special_characters_and_is_not_in_repr() -> None:
    c = parse_config("[database]\nuser = r\npassword = p%s;#x\n")
    assert c.database.password == "p%s;#x"
    assert "p%s;#x" not in repr(c)


def test_unit_mapping_and_allow_deny() -> None:
    c = parse_config(MINIMAL + "[process.billing]\nunit = billing@1.service\n"
                     "[monitor]\nallowed_units = app-* nginx.service\n")
    assert c.unit_for("nginx") == "nginx.service"
    assert c.unit_for("app-1.socket") == "app-1.socket"
    assert c.unit_for("billing") == "billing@1.service"
    assert c.unit_allowed("nginx.service") and c.unit_allowed("app-x.service")
    assert not c.unit_allowed("sshd.service")
    default = parse_config(MINIMAL)
    for unit in ("reactor.service", "dbus.service", "systemd-journald.service",
                 "mariadb.service", "mysqld.service"):
        assert not default.unit_allowed(unit), unit
    assert default.unit_allowed("sshd.service")


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REACTOR, "check-config", "--config", str(path)],
                          capture_output=True, text=True, cwd=REPO, check=False)


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.ini"
    good.write_text(MINIMAL)
    good.chmod(0o600)
    done = run_check(good)
    assert done.returncode == 0 and "OK" in done.stdout and done.stderr == ""

    bad = tmp_path / "bad.ini"
    bad.write_text(MINIMAL + "port = abc\n[monitor]\ncheck_interval = -5\n"
                   "[process.web]\nrestart_strategy = magic\n")
    done = run_check(bad)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{bad}: [") for line in lines)

    missing = run_check(tmp_path / "nope.ini")
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_check_config_warns_about_a_readable_password(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[database]\nuser = r\npassword = secret\n")
    path.chmod(0o644)
    done = run_check(path)
    assert done.returncode == 0
    assert "chmod 600" in done.stderr and "secret" not in done.stderr


def test_check_config_warns_about_readable_sink_credentials(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[database]\nuser = r\n[alert.mail]\ntype = smtp\nhost = mail\n"
                    "to = ops@example.com\nuser = r\npassword = mail-pw-3\n")
    path.chmod(0o640)
    done = run_check(path)
    assert done.returncode == 0
    assert "holds [alert.mail] credentials" in done.stderr and "chmod 600" in done.stderr
    assert "mail-pw-3" not in done.stderr


def test_load_config_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.ini")


def test_a_duplicated_key_or_section_names_both_lines_and_the_rest_is_checked() -> None:
    found = problems("[database]\nuser = a\nport = 1\nUser = b\n"
                     "[monitor]\nmode = stream\n"
                     "[database]\nhost = h\nport = 2\n")
    assert "[database] user: given twice (lines 2 and 4)" in found, found
    assert "[database]: given twice (lines 1 and 7)" in found, found
    assert "[database] port: given twice (lines 3 and 9)" in found, found
    assert any(p.startswith("[monitor] mode: must be one of") for p in found), found


def test_a_line_that_is_not_key_value_names_its_line() -> None:
    found = problems(MINIMAL + "[monitor]\nthis is not a setting\nmode = x\n")
    assert any(p.startswith("line 4: ") for p in found), found
    assert any(p.startswith("[monitor] mode: ") for p in found), found


@pytest.mark.parametrize("bus", ["system", "user", "unix:path=/run/dbus/system_bus_socket",
                                 "unix:abstract=/tmp/dbus-x", "tcp:host=127.0.0.1,port=5000",
                                 "unix:path=/nonexistent/bus;unix:path=/run/bus"])
def test_bus_accepts_system_user_or_an_address(bus: str) -> None:
    assert parse_config(MINIMAL + f"[systemd]\nbus = {bus}\n").systemd.bus == bus


@pytest.mark.parametrize("bus", ["bogus", "System", "unix:", "unix:path", "foo:bar=1",
                                 "tcp:host=h,port=x", "/run/dbus/system_bus_socket"])
def test_bus_rejects_anything_else(bus: str) -> None:
    found = problems(MINIMAL + f"[systemd]\nbus = {bus}\n")
    assert len(found) == 1 and found[0].startswith("[systemd] bus: "), found


def test_check_interval_has_a_sensible_minimum() -> None:
    assert parse_config(MINIMAL + "[monitor]\ncheck_interval = 0.01\n").monitor.check_interval \
        == 0.01
    found = problems(MINIMAL + "[monitor]\ncheck_interval = 1e-300\n")
    assert found == ["[monitor] check_interval: must be from 0.01 to 86400 seconds, "
                     "got 1e-300"], found


def test_check_config_names_the_file_once(tmp_path: Path) -> None:
    dup = tmp_path / "dup.ini"
    dup.write_text("[database]\nuser = a\nuser = b\n")
    dup.chmod(0o600)
    done = run_check(dup)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{dup}: [database] user: given twice (lines 2 and 3)"]

    garbage = tmp_path / "garbage.ini"
    garbage.write_text("not an ini file\n")
    done = run_check(garbage)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{garbage}: not an INI file") and line.count(str(garbage)) == 1

    missing = tmp_path / "nope.ini"
    done = run_check(missing)
    assert done.stderr.splitlines() == [f"{missing}: cannot read: No such file or directory"]
    done = subprocess.run([*REACTOR, "run", "--config", str(missing)], capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"reactor: {missing}: cannot read: No such file or directory"]


def test_tls_settings(tmp_path: Path) -> None:
    """Certificate files must be readable when the config is loaded; the TLS options
    reach PyMySQL only when set (a key present there is used, even empty)."""
    assert "ssl" not in parse_config(MINIMAL).database.pymysql_args()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    args = parse_config(MINIMAL + f"ssl_ca = {ca}\nssl_verify_identity = no\n") \
        .database.pymysql_args()
    assert args["ssl"] == {"ca": str(ca), "check_hostname": False}
    found = problems(MINIMAL + f"ssl_ca = {tmp_path}/nope.pem\nssl_verify_identity = maybe\n")
    assert found == [f"[database] ssl_ca: no such file: {tmp_path}/nope.pem",
                     "[database] ssl_verify_identity: must be yes or no, got 'maybe'"], found
