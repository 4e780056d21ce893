"""The state file: the binlog checkpoint, the circuit breakers and the alerts' memory
(when each alert was last sent, and which are firing), saved all or nothing.

    {"binlog": {"file": "binlog.000003", "pos": 1234,
                "origin": {"server_id": 1, "file_created": 1795597704,
                           "server_version": "10.11.19-MariaDB"},
                "gtid": "0-1-57", "server": "10.0.0.7:3306"},
     "breakers": {"nginx": ["open", 3, 1795599000.5],   # state, failures, until
                  "cron": 1},                            # closed, 1 failure in a row
     "alerts": {"cooldown": {"cycle_failed:7": 1764474174.2},
                "firing": {"breaker_open:7": {"alert": {...}, "sinks": ["am"]}}}}

A binlog position means something only in the binlog history it was read from: `origin`
names it (see positions.Origin), and the binlog source refuses a checkpoint whose origin is
not the server's; its GTID state (`gtid`) means the same point on every server of a
replication topology, and `server` says which one it was read from (positions.py).
Top-level keys it does not know are kept as they are, so that a later version can add
sections without an older one losing them.

Changed by the event loop (checkpoints, breakers) and read by the binlog reader thread, so
every access takes a lock; saved by a thread of its own. A save writes a tmp file, checks
that every byte of it was written, fsyncs it, and only then renames it over the old file
and fsyncs the directory: a crash or a full disk leaves the old file or the new one, never a
torn one.

Error handling: an unreadable or corrupt file is logged and treated as empty (the start-up
sweep finds every alarm still set). A failed save (a full file system: ENOSPC, EDQUOT; any
OSError) removes its tmp file and keeps the old state file; the first failure of an episode
is an ERROR, the following ones are not logged again, and the save is retried every
SAVE_RETRY seconds and with each change; the first save that works again says so (INFO).
Meanwhile the state in memory is complete and reactor goes on serving alarms. A directory
that cannot be created or a lock file that cannot be opened is a ConfigError naming the
key (`[monitor] state_file: cannot open ...`): exit 1, which the unit does not restart, as
for any other config the reactor cannot use.

Ownership: root running a command for the service (`reactor sweep --once`) gives every file
it creates here (state file, lock file) to the owner of the directory, so that the service,
running as that user, can still open them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from reactor.errors import ConfigError, StateLocked
from reactor.storage.positions import Checkpoint, Origin

__all__ = ["Checkpoint", "Origin", "StateFile", "give_to_directory_owner", "read_breakers"]


def give_to_directory_owner(fd: int, directory: str | os.PathLike[str]) -> None:
    """Running as root: a root-owned file in a directory owned by someone else (the
    service's StateDirectory= or LogsDirectory=) goes to that directory's owner."""
    if os.geteuid() != 0:
        return
    owner = os.stat(directory)
    st = os.fstat(fd)
    if st.st_uid == 0 and (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
        os.fchown(fd, owner.st_uid, owner.st_gid)


SAVE_RETRY = 5.0  # seconds between attempts while saves fail, even without a change
SAVE_DUTY = 20.0  # a save that took t seconds is followed by at least SAVE_DUTY * t of rest
SAVE_PAUSE_MIN = 0.005  # seconds: below this a save goes out at once (small states)
SAVE_PAUSE_MAX = 5.0


class StateFile:
    """The state, in memory, saved by a thread of its own after every change.

    Changes never wait for the disk: the binlog reader must go on reading while a save
    fsyncs. The saver writes the latest state (changes made during a save are coalesced
    into the next one); flush() waits until everything changed so far is on disk, close()
    flushes and ends the thread. path=None keeps the state in memory only (`reactor watch`
    without --state-file). `key` names the setting in errors.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 key: str = "[monitor] state_file") -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._data: dict[str, Any] = self._read()
        self._changes = 0  # bumped by every change
        self._saved = 0  # the change count the file holds
        self._saver: threading.Thread | None = None
        self._closing = False
        self._failures = 0  # saves failed in a row (0: the file holds the last save)
        self._lock_fd: int | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._unusable("create directory", exc) from None

    def _unusable(self, doing: str, exc: OSError) -> ConfigError:
        where = exc.filename if exc.filename is not None else self.path
        return ConfigError([f"{self.key}: cannot {doing} {where}: {exc.strerror or exc}"])

    def acquire(self) -> None:
        """Become the only process acting on this state (run, sweep --once): two writers
        would overwrite each other's checkpoint and breakers, and act twice on an alarm."""
        if self.path is None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unusable("open", exc) from None
        try:
            give_to_directory_owner(fd, lock_path.parent)
        except OSError as exc:
            os.close(fd)
            raise self._unusable("chown", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"another reactor (run or sweep) holds {lock_path}; it acts on "
                              "every alarm by itself") from None
        self._lock_fd = fd

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
        return Checkpoint.from_json(raw)

    def set_checkpoint(self, cp: Checkpoint | None) -> None:
        with self._lock:
            if cp is None:
                self._data.pop("binlog", None)
            else:
                # a fresh record: whatever else an older record held described its position
                self._data["binlog"] = cp.as_json()
            self._changed()

    # -- breakers
    def breakers(self) -> dict[str, Any]:
        """Per process name, its breaker's record (Breaker.to_json)."""
        with self._lock:
            raw = self._data.get("breakers")
            return dict(raw) if isinstance(raw, dict) else {}

    def set_breaker(self, name: str, record: Any) -> None:
        with self._lock:
            table = self._data.setdefault("breakers", {})
            if record is None:
                table.pop(name, None)
            else:
                table[name] = record
            self._changed()

    # -- alerts: cooldown marks (key -> when last sent) and firing alerts (key -> record)
    def _alert_table(self, name: str) -> dict[str, Any]:
        raw = self._data.get("alerts")
        table = raw.get(name) if isinstance(raw, dict) else None
        return table if isinstance(table, dict) else {}

    def alert_cooldowns(self) -> dict[str, float]:
        with self._lock:
            return {k: float(v) for k, v in self._alert_table("cooldown").items()
                    if isinstance(v, int | float)}

    def firing_alerts(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._alert_table("firing").items()
                    if isinstance(v, dict)}

    def set_alert_cooldown(self, key: str, at: float | None) -> None:
        self._set_alert("cooldown", key, at)

    def set_firing_alert(self, key: str, record: dict[str, Any] | None) -> None:
        self._set_alert("firing", key, record)

    def _set_alert(self, name: str, key: str, value: object) -> None:
        with self._lock:
            section = self._data.get("alerts")
            if not isinstance(section, dict):
                section = self._data["alerts"] = {}
            table = section.get(name)
            if not isinstance(table, dict):
                table = section[name] = {}
            if value is None:
                if table.pop(key, None) is None:
                    return
            else:
                table[key] = value
            self._changed()

    # -- saving
    def _changed(self) -> None:
        """Called with the lock held after every change."""
        self._changes += 1
        if self.path is None:
            self._saved = self._changes
            return
        if self._saver is None:
            self._saver = threading.Thread(target=self._save_loop, name="state-saver",
                                           daemon=True)
            self._saver.start()
        self._cond.notify_all()

    def _save_loop(self) -> None:
        while True:
            with self._cond:
                while self._saved == self._changes and not self._closing:
                    if not self._failures:
                        self._cond.wait()
                    elif not self._cond.wait(SAVE_RETRY):
                        break  # a failed save is retried even without a new change
                if self._saved == self._changes and self._closing and not self._failures:
                    return
                last = self._closing  # closing: one last attempt, whatever it gives
                target = self._changes
                began = time.monotonic()
                # compact: the C encoder (indent= takes the pure-Python one, several times
                # slower while holding the GIL, with a storm's alerts in the file)
                payload = json.dumps(self._data, sort_keys=True,
                                     separators=(",", ":")).encode()
            try:
                self._write(payload)
            except OSError as exc:
                self._failures += 1
                if self._failures == 1:  # once per episode, not per save
                    logger.error(
                        "cannot save state to {}: {}; the file keeps the last state saved, "
                        "reactor goes on serving alarms and retries every {:g} s",
                        self.path, exc.strerror or exc, SAVE_RETRY)
            else:
                if self._failures:
                    logger.info("state saved again to {} (after {} failed save(s))",
                                self.path, self._failures)
                self._failures = 0
            with self._cond:
                self._saved = target
                self._cond.notify_all()
                if last:
                    return
                # a large state (a storm's breakers) costs its encoding and writing: the
                # next save waits SAVE_DUTY times as long, so that saving takes at most a
                # twentieth of the time (and of the GIL); closing cuts the wait short. A
                # crash meanwhile loses at most that much: a checkpoint a little older
                # (what follows it is replayed, and checked), a few breaker counts
                pause = min(SAVE_PAUSE_MAX, SAVE_DUTY * (time.monotonic() - began))
                if pause > SAVE_PAUSE_MIN:
                    self._cond.wait_for(lambda: self._closing, pause)

    def _write(self, payload: bytes) -> None:
        """tmp file -> every byte written -> fsync -> rename -> fsync(dir): the old file
        stays until the new one is complete. Raises OSError (the tmp file removed)."""
        assert self.path is not None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                give_to_directory_owner(fd, self.path.parent)  # root: stays the service's
                view = memoryview(payload)
                while view:
                    # a nearly full file system takes part of a write and returns its size
                    written = os.write(fd, view)
                    if written <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)  # a torn tmp file must not hold the space a retry needs
            except OSError:
                pass
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change so far is saved (or failed to save); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._saved == self._changes, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._saver is not None:
            self._saver.join(timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_breakers(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The breakers saved in a state file, for `reactor status`. Raises OSError when the
    file cannot be read (a missing file has no breakers)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}
    raw = data.get("breakers") if isinstance(data, dict) else None
    return dict(raw) if isinstance(raw, dict) else {}
