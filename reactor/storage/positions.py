"""Binlog positions: a file/offset on one server, its binlog history (Origin), and the GTID
state that means the same point on every server of a replication topology.

    Checkpoint("binlog.000003", 1234, Origin(1, 1795597704), gtid="0-1-57",
               server="10.0.0.7:3306")

A file/offset means something only in the binlog history it was read from (Origin). A
GTID state does not: MariaDB's `domain-server-seq` list (one GTID per replication domain,
the last transaction applied in each) names the same transaction on the primary and on
every replica that logs what it applies (`log_slave_updates`), so a reader resumes by GTID
on any of them. MySQL's GTID sets (`uuid:1-57,...`) work alike; they are parsed and
compared here but have not been run against a MySQL server (none can run on this
project's machines).

Ordering (`reached`): two GTID states compare domain by domain (MariaDB: seq numbers only
grow within a domain in strict mode) or by set inclusion (MySQL); two positions without
GTIDs compare by file and offset, which holds only within one binlog history.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any

_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True, slots=True)
class Origin:
    """Which binlog history a position belongs to.

    MariaDB has no server_uuid, so a binlog file is identified by what its first event
    (the FormatDescriptionEvent the server sends at the start of every dump) says: the
    server_id of the server that wrote it and the time it created the file. A file of
    another server, or one written again after RESET MASTER or on a new data directory,
    has another creation time, though it may have the same name and server_id."""

    server_id: int
    file_created: int  # Unix time in the file's FormatDescriptionEvent header
    server_version: str = ""  # for the log only: an upgrade keeps the history

    def same_history(self, other: Origin) -> bool:
        return (self.server_id, self.file_created) == (other.server_id, other.file_created)

    def __str__(self) -> str:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.file_created))
        version = f", {self.server_version}" if self.server_version else ""
        return f"server_id {self.server_id}, file created {created}{version}"

    def as_json(self) -> dict[str, Any]:
        return {"server_id": self.server_id, "file_created": self.file_created,
                "server_version": self.server_version}

    @classmethod
    def from_json(cls, raw: object) -> Origin | None:
        if not isinstance(raw, dict):
            return None
        sid, created = raw.get("server_id"), raw.get("file_created")
        if not isinstance(sid, int) or not isinstance(created, int):
            return None
        version = raw.get("server_version")
        return cls(sid, created, version if isinstance(version, str) else "")


class GtidState:
    """A MariaDB GTID position (domain -> (server_id, seq)) or a MySQL GTID set, as text in
    the server's own notation. Immutable: `advance` returns a new state."""

    __slots__ = ("_domains", "_mysql")

    def __init__(self, text: str = "") -> None:
        self._domains: dict[int, tuple[int, int]] = {}
        self._mysql: Any = None  # pymysqlreplication.gtid.GtidSet for a MySQL set
        text = text.strip()
        if not text:
            return
        if ":" in text:  # uuid:interval[,...]: MySQL
            from pymysqlreplication.gtid import GtidSet

            self._mysql = GtidSet(text.replace("\n", ""))
            return
        for part in text.split(","):
            m = _MARIADB_GTID.match(part.strip())
            if m is None:
                raise ValueError(f"not a GTID position: {text!r}")
            domain, server, seq = map(int, m.groups())
            self._domains[domain] = (server, seq)

    @property
    def empty(self) -> bool:
        return not self._domains and (self._mysql is None or not str(self._mysql))

    def advance(self, gtid: str) -> GtidState:
        """The state after the transaction `gtid` (MariaDB D-S-N or MySQL uuid:N)."""
        new = GtidState()
        if ":" in gtid or self._mysql is not None:
            from pymysqlreplication.gtid import Gtid, GtidSet

            merged = GtidSet(str(self._mysql) if self._mysql is not None else "")
            merged.merge_gtid(Gtid(gtid))
            new._mysql = merged
            return new
        m = _MARIADB_GTID.match(gtid)
        if m is None:
            raise ValueError(f"not a GTID: {gtid!r}")
        domain, server, seq = map(int, m.groups())
        new._domains = {**self._domains, domain: (server, seq)}
        return new

    def reached(self, other: GtidState) -> bool:
        """Every transaction of `other` is in this state (this one is at or after it)."""
        if self._mysql is not None or other._mysql is not None:
            if self._mysql is None or other._mysql is None:
                return False
            # GtidSet's own `in` compares whole Gtids for equality: test inclusion per uuid
            return all(any(theirs in mine for mine in self._mysql.gtids)
                       for theirs in other._mysql.gtids)
        for domain, (_, seq) in other._domains.items():
            mine = self._domains.get(domain)
            if mine is None or mine[1] < seq:
                return False
        return True

    def __str__(self) -> str:
        if self._mysql is not None:
            return str(self._mysql)
        return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self._domains.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidState) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"GtidState({str(self)!r})"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A binlog position at a transaction boundary: file/offset on the server it was read
    from (`server`, host:port, and its binlog history, `origin`: None when not known yet),
    and, where the server has GTIDs, the GTID state at that boundary."""

    file: str
    pos: int
    origin: Origin | None = None
    gtid: GtidState | None = None
    server: str = ""  # host:port (or socket) of the binlog server it was read from

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def describe(self) -> str:
        """For the log: file:offset, and the GTID position where there is one."""
        return f"{self.file}:{self.pos}" + (f" (gtid {self.gtid})" if self.gtid else "")

    def key(self) -> tuple[str, int]:
        """For ordering positions of one server: binlog file names have a fixed-width
        number, so they sort as text."""
        return self.file, self.pos

    def reached(self, other: Checkpoint) -> bool:
        """This position is at or after `other`: by GTID when both have one (valid across
        the servers of a topology), else by file and offset (one server)."""
        if self.gtid is not None and other.gtid is not None:
            return self.gtid.reached(other.gtid)
        return self.key() >= other.key()

    def moved(self, file: str, pos: int, origin: Origin | None = None) -> Checkpoint:
        """The same GTID state at another file/offset (of the server being read)."""
        return replace(self, file=file, pos=pos, origin=origin)

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"file": self.file, "pos": self.pos}
        if self.origin is not None:
            record["origin"] = self.origin.as_json()
        if self.gtid is not None:
            record["gtid"] = str(self.gtid)
        if self.server:
            record["server"] = self.server
        return record

    @classmethod
    def from_json(cls, raw: object) -> Checkpoint | None:
        if not (isinstance(raw, dict) and isinstance(raw.get("file"), str)
                and isinstance(raw.get("pos"), int)):
            return None
        gtid: GtidState | None = None
        text = raw.get("gtid")
        if isinstance(text, str) and text.strip():
            try:
                gtid = GtidState(text)
            except ValueError:
                gtid = None  # unreadable: resumed by file and offset, on its own server
        server = raw.get("server")
        return cls(raw["file"], raw["pos"], Origin.from_json(raw.get("origin")), gtid,
                   server if isinstance(server, str) else "")
