"""config.ini -> Config, parsed once at start-up into frozen dataclasses.

The file keeps the format of the bash tool it replaces (`[database]`, `[monitor]`,
`[logging]`, `[process.NAME]`, `[process.default]`) plus the keys the reactor needs
(`[systemd]`, and `[alerts]` with one `[alert.NAME]` section per alert sink). Every key is
declared once in `KEYS`, with its parser and default; the man page reactor.ini.5 documents
the same table (a test keeps them in step).

Error handling: `load_config` collects every problem in the file and raises one
`ConfigError` whose `.problems` has one line per problem, each naming `[section] key`.
Config code never exits the process.
"""

from __future__ import annotations

import configparser
import fnmatch
import functools
import ipaddress
import math
import os
import re
import shlex
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reactor.errors import ConfigError
from reactor.text import has_control, one_line

DEFAULT_CONFIG_PATH = "/etc/reactor/config.ini"
# Units reactor never acts on, whatever [monitor] allowed_units and denied_units say:
# restarting them takes down the bus reactor speaks over, systemd itself, polkit, users'
# session managers or reactor, or they are not processes at all (targets start and stop
# whole sets of units: reboot.target, emergency.target; slices, scopes, devices, swaps).
BUILTIN_DENIED_UNITS = (
    "reactor.service",
    "dbus*",
    "systemd*",
    "polkit.service",
    "init.scope",
    "user@*.service",
    "user-runtime-dir@*.service",
    "*.target",
    "*.slice",
    "*.scope",
    "*.device",
    "*.swap",
)
# The default of [monitor] denied_units (which adds to the built-in list): the database
# server reactor reads its alarms from.
DEFAULT_DENIED_UNITS = (
    "mariadb*.service",
    "mysql*.service",
    "mysqld*.service",
)
MODES = ("auto", "binlog", "poll")
VALUE_MAX = 4096  # characters in one value: more is a mistake (shlex takes seconds on 1 MB)
RESTART_DELAY_MAX = 3600.0  # seconds: restart_delay, and how far restart_backoff grows it
STRATEGIES = ("auto", "service", "process")
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
SINK_TYPES = ("alertmanager", "webhook", "dingtalk", "smtp")
HTTP_SINKS = ("alertmanager", "webhook", "dingtalk")
SEVERITIES = ("critical", "major", "warning", "info")  # most severe first
SMTP_TLS = ("starttls", "implicit", "none")
SMTP_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
# keys of [alert.NAME] that only some sink types take; every other key applies to all
SINK_ONLY: dict[str, tuple[str, ...]] = {
    "url": HTTP_SINKS, "secret": ("dingtalk",),
    **{k: ("smtp",) for k in ("host", "port", "tls", "user", "password", "from", "to")},
}
# an alert sink's name becomes a directory name (its spool): nothing that could leave it
SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a set of glob patterns (fnmatch's rules): a unit is checked against
    all of them in one match, not one fnmatch each (a storm checks every alarm's unit)."""
    if not patterns:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_BUILTIN_DENIED = globs(BUILTIN_DENIED_UNITS)


def builtin_denied(unit: str) -> bool:
    return _BUILTIN_DENIED.match(unit) is not None


# ---------------------------------------------------------------- value parsers
# Each takes the raw string and returns the value or raises ValueError with a reason.


def _figure(x: float) -> str:
    """A bound as written in messages and the man page: 3600, 0.1, 4294967295."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Number:
    """The parser of a number from `low` to `high`, both included: every value it accepts
    is one the reactor can run with (no timeout too large for a socket or a timer, no
    interval too small to be one)."""

    low: float
    high: float
    whole: bool = False  # a whole number (a count, a port)
    unit: str = ""  # "seconds", "KB": how the range reads

    def describe(self) -> str:
        """`from 0.1 to 3600 seconds`: the wording of the messages and of reactor.ini(5)."""
        return f"from {_figure(self.low)} to {_figure(self.high)}" + (
            f" {self.unit}" if self.unit else "")

    def __call__(self, raw: str) -> float:
        text = raw.strip()
        try:
            value: float = int(text) if self.whole else float(text)
        except ValueError:
            kind = "a whole number" if self.whole else "a number"
            raise ValueError(f"must be {kind} {self.describe()}, got {raw!r}") from None
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"must be {self.describe()}, got {text}")
        return value


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _required_text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _password(raw: str) -> str:
    return raw  # no further stripping or interpolation (configparser trims the ends)


def _globs(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.replace(",", " ").split() if part)


def _command(raw: str) -> tuple[str, ...]:
    """A command line, split like a shell would split words but never run by a shell."""
    if not raw.strip():
        return ()
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ValueError(f"cannot split into words: {exc}") from None
    for word in argv:  # it may span lines, but no word may hold a control character
        bad = has_control(word)
        if bad:
            raise ValueError(f"the word {one_line(word, 40)} holds a control character "
                             f"({one_line(bad.group())})")
    return argv


def _hostport(raw: str) -> tuple[str, int] | None:
    if not raw.strip():
        return None
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be host:port, got {raw!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port must be 1-65535, got {number}")
    return host.strip("[]"), number


def _listen(raw: str) -> tuple[str, int] | None:
    """host:port to listen on ([::1]:9464 for IPv6); empty = off. Port 0 is refused: the
    scraper must know where to look."""
    if not raw.strip():
        return None
    value = raw.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be host:port (127.0.0.1:9464, [::1]:9464), or empty, got {raw!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"an IPv6 address goes in brackets: [::1]:9464, got {raw!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [::1]:9464, got {raw!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port must be 1-65535, got {number}")
    return host, number


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address


def _textfile(raw: str) -> str:
    value = raw.strip()
    if value and not value.endswith(".prom"):
        raise ValueError("must end in .prom (node_exporter's textfile collector reads only "
                         f"*.prom files), got {raw!r}")
    return value


def _url(raw: str) -> str:
    if not raw.strip():
        return ""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    return raw.strip()


BUS_TRANSPORTS = ("unix", "tcp")  # what dbus-fast can connect to


def _bus(raw: str) -> str:
    """system, user, or a D-Bus address: TRANSPORT:KEY=VALUE,... (several joined by ;)."""
    value = raw.strip()
    if value in ("system", "user"):
        return value
    if ":" not in value:
        raise ValueError("must be system, user or a D-Bus address such as "
                         f"unix:path=/run/dbus/system_bus_socket, got {raw!r}")
    for address in filter(None, value.split(";")):
        transport, _, options = address.partition(":")
        if transport not in BUS_TRANSPORTS:
            raise ValueError(f"D-Bus transport must be unix: or tcp:, got {address!r}")
        pairs = [kv.partition("=") for kv in options.split(",") if kv]
        if any(not sep or not k for k, sep, _ in pairs):
            raise ValueError(f"D-Bus address options must be key=value, got {address!r}")
        keys = {k: v for k, _, v in pairs}
        if transport == "unix" and not ({"path", "abstract"} & keys.keys()):
            raise ValueError(f"a unix: D-Bus address needs path= or abstract=, got {address!r}")
        if transport == "tcp" and not keys.get("port", "0").isdigit():
            raise ValueError(f"a tcp: D-Bus address needs a numeric port=, got {address!r}")
    return value


def _readable_file(raw: str) -> str:
    """A file the reactor opens itself later (a certificate): empty, or readable now."""
    value = raw.strip()
    if value and not os.access(value, os.R_OK):
        why = "no such file" if not os.path.exists(value) else "not readable"
        raise ValueError(f"{why}: {value}")
    return value


def _optional_port(raw: str) -> int | None:
    return int(Number(1, 65535, whole=True)(raw)) if raw.strip() else None


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A key of [binlog] that defaults to its [database] namesake: empty = None."""
    def optional(raw: str) -> Any:
        return parse(raw) if raw.strip() else None

    optional.__name__ = f"optional_{getattr(parse, '__name__', 'value')}"
    return optional


def _servers(raw: str) -> tuple[tuple[str, int], ...]:
    """host:port, host:port ... in failover order ([::1]:3306 for IPv6)."""
    found: list[tuple[str, int]] = []
    for part in raw.replace(",", " ").split():
        host, sep, port = part.rpartition(":")
        if not sep or not host:
            raise ValueError(f"must be host:port, host:port ..., got {part!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"port must be a number, got {port!r} in {part!r}") from None
        if not 0 < number < 65536:
            raise ValueError(f"port must be 1-65535, got {number} in {part!r}")
        if (host, number) in found:
            raise ValueError(f"{part} is given twice")
        found.append((host, number))
    return tuple(found)


def _host_name(raw: str) -> str:
    value = raw.strip()
    if len(value) > 64:
        raise ValueError(f"must be at most 64 characters (PROCESE.host), got {len(value)}")
    return value


def _addresses(raw: str) -> tuple[str, ...]:
    """Mail addresses separated by commas or spaces; each must look like user@domain."""
    parts = tuple(part for part in raw.replace(",", " ").split() if part)
    for part in parts:
        local, at, domain = part.rpartition("@")
        if not at or not local or not domain or "<" in part or ">" in part:
            raise ValueError(f"must be mail addresses (user@domain), got {part!r}")
    return parts


def _address(raw: str) -> str:
    found = _addresses(raw)
    if len(found) > 1:
        raise ValueError(f"must be one mail address, got {raw.strip()!r}")
    return found[0] if found else ""


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"must be yes or no, got {raw!r}")


# ---------------------------------------------------------------- the key table


@dataclass(frozen=True)
class Key:
    section: str  # "database", "monitor", "systemd", "logging", "metrics" or "process"
    name: str
    parse: Callable[[str], Any]
    default: str  # as it would be written in the file; "" = empty
    doc: str


KEYS: tuple[Key, ...] = (
    Key("database", "host", _required_text, "localhost", "database server host name or address"),
    Key("database", "port", Number(1, 65535, whole=True), "3306", "database server TCP port"),
    Key("database", "socket", _text, "", "Unix socket path; when set, used instead of host/port"),
    Key("database", "user", _required_text, "", "account the reactor logs in as (required)"),
    Key("database", "password", _password, "", "that account's password"),
    Key("database", "database", _required_text, "v_process_monitor", "schema holding the tables"),
    Key("database", "server_id", Number(1, 2**32 - 1, whole=True), "4242",
        "binlog replica id; unique among every replica and binlog reader of the server"),
    Key("database", "connect_timeout", Number(0.1, 3600, unit="seconds"), "5",
        "seconds to wait for a connection"),
    Key("database", "ssl_ca", _readable_file, "",
        "CA certificate file (PEM): when set, TLS is required and the server's certificate "
        "is verified against it"),
    Key("database", "ssl_cert", _readable_file, "",
        "client certificate file (PEM), for X509 accounts"),
    Key("database", "ssl_key", _readable_file, "", "the client certificate's key file (PEM)"),
    Key("database", "ssl_verify_identity", _boolean, "yes",
        "with ssl_ca: the server's certificate must name `host`"),
    Key("database", "heartbeat", Number(0.1, 3600, unit="seconds"), "1",
        "seconds between server heartbeats on the binlog stream; a silent stream is declared "
        "dead after 2.5 heartbeats"),
    Key("monitor", "mode", _choice(MODES), "auto",
        "auto: binlog when the server allows it, else poll; binlog: binlog or refuse; poll"),
    Key("monitor", "check_interval", Number(0.01, 86400, unit="seconds"), "300",
        "seconds between polls (poll mode) or reconciliation sweeps (binlog mode)"),
    Key("monitor", "max_restart_failures", Number(1, 1000, whole=True), "3",
        "failed cycles in a row that open a process's circuit breaker"),
    Key("monitor", "circuit_reset_time", Number(0, 604800, unit="seconds"), "1800",
        "seconds an open breaker waits before one trial cycle"),
    Key("monitor", "state_file", _required_text, "/var/lib/reactor/state.json",
        "binlog checkpoint and breaker state"),
    Key("monitor", "allowed_units", _globs, "*.service",
        "glob patterns of units the reactor may act on"),
    Key("monitor", "denied_units", _globs, " ".join(DEFAULT_DENIED_UNITS),
        "glob patterns of units the reactor never acts on, besides its built-in list; "
        "wins over allowed_units"),
    Key("monitor", "max_concurrent_restarts", Number(1, 1024, whole=True), "32",
        "restarts in progress at once, over all processes"),
    Key("monitor", "shutdown_timeout", Number(0, 3600, unit="seconds"), "20",
        "seconds a stop waits for in-flight cycles before cancelling them"),
    Key("monitor", "host", _host_name, "",
        "this reactor's name in PROCESE.host (its processes) and REACTOR_FLEET; empty: "
        "this machine's host name"),
    Key("monitor", "take_unassigned", _boolean, "no",
        "yes: also act on the processes whose PROCESE.host is empty (NULL) and on alarms of "
        "ids PROCESE lacks; one reactor of a fleet at most should"),
    Key("monitor", "fleet_interval", Number(0, 3600, unit="seconds"), "10",
        "seconds between updates of this reactor's REACTOR_FLEET row; 0 = no row"),
    Key("binlog", "host", _text, "",
        "the server the binlog is read from; empty: [database] host (and socket)"),
    Key("binlog", "port", _optional_port, "", "its TCP port; empty: [database] port"),
    Key("binlog", "servers", _servers, "",
        "host:port, host:port ...: binlog servers to fail over between, in order (instead "
        "of host and port); each must log what it replicates (log_slave_updates)"),
    Key("binlog", "user", _text, "", "the account on the binlog servers; empty: [database] user"),
    Key("binlog", "password", _password, "",
        "that account's password; empty (with user empty): [database] password"),
    Key("binlog", "server_id", _optional(Number(1, 2**32 - 1, whole=True)), "",
        "binlog replica id; empty: [database] server_id"),
    Key("binlog", "heartbeat", _optional(Number(0.1, 3600, unit="seconds")), "",
        "seconds between server heartbeats; empty: [database] heartbeat"),
    Key("binlog", "connect_timeout", _optional(Number(0.1, 3600, unit="seconds")), "",
        "seconds to wait for a connection; empty: [database] connect_timeout"),
    Key("binlog", "ssl_ca", _readable_file, "", "CA certificate file (PEM); empty: [database] "
        "ssl_ca"),
    Key("binlog", "ssl_cert", _readable_file, "",
        "client certificate file (PEM); empty: [database] ssl_cert"),
    Key("binlog", "ssl_key", _readable_file, "",
        "the client certificate's key file; empty: [database] ssl_key"),
    Key("binlog", "ssl_verify_identity", _optional(_boolean), "",
        "with ssl_ca: the server's certificate must name the host; empty: [database] "
        "ssl_verify_identity"),
    Key("binlog", "gtid", _choice(("auto", "no")), "auto",
        "auto: checkpoint and resume by GTID where the server has GTIDs; no: by file and "
        "offset only (one server)"),
    Key("systemd", "bus", _bus, "system",
        "system, user (the session bus of DBUS_SESSION_BUS_ADDRESS) or a D-Bus address"),
    Key("systemd", "call_timeout", Number(0.1, 600, unit="seconds"), "5",
        "seconds to wait for any one D-Bus call"),
    Key("systemd", "job_timeout", Number(0.1, 86400, unit="seconds"), "90",
        "seconds to wait for a restart or start job before the kill fallback"),
    Key("logging", "level", _choice(LEVELS, upper=True), "INFO", "least severe level logged"),
    Key("logging", "log_file", _text, "/var/log/reactor/reactor.log",
        "log file; empty = stderr only"),
    Key("logging", "max_log_size", Number(1, 10 * 1024 * 1024, whole=True, unit="KB"), "5120",
        "KB before the log file is rotated"),
    Key("logging", "log_files_to_keep", Number(1, 1000, whole=True), "5", "rotated log files kept"),
    Key("metrics", "listen", _listen, "127.0.0.1:9464",
        "host:port of the HTTP listener for /metrics, /status.json and /healthz; empty = off"),
    Key("metrics", "allow_remote", _boolean, "no",
        "yes: listen may name an address other machines can reach (read-only data, no "
        "authentication)"),
    Key("metrics", "textfile", _textfile, "",
        "*.prom file the metrics are written to for node_exporter's textfile collector; "
        "empty = off"),
    Key("metrics", "textfile_interval", Number(0.1, 86400, unit="seconds"), "15",
        "seconds between writes of the textfile"),
    Key("alerts", "cooldown", Number(0, 604800, unit="seconds"), "3600",
        "seconds during which the same event for the same process is not alerted again"),
    Key("alerts", "group_wait", Number(0, 3600, unit="seconds"), "5",
        "seconds alerts are collected before they go out, as one message per sink"),
    Key("alerts", "unreachable_after", Number(0, 86400, unit="seconds"), "60",
        "seconds the database, the bus or the binlog stream must stay unreachable before "
        "a critical alert"),
    Key("alerts", "timeout", Number(0.1, 600, unit="seconds"), "10",
        "seconds one delivery attempt may take"),
    Key("alerts", "retry_delay", Number(0.01, 3600, unit="seconds"), "1",
        "seconds before the first retry of a failed delivery; doubled after each failure"),
    Key("alerts", "retry_max_delay", Number(0.01, 86400, unit="seconds"), "60",
        "the longest wait between two delivery attempts"),
    Key("alerts", "max_age", Number(1, 2592000, unit="seconds"), "86400",
        "seconds an undelivered message is kept (on disk, across restarts) before it is "
        "dropped with an ERROR"),
    Key("alerts", "max_queued", Number(1, 1000000, whole=True), "1000",
        "undelivered messages kept per sink; beyond that the oldest is dropped with an ERROR"),
    Key("alert", "type", _choice(SINK_TYPES), "",
        "alertmanager, webhook, dingtalk or smtp (required)"),
    Key("alert", "min_severity", _choice(SEVERITIES), "warning",
        "the least severe alert this sink gets: critical, major, warning or info"),
    Key("alert", "url", _url, "",
        "alertmanager: its base URL; webhook, dingtalk: the URL to POST to"),
    Key("alert", "secret", _password, "", "dingtalk: the robot's signing secret"),
    Key("alert", "ca_file", _readable_file, "",
        "CA certificate file (PEM) the sink's TLS certificate is verified against; empty: "
        "the system's CAs"),
    Key("alert", "host", _text, "", "smtp: the mail server (required)"),
    Key("alert", "port", _optional_port, "",
        "smtp: the server's port; empty: 587 (starttls), 465 (implicit) or 25 (none)"),
    Key("alert", "tls", _choice(SMTP_TLS), "starttls",
        "smtp: starttls, implicit (TLS from the first byte) or none"),
    Key("alert", "user", _text, "", "smtp: the account to log in as (AUTH); empty: no login"),
    Key("alert", "password", _password, "", "smtp: that account's password"),
    Key("alert", "from", _address, "", "smtp: the sender address; empty: reactor@HOST"),
    Key("alert", "to", _addresses, "", "smtp: the recipients, separated by commas (required)"),
    Key("process", "unit", _text, "", "systemd unit; default NAME if it has a unit suffix, "
        "else NAME.service"),
    Key("process", "restart_strategy", _choice(STRATEGIES), "auto",
        "service (D-Bus), process (signals + start_command) or auto (service, else process)"),
    Key("process", "pre_restart_command", _command, "",
        "run before a restart; non-zero exit = no restart (%s = process name)"),
    Key("process", "health_check_command", _command, "",
        "exit 0 = healthy (%s = process name); empty = unit/process state"),
    Key("process", "health_check_tcp", _hostport, "", "host:port that must accept a connection"),
    Key("process", "health_check_url", _url, "", "URL that must answer with health_check_status"),
    Key("process", "health_check_status", Number(100, 599, whole=True), "200",
        "expected HTTP status"),
    Key("process", "health_check_timeout", Number(0.01, 86400, unit="seconds"), "5",
        "seconds the health check is retried before the attempt counts as failed"),
    Key("process", "settle_time", Number(0, 3600, unit="seconds"), "1",
        "seconds a unit must stay active to count as healthy"),
    Key("process", "restart_delay", Number(0, RESTART_DELAY_MAX, unit="seconds"), "2",
        "seconds between attempts in one cycle"),
    Key("process", "restart_backoff", Number(1, 10), "1",
        "factor applied to restart_delay after each attempt (2 = exponential)"),
    Key("process", "max_attempts", Number(1, 100, whole=True), "2", "restart attempts per cycle"),
    Key("process", "start_command", _command, "",
        "process strategy: command that starts the program again (%s = process name)"),
    Key("process", "stop_timeout", Number(0, 3600, unit="seconds"), "5",
        "process strategy: seconds between SIGTERM and SIGKILL"),
    Key("process", "command_timeout", Number(0.01, 86400, unit="seconds"), "30",
        "seconds before a pre_restart or health_check command is killed"),
)
SECTIONS = ("database", "binlog", "monitor", "systemd", "logging", "metrics", "alerts")


def keys_of(section: str) -> dict[str, Key]:
    return {k.name: k for k in KEYS if k.section == section}


# ---------------------------------------------------------------- value objects


@dataclass(frozen=True)
class DatabaseConfig:
    host: str
    port: int
    socket: str
    user: str
    password: str = field(repr=False)
    database: str
    server_id: int
    connect_timeout: float
    heartbeat: float
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""
    ssl_verify_identity: bool = True

    def pymysql_args(self) -> dict[str, Any]:
        """Keyword arguments for pymysql.connect (a fresh dict each call)."""
        args: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "connect_timeout": self.connect_timeout,
            "charset": "utf8mb4",
            "autocommit": True,
        }
        if self.socket:
            args["unix_socket"] = self.socket
        else:
            args["host"] = self.host
            args["port"] = self.port
        if self.ssl_ca or self.ssl_cert:
            # PyMySQL: with a CA, TLS is required and the certificate verified; a key present
            # in this dict is used, even when empty
            ssl: dict[str, Any] = {"check_hostname": bool(self.ssl_ca) and
                                   self.ssl_verify_identity}
            for key, path in (("ca", self.ssl_ca), ("cert", self.ssl_cert),
                              ("key", self.ssl_key)):
                if path:
                    ssl[key] = path
            args["ssl"] = ssl
        return args


@dataclass(frozen=True)
class MonitorConfig:
    mode: str
    check_interval: float
    max_restart_failures: int
    circuit_reset_time: float
    state_file: str
    allowed_units: tuple[str, ...]
    denied_units: tuple[str, ...]
    max_concurrent_restarts: int
    shutdown_timeout: float
    host: str = ""  # resolved by parse_config: never empty in a loaded Config
    take_unassigned: bool = False
    fleet_interval: float = 10.0


@dataclass(frozen=True)
class BinlogConfig:
    """[binlog]: where the stream comes from; every empty key is [database]'s."""

    host: str = ""
    port: int | None = None
    servers: tuple[tuple[str, int], ...] = ()
    user: str = ""
    password: str = field(default="", repr=False)
    server_id: int | None = None
    heartbeat: float | None = None
    connect_timeout: float | None = None
    ssl_ca: str = ""
    ssl_cert: str = ""
    ssl_key: str = ""
    ssl_verify_identity: bool | None = None
    gtid: str = "auto"

    def connections(self, db: DatabaseConfig) -> tuple[DatabaseConfig, ...]:
        """One DatabaseConfig per binlog server, in failover order (the first: [binlog]
        host and port, or [database]'s server when [binlog] names none)."""
        base = replace(
            db,
            user=self.user or db.user,
            password=self.password if self.user else db.password,
            server_id=db.server_id if self.server_id is None else self.server_id,
            heartbeat=db.heartbeat if self.heartbeat is None else self.heartbeat,
            connect_timeout=db.connect_timeout if self.connect_timeout is None
            else self.connect_timeout,
            ssl_ca=self.ssl_ca or db.ssl_ca, ssl_cert=self.ssl_cert or db.ssl_cert,
            ssl_key=self.ssl_key or db.ssl_key,
            ssl_verify_identity=db.ssl_verify_identity if self.ssl_verify_identity is None
            else self.ssl_verify_identity,
        )
        if self.servers:
            return tuple(replace(base, host=h, port=p, socket="") for h, p in self.servers)
        if self.host or self.port is not None:
            return (replace(base, host=self.host or db.host, port=self.port or db.port,
                            socket="" if self.host else db.socket),)
        return (base,)

    def separate(self, db: DatabaseConfig) -> bool:
        """The stream comes (or may come) from another server than the one written to."""
        return any((c.host, c.port, c.socket) != (db.host, db.port, db.socket)
                   for c in self.connections(db))


@dataclass(frozen=True)
class SystemdConfig:
    bus: str
    call_timeout: float
    job_timeout: float


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    log_file: str
    max_log_size: int
    log_files_to_keep: int


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None  # None: no HTTP listener
    allow_remote: bool
    textfile: str  # "": no textfile
    textfile_interval: float

    @property
    def enabled(self) -> bool:
        return self.listen is not None or bool(self.textfile)


@dataclass(frozen=True)
class ProcessConfig:
    unit: str
    restart_strategy: str
    pre_restart_command: tuple[str, ...]
    health_check_command: tuple[str, ...]
    health_check_tcp: tuple[str, int] | None
    health_check_url: str
    health_check_status: int
    health_check_timeout: float
    settle_time: float
    restart_delay: float
    restart_backoff: float
    max_attempts: int
    start_command: tuple[str, ...]
    stop_timeout: float
    command_timeout: float


@dataclass(frozen=True)
class SinkConfig:
    """One `[alert.NAME]` section: where alerts go, and the least severe that goes there."""

    name: str
    type: str
    min_severity: str
    url: str = field(repr=False)  # may hold a token (DingTalk's access_token)
    secret: str = field(repr=False)
    ca_file: str
    host: str
    port: int
    tls: str
    user: str
    password: str = field(repr=False)
    sender: str  # the `from` key
    to: tuple[str, ...]

    def secrets(self) -> list[str]:
        """What must never appear in a log line: password, secret, the URL's password and
        the values of its query (tokens such as DingTalk's access_token)."""
        found = [self.password, self.secret]
        if self.url:
            parts = urlsplit(self.url)
            found.append(parts.password or "")
            # a token is long; "?v=2" is not a secret (and too short to redact)
            found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
        return [s for s in found if s]


@dataclass(frozen=True)
class AlertsConfig:
    cooldown: float
    group_wait: float
    unreachable_after: float
    timeout: float
    retry_delay: float
    retry_max_delay: float
    max_age: float
    max_queued: int
    sinks: tuple[SinkConfig, ...] = ()

    @property
    def longest_retry_delay(self) -> float:
        """retry_max_delay, or retry_delay when that is longer (the first wait is never cut)."""
        return max(self.retry_delay, self.retry_max_delay)

    def secrets(self) -> list[str]:
        return [s for sink in self.sinks for s in sink.secrets()]


UNIT_SUFFIXES = (
    ".service", ".socket", ".target", ".device", ".mount", ".automount", ".swap",
    ".path", ".timer", ".slice", ".scope",
)


@dataclass(frozen=True)
class Config:
    path: str
    database: DatabaseConfig
    monitor: MonitorConfig
    systemd: SystemdConfig
    logging: LoggingConfig
    process_default: ProcessConfig
    processes: dict[str, ProcessConfig] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=lambda: MetricsConfig(
        ("127.0.0.1", 9464), False, "", 15.0))
    alerts: AlertsConfig = field(default_factory=lambda: AlertsConfig(**_defaults(
        keys_of("alerts"))))
    binlog: BinlogConfig = field(default_factory=BinlogConfig)

    @property
    def binlog_servers(self) -> tuple[DatabaseConfig, ...]:
        """The binlog servers, in failover order, as connection settings."""
        return self.binlog.connections(self.database)

    def secrets(self) -> list[str]:
        """Every secret of the file, for the log redactor."""
        return [s for s in (self.database.password, self.binlog.password,
                            *self.alerts.secrets()) if s]

    def for_process(self, name: str) -> ProcessConfig:
        """The settings for a process: its own section, else [process.default]."""
        return self.processes.get(name, self.process_default)

    def unit_for(self, name: str) -> str:
        """process_name -> unit: `unit =` if set, NAME if it has a unit suffix, else
        NAME.service."""
        configured = self.for_process(name).unit
        if configured:
            return configured
        return name if name.endswith(UNIT_SUFFIXES) else f"{name}.service"

    def unit_allowed(self, unit: str) -> bool:
        """allowed_units, denied_units and the built-in deny list, denied winning."""
        denied, allowed = self._unit_globs
        if builtin_denied(unit) or denied.match(unit):
            return False
        return allowed.match(unit) is not None

    @functools.cached_property
    def _unit_globs(self) -> tuple[re.Pattern[str], re.Pattern[str]]:
        return globs(self.monitor.denied_units), globs(self.monitor.allowed_units)


# ---------------------------------------------------------------- loading


def _parse_section(
    raw: configparser.SectionProxy | dict[str, str],
    keys: dict[str, Key],
    label: str,
    base: dict[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    values = dict(base)
    for name, text in raw.items():
        key = keys.get(name)
        if key is None:
            problems.append(f"[{label}] {name}: unknown key")
            continue
        bad = _unusable(text, key)
        if bad:
            problems.append(f"[{label}] {name}: {bad}")
            continue
        try:
            values[name] = key.parse(text)
        except ValueError as exc:
            problems.append(f"[{label}] {name}: {exc}")
    return values


def _unusable(text: str, key: Key) -> str | None:
    """What makes a raw value unusable whatever its key: its length, a control character
    (a NUL cannot even reach exec or open). A command may span lines; its words are
    checked once split."""
    if len(text) > VALUE_MAX:
        return f"must be at most {VALUE_MAX} characters, got {len(text)}"
    if key.parse is _command:
        return None
    bad = has_control(text)
    if bad is None:
        return None
    if bad.group() == "\n":
        return "must be one line (an indented line continues the value above it)"
    return f"must not hold a control character, got {one_line(bad.group())} at " \
           f"character {bad.start() + 1}"


# why the process strategy is chosen per program, never for every process
_BY_NAME_ONLY_PER_PROGRAM = (
    "the process strategy signals every process of a name, and [process.default] applies "
    "to any name a database writer can insert: set it in the [process.NAME] section of each "
    "program that is not a unit")


def _default_problems(values: dict[str, Any]) -> list[str]:
    """What [process.default] may not set: a unit, and the process strategy (start_command,
    restart_strategy = process), which is opt-in per program."""
    problems = []
    if values.get("unit"):
        problems.append("[process.default] unit: cannot be set for every process")
    if values.get("start_command"):
        problems.append(f"[process.default] start_command: not allowed here: "
                        f"{_BY_NAME_ONLY_PER_PROGRAM}")
    if values.get("restart_strategy") == "process":
        problems.append(f"[process.default] restart_strategy: process is not allowed here: "
                        f"{_BY_NAME_ONLY_PER_PROGRAM}")
    return problems


def _defaults(keys: dict[str, Key]) -> dict[str, Any]:
    """Built-in defaults; a key whose default does not parse (user) is required."""
    values: dict[str, Any] = {}
    for name, key in keys.items():
        try:
            values[name] = key.parse(key.default)
        except ValueError:
            values[name] = None
    return values


def _duplicates(text: str) -> list[str]:
    """`[section] key: given twice (lines N and M)` for every repeated section or key, found
    the way configparser reads the file (comments and blank lines end a value; indented
    lines continue it), so that the other problems can be reported too."""
    problems: list[str] = []
    sections: dict[str, int] = {}
    options: dict[tuple[str, str], int] = {}
    optcre = configparser.ConfigParser.OPTCRE
    section: str | None = None
    option: str | None = None
    indent = sys.maxsize
    for lineno, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith(("#", ";")):
            indent = sys.maxsize
            continue
        level = len(line) - len(line.lstrip())
        if section is not None and option and level > indent:
            continue  # a continuation line of a value
        indent = level
        header = configparser.ConfigParser.SECTCRE.match(value)
        if header:
            section, option = header.group("header"), None
            if section in sections:
                problems.append(f"[{section}]: given twice (lines {sections[section]} and "
                                f"{lineno})")
            sections.setdefault(section, lineno)
            continue
        match = optcre.match(value)
        if section is None or not match:
            option = None
            continue  # configparser reports these lines
        option = match.group("option").rstrip().lower()
        first = options.setdefault((section, option), lineno)
        if first != lineno:
            problems.append(f"[{section}] {option}: given twice (lines {first} and {lineno})")
    return problems


def _read(text: str, path: str) -> tuple[configparser.ConfigParser, list[str]]:
    """The parsed file and the problems of its syntax, one line each (no path: callers
    name the file). Repeats are reported by _duplicates and read leniently (later values
    win), so that the rest of the file is still checked."""
    problems = _duplicates(text)
    lines = text.splitlines()
    for strict in (False,) if problems else (True, False):
        parser = configparser.ConfigParser(interpolation=None, strict=strict,
                                           empty_lines_in_values=False)
        parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, source=path)
        except configparser.MissingSectionHeaderError as exc:
            raise ConfigError([f"not an INI file: line {exc.lineno} is outside any [section]: "
                               f"{exc.line.strip()!r}"]) from None
        except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
            # a repeat _duplicates did not see: name it, then read the file again leniently
            option = f" {exc.option}" if isinstance(exc, configparser.DuplicateOptionError) \
                else ""
            problems.append(f"[{exc.section}]{option}: given twice (line {exc.lineno})")
            continue
        except configparser.ParsingError as exc:
            problems.extend(f"line {n}: not a [section] or a key = value line: "
                            f"{lines[n - 1].strip()!r}" for n, _ in exc.errors)
        except configparser.Error as exc:
            raise ConfigError([f"not an INI file: {exc.message.splitlines()[0]}"]) from None
        return parser, problems
    raise AssertionError("a lenient read raises no DuplicateError")


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse config text. Raises ConfigError listing every problem."""
    parser, problems = _read(text, path)
    parsed: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        keys = keys_of(section)
        if not parser.has_section(section):
            if section in ("database",):
                problems.append(f"[{section}]: missing section")
            parsed[section] = _defaults(keys)
            continue
        parsed[section] = _parse_section(parser[section], keys, section, _defaults(keys), problems)
    if parser.has_section("database") and "user" not in parser["database"]:
        problems.append("[database] user: missing key")

    process_keys = keys_of("process")
    default_values = _defaults(process_keys)
    if parser.has_section("process.default"):
        default_values = _parse_section(
            parser["process.default"], process_keys, "process.default", default_values, problems
        )
        problems.extend(_default_problems(default_values))
    process_values: dict[str, dict[str, Any]] = {}
    sinks: list[SinkConfig] = []
    for section in parser.sections():
        if section in SECTIONS or section == "process.default":
            continue
        if section.startswith("alert."):
            sink = _parse_sink(section, parser[section], problems)
            if sink is not None:
                sinks.append(sink)
            continue
        if not section.startswith("process.") or section == "process.":
            problems.append(f"[{one_line(section)}]: unknown section")
            continue
        name = section[len("process."):]
        if has_control(name):
            problems.append(f"[{one_line(section)}]: a process name holds no control character")
            continue
        process_values[name] = values = _parse_section(
            parser[section], process_keys, section, default_values, problems
        )
        if values.get("restart_strategy") == "process" and not values.get("start_command"):
            problems.append(f"[{section}] start_command: required when restart_strategy = process")

    metrics = parsed["metrics"]
    listen = metrics.get("listen")
    if listen is not None and not metrics.get("allow_remote") and not is_loopback(listen[0]):
        problems.append(f"[metrics] listen: {listen[0]} is not a loopback address; anyone who "
                        "can reach it reads the metrics and status (no secrets, no "
                        "authentication): set [metrics] allow_remote = yes to allow it")

    binlog = parsed["binlog"]
    if binlog.get("servers") and (binlog.get("host") or binlog.get("port") is not None):
        problems.append("[binlog] servers: give either servers or host and port, not both")
    if binlog.get("password") and not binlog.get("user"):
        problems.append("[binlog] user: required with [binlog] password")
    if binlog.get("gtid") == "no" and len(binlog.get("servers") or ()) > 1:
        problems.append("[binlog] servers: several servers need GTID positions: a file and "
                        "offset mean nothing on another server; set [binlog] gtid = auto")
    # (checked on a file without other problems: [database] is complete then)
    if binlog.get("gtid") == "no" and not problems:
        if BinlogConfig(**binlog).separate(DatabaseConfig(**parsed["database"])):
            problems.append("[binlog] gtid: no, but the binlog is read from another server "
                            "than [database]: only a GTID position means the same there; "
                            "set gtid = auto")
    monitor = parsed["monitor"]
    if not monitor.get("host"):
        from reactor.ownership import this_host

        monitor["host"] = this_host()

    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        database=DatabaseConfig(**parsed["database"]),
        monitor=MonitorConfig(**parsed["monitor"]),
        systemd=SystemdConfig(**parsed["systemd"]),
        logging=LoggingConfig(**parsed["logging"]),
        process_default=ProcessConfig(**default_values),
        processes={n: ProcessConfig(**v) for n, v in process_values.items()},
        metrics=MetricsConfig(**metrics),
        alerts=AlertsConfig(**parsed["alerts"], sinks=tuple(sinks)),
        binlog=BinlogConfig(**binlog),
    )


def _parse_sink(section: str, raw: configparser.SectionProxy,
                problems: list[str]) -> SinkConfig | None:
    """One [alert.NAME] section; None (with problems) when it is unusable."""
    name = section[len("alert."):]
    if not SINK_NAME.fullmatch(name):
        problems.append(f"[{section}]: the name after 'alert.' must be 1-64 letters, digits, "
                        "'_', '.' or '-' (it names the sink's spool directory)")
        return None
    before = len(problems)
    values = _parse_section(raw, keys_of("alert"), section, _defaults(keys_of("alert")),
                            problems)
    kind = values.get("type")
    if "type" not in raw:
        problems.append(f"[{section}] type: missing key (alertmanager, webhook, dingtalk or "
                        "smtp)")
    if kind:
        for key, types in SINK_ONLY.items():
            if key in raw and kind not in types:
                problems.append(f"[{section}] {key}: not used by type = {kind} (only by "
                                f"{', '.join(types)})")
        required = ("url",) if kind in HTTP_SINKS else ("host", "to")
        for key in required:
            reported = any(p.startswith(f"[{section}] {key}:") for p in problems[before:])
            if not values.get(key) and not reported:
                problems.append(f"[{section}] {key}: required for type = {kind}")
    if kind == "smtp":
        if values.get("password") and not values.get("user"):
            problems.append(f"[{section}] user: required with password")
        if values.get("user") and not values.get("password"):
            problems.append(f"[{section}] password: required with user")
        if values.get("password") and values.get("tls") == "none":
            problems.append(f"[{section}] password: never sent without TLS; set tls = "
                            "starttls or implicit")
    if len(problems) > before or not isinstance(kind, str):
        return None
    tls = values["tls"]
    return SinkConfig(
        name=name, type=kind, min_severity=values["min_severity"], url=values["url"],
        secret=values["secret"], ca_file=values["ca_file"], host=values["host"],
        port=values["port"] or (SMTP_PORTS[tls] if kind == "smtp" else 0), tls=tls,
        user=values["user"], password=values["password"], sender=values["from"], to=values["to"],
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file. Raises ConfigError (unreadable file included)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"]) from None
    return parse_config(text, str(path))


def permission_warnings(path: str | os.PathLike[str], config: Config) -> list[str]:
    """Warnings about a config file that holds a password (or a sink's secret) others can
    read."""
    held = (["[database] password"] if config.database.password else []) + [
        f"[alert.{s.name}] credentials" for s in config.alerts.sinks if s.secrets()]
    if not held:
        return []
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            f"{path}: holds {', '.join(held)} but its mode is {stat.S_IMODE(mode):04o}; "
            f"run chmod 600 {path}"
        ]
    return []


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of config with some fields of some sections replaced."""
    changes: dict[str, Any] = {}
    for name, fields in sections.items():
        changes[name] = replace(getattr(config, name), **fields)
    return replace(config, **changes)
