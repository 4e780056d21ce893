"""Start-up check of the database server: can the binlog path be used, and if not, why.

`mode = auto` uses the binlog when every requirement holds and otherwise polls with a
WARNING naming what is missing; `mode = binlog` refuses to start (ServerNotSuitable) with
the same list; `mode = poll` does not look.

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

from reactor.errors import ServerNotSuitable

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
