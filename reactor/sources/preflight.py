"""Start-up check of the database server: can the binlog path be used, and if not, why.

`mode = auto` uses the binlog when every requirement holds and otherwise polls with a
WARNING naming what is missing; `mode = binlog` refuses to start (ServerNotSuitable) with
the same list; `mode = poll` does not look.

Binlog servers other than [database] ([binlog] host or servers) are checked the same way,
each with the binlog account, plus: a replica must log what it applies
(`log_slave_updates = ON`, else the primary's writes never reach its binlog), and with
several servers (or another one than [database]) each must have GTIDs. A server that
cannot be reached is a WARNING (it may come back: the stream fails over); one that is
unsuitable is an ERROR and left out of the list; when none is left, the report's
`missing` decides as for one server.

Compressed binlog events are a requirement too: mysql-replication 1.0.x decodes neither
MariaDB's compressed events (`log_bin_compress = ON`: row events above
`log_bin_compress_min_len` bytes, one UPDATE of many alarms among them) nor MySQL's
compressed transactions (`binlog_transaction_compression = ON`), and teaching it would
mean patching its private event table. A server that writes them is not streamed; one
that starts writing them later is seen by the stream itself (binlog.py: WARNING, sweep).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pymysql
import pymysql.cursors
from loguru import logger

from reactor.config import DatabaseConfig
from reactor.errors import DatabaseUnavailable, ReactorError, ServerNotSuitable
from reactor.storage.database import connect, describe, mapped

REQUIRED = {
    "log_bin": ("ON", "start the server with log_bin"),
    "binlog_format": ("ROW", "set binlog_format=ROW"),
    "binlog_row_image": ("FULL", "set binlog_row_image=FULL"),
    "binlog_row_metadata": ("FULL", "set binlog_row_metadata=FULL"),
}
# settings that must be off where the server has them (MariaDB, MySQL 8.0.20+)
MUST_BE_OFF = {
    "log_bin_compress": "MariaDB compresses row events the binlog reader cannot decode; "
                        "set log_bin_compress=OFF",
    "binlog_transaction_compression": "MySQL compresses transactions the binlog reader "
                                      "cannot decode; set binlog_transaction_compression=OFF",
}
# the privileges that let an account read the binlog; REPLICATION SLAVE ADMIN (administer
# replicas) and REPLICA/SLAVE MONITOR are other privileges
_BINLOG_READ = {"REPLICATION SLAVE", "REPLICATION REPLICA", "ALL PRIVILEGES", "ALL"}
_GRANT = re.compile(r"^GRANT (.+?) ON (\S+) TO ", re.I)
_COMMA = re.compile(r",\s*(?![^()]*\))")  # not inside a column list: SELECT (a, b)


def may_read_binlog(grants: list[str]) -> bool:
    """Whether SHOW GRANTS lines give REPLICATION SLAVE (or ALL) on *.*."""
    for line in grants:
        m = _GRANT.match(line.strip())
        if m is None or m.group(2) != "*.*":
            continue
        privileges = {p.strip().upper() for p in _COMMA.split(m.group(1))}
        if privileges & _BINLOG_READ:
            return True
    return False


@dataclass
class ServerReport:
    version: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def binlog_ok(self) -> bool:
        return not self.missing

    @property
    def folds_case(self) -> bool:
        """lower_case_table_names = 1: tables are stored, and named in the binlog, in lower
        case (with 2, a macOS setting, they keep the case they were created with)."""
        return self.variables.get("lower_case_table_names", "0") == "1"


def inspect_server(cur: pymysql.cursors.Cursor) -> ServerReport:
    """Read the settings and grants the binlog source needs (blocking; run in a thread)."""
    report = ServerReport()
    cur.execute("SELECT VERSION()")
    report.version = str(cur.fetchone()[0])
    cur.execute(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
        "('log_bin','binlog_format','binlog_row_image','binlog_row_metadata',"
        "'lower_case_table_names','log_bin_compress','binlog_transaction_compression')"
    )
    report.variables = {str(k).lower(): str(v).upper() for k, v in cur.fetchall()}
    for name, (wanted, how) in REQUIRED.items():
        have = report.variables.get(name)
        if have is None:
            report.missing.append(f"{name} is not supported by this server ({how})")
        elif have != wanted:
            report.missing.append(f"{name} is {have}, needs {wanted} ({how})")
    for name, why in MUST_BE_OFF.items():
        have = report.variables.get(name)
        if have is not None and have not in ("OFF", "0"):
            report.missing.append(f"{name} is {have}, needs OFF ({why})")

    cur.execute("SHOW GRANTS")
    if not may_read_binlog([str(row[0]) for row in cur.fetchall()]):
        report.missing.append(
            "the account lacks REPLICATION SLAVE (GRANT REPLICATION SLAVE ON *.*)")
    try:
        cur.execute("SHOW MASTER STATUS")
        cur.fetchall()
    except pymysql.err.MySQLError as exc:
        report.missing.append(
            f"the account cannot read the binlog position ({exc.args[-1]}); "
            "GRANT BINLOG MONITOR ON *.* (MariaDB) or REPLICATION CLIENT (MySQL)"
        )
    return report


def replica_problems(cur: pymysql.cursors.Cursor, gtid: bool) -> list[str]:
    """What makes this server unfit to stream from in place of [database]: a replica that
    does not log what it applies; no GTIDs (blocking)."""
    problems = []
    cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_slave_updates', 'gtid_binlog_pos', 'gtid_mode')")
    found = {str(k).lower(): str(v).upper() for k, v in cur.fetchall()}
    try:
        cur.execute("SHOW SLAVE STATUS")
        replica: bool | None = cur.fetchone() is not None
    except pymysql.err.MySQLError as exc:
        if exc.args and exc.args[0] in (1227, 1045):
            replica = None  # cannot tell: SLAVE MONITOR / REPLICATION CLIENT missing
        else:
            raise
    if replica is None:
        logger.warning("cannot tell whether binlog server {} is a replica (GRANT SLAVE "
                       "MONITOR ON *.* on MariaDB, REPLICATION CLIENT on MySQL, see "
                       "sql/fleet.sql); log_slave_updates is {}",
                       describe_cursor(cur), found.get("log_slave_updates", "?"))
    elif replica and found.get("log_slave_updates") != "ON":
        problems.append("it is a replica with log_slave_updates = OFF: what it applies from "
                        "its primary never reaches its binlog; set log_slave_updates = ON")
    if not gtid:
        problems.append("[binlog] gtid = no, but only a GTID position means the same on "
                        "another server: set [binlog] gtid = auto")
    elif "gtid_binlog_pos" not in found and found.get("gtid_mode") != "ON":
        problems.append("it has no GTIDs (MySQL: gtid_mode = ON) and a file and offset mean "
                        "nothing on another server")
    return problems


def describe_cursor(cur: pymysql.cursors.Cursor) -> str:
    conn = cur.connection
    return str(getattr(conn, "unix_socket", None) or f"{conn.host}:{conn.port}")


def check_binlog_servers(servers: tuple[DatabaseConfig, ...], gtid: bool,
                         ) -> tuple[ServerReport, tuple[DatabaseConfig, ...]]:
    """Check each binlog server of [binlog] (blocking). Returns the report that decides
    the mode (the first suitable server's; when none is, every problem found) and the
    servers fit to stream from, in order. Raises DatabaseUnavailable when none answers."""
    usable: list[DatabaseConfig] = []
    first: ServerReport | None = None
    problems: list[str] = []
    unreachable: list[str] = []
    for cfg in servers:
        where = describe(cfg)
        try:
            with connect(cfg, schema=False) as conn, conn.cursor() as cur, \
                    mapped(f"checking binlog server {where}"):
                report = inspect_server(cur)
                report.missing += replica_problems(cur, gtid)
        except DatabaseUnavailable as exc:
            logger.warning("binlog server {} cannot be reached at start ({}); not checked",
                           where, exc)
            unreachable.append(where)
            usable.append(cfg)  # it may come back: the stream tries it in its turn
            continue
        except ReactorError as exc:
            report = ServerReport(missing=[str(exc)])
        if report.missing:
            logger.error("binlog server {} ([binlog] servers) cannot be streamed from, left "
                         "out: {}", where, "; ".join(report.missing))
            problems += [f"{where}: {m}" for m in report.missing]
            continue
        usable.append(cfg)
        first = first or report
    if first is None and len(unreachable) == len(servers):
        raise DatabaseUnavailable("no binlog server answers ([binlog] servers: "
                                  + ", ".join(unreachable) + ")")
    if first is None:
        if unreachable:  # unsuitable ones and unreachable ones: wait for those
            return ServerReport(), tuple(usable)
        return ServerReport(missing=problems), tuple(usable)
    return first, tuple(usable)


def choose_mode(configured: str, report: ServerReport | None) -> str:
    """'binlog' or 'poll' for a configured mode of auto, binlog or poll.

    Raises ServerNotSuitable when mode=binlog and the server does not allow it.
    """
    if configured == "poll":
        return "poll"
    assert report is not None
    if report.binlog_ok:
        return "binlog"
    missing = "; ".join(report.missing)
    if configured == "binlog":
        raise ServerNotSuitable(f"[monitor] mode = binlog, but the server is not ready: {missing}")
    logger.warning("binlog not usable, falling back to polling: {}", missing)
    return "poll"
