"""The state file: atomic saves, corrupt files survived."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reactor.errors import ConfigError
from reactor.storage.statefile import Checkpoint, StateFile
from tests.conftest import REACTOR, REPO

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")


def test_checkpoint_and_breakers_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    s = StateFile(path)
    assert s.checkpoint() is None
    s.set_checkpoint(Checkpoint("binlog.000007", 1234))
    s.set_breaker("nginx", {"state": "open", "until": 99.0})
    s.close()
    again = StateFile(path)
    assert again.checkpoint() == Checkpoint("binlog.000007", 1234)
    assert again.breakers() == {"nginx": {"state": "open", "until": 99.0}}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "sub" / ".state.json.tmp").exists()


def test_corrupt_file_is_treated_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{torn")
    s = StateFile(path)
    assert s.checkpoint() is None
    s.set_checkpoint(Checkpoint("binlog.000001", 4))
    s.close()
    assert StateFile(path).checkpoint() == Checkpoint("binlog.000001", 4)


def test_memory_only_state(tmp_path: Path) -> None:
    s = StateFile(None)
    s.set_checkpoint(Checkpoint("b.1", 5))
    assert s.checkpoint() == Checkpoint("b.1", 5)


def test_changes_do_not_wait_for_the_disk_and_flush_does(tmp_path: Path) -> None:
    """The saver thread coalesces: many changes, one flush, the file holds the last one."""
    path = tmp_path / "state.json"
    s = StateFile(path)
    for pos in range(4, 2004):
        s.set_checkpoint(Checkpoint("binlog.000001", pos))
    assert s.flush()
    assert StateFile(path).checkpoint() == Checkpoint("binlog.000001", 2003)
    s.close()


def test_a_failed_save_is_logged_and_retried(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    s = StateFile(directory / "state.json")
    (directory / ".state.json.tmp").mkdir()
    s.set_checkpoint(Checkpoint("b.1", 5))
    assert s.flush()
    assert not (directory / "state.json").exists()
    (directory / ".state.json.tmp").rmdir()
    s.set_checkpoint(Checkpoint("b.1", 6))
    assert s.flush()
    assert StateFile(directory / "state.json").checkpoint() == Checkpoint("b.1", 6)
    s.close()


def test_a_state_directory_that_cannot_be_created_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        StateFile("/proc/1/nope/state.json")
    assert info.value.problems == [
        "[monitor] state_file: cannot create directory /proc/1/nope: No such file or directory"]


def test_a_lock_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "state.json.lock").mkdir()
    s = StateFile(tmp_path / "state.json")
    with pytest.raises(ConfigError) as info:
        s.acquire()
    assert info.value.problems == [
        f"[monitor] state_file: cannot open {tmp_path}/state.json.lock: Is a directory"]


def unusable_state(tmp_path: Path, state_file: str, *command: str) -> list[str]:
    """`reactor COMMAND` with this state_file (no database, no bus: it must stop before)."""
    config = tmp_path / "c.ini"
    config.write_text("[database]\nuser = r\nhost = 127.0.0.1\nport = 1\n"
                      f"[monitor]\nstate_file = {state_file}\n"
                      "[systemd]\nbus = unix:path=/nonexistent/reactor-test-bus\n"
                      "[logging]\nlog_file =\n")
    config.chmod(0o600)
    done = subprocess.run([*REACTOR, *command, "--config", str(config)], capture_output=True,
                          text=True, cwd=REPO, check=False, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    prefix = f"reactor: {config}: "
    return [line.removeprefix(prefix) for line in done.stderr.splitlines()
            if line.startswith(prefix)]


@pytest.mark.parametrize("command", [["run"], ["sweep", "--once"]])
def test_an_unusable_state_file_stops_the_daemon_with_exit_1(tmp_path: Path,
                                                             command: list[str]) -> None:
    """Before the database is asked (port 1 would give exit 3): the key, the path, why."""
    assert unusable_state(tmp_path, "/proc/1/nope/state.json", *command) == [
        "[monitor] state_file: cannot create directory /proc/1/nope: No such file or directory"]
    (tmp_path / "s.json.lock").mkdir()
    assert unusable_state(tmp_path, str(tmp_path / "s.json"), *command) == [
        f"[monitor] state_file: cannot open {tmp_path}/s.json.lock: Is a directory"]


@as_root
def test_files_root_creates_belong_to_the_owner_of_the_directory(tmp_path: Path) -> None:
    """`reactor sweep --once` run by root must not leave files the service cannot open."""
    directory = tmp_path / "state"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    s = StateFile(directory / "state.json")
    s.acquire()
    s.set_checkpoint(Checkpoint("b.1", 5))
    s.close()
    for name in ("state.json", "state.json.lock"):
        st = (directory / name).stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), name
    # a directory of root's own: nothing is given away
    s = StateFile(tmp_path / "state.json")
    s.acquire()
    s.close()
    assert (tmp_path / "state.json.lock").stat().st_uid == 0
