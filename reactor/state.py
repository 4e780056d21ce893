"""The state file: the binlog checkpoint and the circuit breakers, saved atomically.

    {"binlog": {"file": "binlog.000003", "pos": 1234, "server_uuid": ...},
     "breakers": {"nginx": {...}}}

Written by the binlog reader thread (checkpoints) and by the event loop (breakers), so
every access takes a lock. Saved as tmp file -> fsync -> rename -> fsync(dir): a crash
leaves either the old or the new file, never a torn one.

Error handling: an unreadable or corrupt file is logged and treated as empty (the start-up
sweep finds every alarm still set); a failed save raises OSError to the caller.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A binlog position at a transaction boundary."""

    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


class StateFile:
    """path=None keeps the state in memory only (`reactor watch` without --state-file)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.error("state file {} unreadable ({}); starting without it", self.path, exc)
            return {}
        if not isinstance(data, dict):
            logger.error("state file {} is not a JSON object; starting without it", self.path)
            return {}
        return data

    # -- binlog checkpoint
    def checkpoint(self) -> Checkpoint | None:
        with self._lock:
            raw = self._data.get("binlog")
        if isinstance(raw, dict) and isinstance(raw.get("file"), str) and isinstance(
            raw.get("pos"), int
        ):
            return Checkpoint(raw["file"], raw["pos"])
        return None

    def set_checkpoint(self, cp: Checkpoint | None, *, save: bool = True) -> None:
        with self._lock:
            if cp is None:
                self._data.pop("binlog", None)
            else:
                self._data["binlog"] = {"file": cp.file, "pos": cp.pos}
            if save:
                self._save_locked()

    # -- breakers
    def breakers(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            raw = self._data.get("breakers")
            return {k: dict(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def set_breaker(self, name: str, record: dict[str, Any] | None) -> None:
        with self._lock:
            table = self._data.setdefault("breakers", {})
            if record is None:
                table.pop(name, None)
            else:
                table[name] = record
            self._save_locked()

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        payload = json.dumps(self._data, sort_keys=True, indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
