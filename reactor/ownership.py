"""Which rows a reactor acts on: many hosts, one database.

PROCESE may have a `host` column (sql/fleet.sql adds it). The rule, one place for the
sources (which alarms to take) and the database writes (which rows to touch):

- no `host` column (the seed schema): every row is this reactor's, as on a single host;
- a row whose host is this reactor's `[monitor] host`: its own;
- a row with no host (NULL or empty), and an alarm whose process_id PROCESE lacks: taken
  only with `[monitor] take_unassigned = yes` (a fleet of reactors must not all act on it);
- any other host: not its own. Its alarms are dropped before the pipeline: no restart, no
  note, no clear, no audit row.

The same rule as SQL: `where(...)` is the condition the sweep's query and the writes of
STATUS_PROCESS (clear, note) add, so that a row that moved to another host while a cycle
ran is not written by its former owner. Host names compare as the column's collation does
(case-insensitively with the default one), and so does `owns`.

`column` is what the database has now: read at start (or, when the database is down then,
by the first sweep, before it selects anything: until then no alarm is owned); again after
an ALTER TABLE of PROCESE in the stream, and after a reload.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


def this_host() -> str:
    """[monitor] host when it is left empty: this machine's host name."""
    return socket.gethostname()


@dataclass
class Ownership:
    host: str  # "": no rule (`reactor watch`, which acts on nothing, sees every alarm)
    take_unassigned: bool = False
    column: bool = False  # PROCESE has a `host` column
    known: bool = False  # `column` was read from the database (until then: nothing owned)

    def owns(self, host: object) -> bool:
        """A row whose PROCESE.host is `host` (None: NULL, or no PROCESE row at all)."""
        if not self.host:
            return True
        if not self.known:
            return False  # the database could not be asked yet: the first sweep asks
        if not self.column:
            return True
        if host is None or (isinstance(host, str) and not host.rstrip()):
            return self.take_unassigned
        return isinstance(host, str) and host.rstrip().casefold() == self.host.casefold()

    def where(self, host_sql: str) -> tuple[str, tuple[object, ...]]:
        """(" AND condition", params) on `host_sql`, an SQL expression giving the row's
        PROCESE.host (NULL when it has none); ("", ()) without the column."""
        if not self.column:
            return "", ()
        if self.take_unassigned:
            return f" AND COALESCE({host_sql}, '') IN (%s, '')", (self.host,)
        return f" AND {host_sql} = %s", (self.host,)

    def describe(self) -> str:
        if not self.column:
            return "every process (PROCESE has no host column)"
        extra = " and those with no host" if self.take_unassigned else ""
        return f"the processes of host {self.host}{extra}"
