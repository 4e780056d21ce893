"""The reactor's exceptions. Foreign exceptions (PyMySQL, mysql-replication, dbus-fast) are
mapped to these inside the adapter that talks to them; nothing above an adapter catches a
library's exception.

ReactorError                    base of everything the reactor raises on purpose
├── ConfigError                 the config file is unusable; .problems has one line per problem
├── TransientError              may succeed when retried later: the caller retries with backoff
│   ├── DatabaseUnavailable     the database refused, dropped or timed out a connection or query
│   ├── RowLocked               a statement waited too long for a row lock, or was a deadlock's
│   │                           victim (1205, 1213): retry the statement, the server is fine
│   ├── BusUnavailable          the D-Bus connection is lost or cannot be opened
│   ├── CallTimeout             a D-Bus call, command or probe did not answer in time
│   │   └── JobTimeout          a systemd job (restart, start) did not finish in time
│   └── SinkUnavailable         an alert sink cannot be reached, or asks to be tried later
└── PermanentError              retrying the same thing will fail the same way
    ├── DatabaseRefused         the server refused us: credentials, grant, schema or table
    ├── ServerNotSuitable       the server lacks a setting or grant the binlog source needs
    │   └── BinlogRefused       the server refuses the binlog dump to this account (a grant)
    ├── BinlogPositionLost      the saved binlog position is purged or impossible (error 1236)
    ├── StateLocked             another reactor process (run, sweep --once) holds the state file
    ├── NoSuchUnit              systemd does not know the unit
    ├── UnitOperationFailed     systemd refused the operation or its job ended other than "done"
    │   └── AccessDenied        polkit or the bus policy said no: the operator's decision
    ├── Refused                 the alarm names a process the reactor must not touch
    ├── NotFound                an operator command named a process PROCESE does not have
    └── SinkRefused             an alert sink refused us: credentials, URL, certificate
        └── AlertRejected       an alert sink rejected the message itself: resending cannot help
"""

from __future__ import annotations


class ReactorError(Exception):
    """Base class of the reactor's own errors."""


class ConfigError(ReactorError):
    """The configuration is unusable. Each problem names `[section] key`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class TransientError(ReactorError):
    """Retrying later may succeed."""


class DatabaseUnavailable(TransientError):
    """The database refused, dropped or timed out a connection or a query."""


class RowLocked(TransientError):
    """Another session holds the row (lock wait timeout 1205) or the statement lost a
    deadlock (1213): the connection is fine, the statement is retried."""


class BusUnavailable(TransientError):
    """The D-Bus connection is lost or cannot be opened."""


class CallTimeout(TransientError):
    """A D-Bus call, command or probe did not answer within its timeout."""


class JobTimeout(CallTimeout):
    """A systemd job (restart, start) did not finish within [systemd] job_timeout."""


class SinkUnavailable(TransientError):
    """An alert sink cannot be reached (refused, timed out, 5xx) or asks to be tried later
    (HTTP 429, DingTalk's rate limit, an SMTP 4xx reply)."""


class PermanentError(ReactorError):
    """Retrying the same operation will fail the same way."""


class DatabaseRefused(PermanentError):
    """The server refused us: bad credentials, missing grant, unknown schema or table."""


class ServerNotSuitable(PermanentError):
    """The database server lacks a setting or grant the binlog source needs."""


class BinlogRefused(ServerNotSuitable):
    """The server refuses to send the binlog to this account (a grant is missing)."""


class BinlogPositionLost(PermanentError):
    """The saved binlog position was purged or is impossible (server error 1236)."""


class StateLocked(PermanentError):
    """Another reactor process (run, or sweep --once) holds this state file."""


class NoSuchUnit(PermanentError):
    """systemd does not know the unit."""


class UnitOperationFailed(PermanentError):
    """systemd refused an operation on a unit, or its job ended with a result other than done."""


class AccessDenied(UnitOperationFailed):
    """polkit (or the bus policy) refused the operation: never worked around."""


class Refused(PermanentError):
    """The alarm names a process the reactor must not act on (bad name, denied unit, unknown id)."""


class NotFound(PermanentError):
    """An operator command named a process (id or name) that PROCESE does not have."""


class SinkRefused(PermanentError):
    """An alert sink refused us: bad credentials, a wrong URL or token, an untrusted
    certificate. The operator must fix the configuration; the message is kept."""


class AlertRejected(SinkRefused):
    """An alert sink rejected the message itself (HTTP 400, 413, 422; SMTP recipients
    refused): sending the same message again cannot succeed."""
