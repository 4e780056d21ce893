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
    assert StateFile(path).checkpoint() == Checkpoint("binlog.000001", 4)


def test_memory_only_state(tmp_path: Path) -> None:
    s = StateFile(None)
    s.set_checkpoint(Checkpoint("b.1", 5))
    assert s.checkpoint() == Checkpoint("b.1", 5)
