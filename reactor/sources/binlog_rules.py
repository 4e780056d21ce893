"""Pure rules of the binlog source: events it cannot decode, statements logged as SQL
text, and what the server's refusals ask an operator to do.

Events mysql-replication 1.0.x does not decode come as NotImplementedEvent (it would skip
them without a word): MariaDB's compressed events (`log_bin_compress = ON`: row events
above `log_bin_compress_min_len` bytes, and statements), MySQL's compressed transactions
(`binlog_transaction_compression = ON`, 8.0.20+) and incidents (the server lost events).
A compressed row event matters only in a transaction that mapped a table of ours
(TableMapEvents of other tables do not pass the reader's filters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

COMPRESSED_ROWS = frozenset({0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB})  # V1 and V2
COMPRESSED_QUERY = 0xA5
TRANSACTION_PAYLOAD = 0x28
INCIDENT = 0x1A

_DML = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(INSERT|UPDATE|DELETE|REPLACE|LOAD|WITH)\b",
                  re.I | re.S)
_NOT_A_CHANGE = {"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT"}

DUPLICATE_ID = 4052  # MariaDB: a reader with the same server_id is already connected
# the server refuses the dump itself, and will go on refusing until an operator acts
REFUSED_HINTS = {
    1227: "GRANT {} ON *.* to the account (sql/grants.sql)",
    1045: "check [database] user and password",
    1698: "check [database] user and password",
    1044: "check the account's grants (sql/grants.sql)",
}
_NEEDED = re.compile(r"need \(at least one of\) the (.+?) privilege")


@dataclass(frozen=True, slots=True)
class Unreadable:
    detail: str  # what it may hide and the setting to change; "" = ask for a sweep only
    whole: bool = False  # a transaction of its own: report it at once, not at its Xid


def unreadable_event(event_type: int, ours_mapped: bool) -> Unreadable | None:
    """What an event mysql-replication does not decode may hide; None when nothing of
    ours (another table's compressed rows, or a type that carries no rows)."""
    if event_type in COMPRESSED_ROWS:
        if not ours_mapped:
            return None
        return Unreadable(
            "a compressed row event (MariaDB log_bin_compress = ON) in a transaction on "
            "STATUS_PROCESS or PROCESE: its rows cannot be decoded; set log_bin_compress "
            "= OFF")
    if event_type == TRANSACTION_PAYLOAD:
        return Unreadable(
            "a compressed transaction (MySQL binlog_transaction_compression = ON): its rows "
            "cannot be decoded; set binlog_transaction_compression = OFF", whole=True)
    if event_type == INCIDENT:
        return Unreadable("an incident event: the server says events may have been lost",
                          whole=True)
    if event_type == COMPRESSED_QUERY:
        return Unreadable("")
    return None


def statement_kind(query: str) -> Literal["dml", "ddl"] | None:
    """A statement logged as SQL text: a row change of STATUS_PROCESS ("dml": a session
    with binlog_format = STATEMENT/MIXED), another statement on it ("ddl": ALTER TABLE,
    CREATE INDEX, GRANT ... are always logged as statements and change no alarm), or
    nothing of ours (None)."""
    first = query.split(None, 1)[:1]
    if first and first[0].upper() in _NOT_A_CHANGE:
        return None
    if "status_process" not in query.lower():
        return None
    return "dml" if _DML.match(query) else "ddl"


_SCHEMA_CHANGE = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(ALTER|CREATE|DROP|RENAME)\b", re.I | re.S)


def schema_change(query: str) -> bool:
    """A statement that may add or drop PROCESE's `host` column (ALTER TABLE PROCESE ...,
    or a table created, dropped or renamed in its place)."""
    return "procese" in query.lower() and _SCHEMA_CHANGE.match(query) is not None


def refusal(code: int, message: str) -> str:
    """The server's message and what to do about it, naming the grant (error 1227 names
    it: REPLICATION SLAVE for the dump, BINLOG MONITOR for the position)."""
    needed = _NEEDED.search(message)
    hint = REFUSED_HINTS[code].format(needed.group(1) if needed else "REPLICATION SLAVE")
    return f"{message} (error {code}); {hint}"
