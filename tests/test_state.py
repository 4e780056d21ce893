"""The state file: atomic saves, corrupt files survived."""

from __future__ import annotations

from pathlib import Path

from reactor.state import Checkpoint, StateFile


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
