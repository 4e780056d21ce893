"""A full disk never costs the state: `reactor run` with its state file on a small tmpfs
(mounted for the test in a mount namespace of reactor's own: `unshare --mount`, nothing
of the machine's is touched) that is filled up while it runs.

A save that only partly fit used to replace the good file with a torn one (the first
4,096 bytes of a longer JSON), without a word, and the next start ran without its breakers
and checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc, unavailable, wait_for
from tests.rig import Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]
# mount a 64 KiB tmpfs on $1, put the seed state file $2 in it, then run the rest
MOUNT = ('mount -t tmpfs -o size=64k,mode=0700 tmpfs "$1" && cp "$2" "$1/state.json" '
         '&& shift 2 && exec "$@"')


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


def saves_failed(p: Proc) -> int:
    return sum("cannot save state" in line for line in p.err_lines)


def test_a_full_file_system_never_tears_the_state_file(rig: Rig, tmp_path: Path) -> None:
    """The state (150 breakers: about 15 KB of JSON) is saved after every alarm. With one
    page left on its file system: the file keeps the last complete state, one ERROR says
    so for the whole episode, alarms go on being handled; once space is freed the state is
    saved again (and a new episode gets its own ERROR)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        unavailable("unshare (util-linux) is not installed")
    directory = tmp_path / "state"
    directory.mkdir()
    seed = tmp_path / "seed.json"
    breakers = {f"retired-process-{i:04d}-{'x' * 40}": {"state": "closed", "failures": 1,
                                                        "until": 0.0} for i in range(150)}
    seed.write_text(json.dumps({"breakers": breakers}))
    pids = [rig.add(f"full{n}")[0] for n in range(4)]
    config = rig.config(monitor={"state_file": directory / "state.json"})
    p = Proc(["run", "--config", str(config)],
             wrapper=(str(unshare), "--mount", "--propagation", "private", "sh", "-c", MOUNT,
                      "sh", str(directory), str(seed)))
    rig.procs.append(p)
    p.wait_stderr("ready: mode=binlog")
    inside = Path(f"/proc/{p.proc.pid}/root") / directory.relative_to("/")
    state = inside / "state.json"

    def saved() -> dict[str, object]:
        data = json.loads(state.read_text())  # never torn: always a whole JSON document
        assert data["breakers"] == breakers
        return dict(data["binlog"])

    rig.alarm(pids[0])
    rig.wait_cleared(pids[0])
    first = wait_for(lambda: "binlog" in json.loads(state.read_text()) and saved(),
                     what="a checkpoint saved")

    def fill() -> None:
        """Leave one page: a save needs as many as the state file has (its tmp copy is
        written before the old file goes). A save still writing its tmp file makes the
        filler not fit: then try again once it is done."""
        def filled() -> bool:
            st = os.statvfs(inside)
            pages = -(-state.stat().st_size // st.f_frsize)
            try:
                with open(inside / "filler", "wb") as f:
                    f.write(b"\0" * ((st.f_blocks - pages - 1) * st.f_frsize))
            except OSError:
                (inside / "filler").unlink()
                return False
            return True

        wait_for(filled, what="the tmpfs filled up to its last page")

    torn: list[int] = []  # sizes of the state file whenever it was not a whole JSON document
    done = threading.Event()

    def watch_file() -> None:  # a torn file may be repaired by the next save: look often
        while not done.wait(0.002):
            try:
                text = state.read_text()
                json.loads(text)
            except ValueError:
                torn.append(len(text))
            except OSError:
                pass

    watcher = threading.Thread(target=watch_file, daemon=True)
    watcher.start()
    fill()
    rig.alarm(pids[1])
    rig.wait_cleared(pids[1])
    rig.alarm(pids[2])
    rig.wait_cleared(pids[2])  # serving alarms all along
    assert torn == [], f"the state file was torn: {torn[:5]} bytes"
    assert saved() == first
    p.wait_stderr(r"ERROR .*cannot save state to .*state\.json: No space left on device")
    assert saves_failed(p) == 1, p.stderr
    assert not (inside / ".state.json.tmp").exists()

    (inside / "filler").unlink()
    p.wait_stderr(r"INFO .*state saved again to .*state\.json", timeout=20)
    again = saved()
    assert (again["file"], again["pos"]) > (first["file"], first["pos"])

    fill()  # a second episode: its own ERROR
    rig.alarm(pids[3])
    rig.wait_cleared(pids[3])
    wait_for(lambda: saves_failed(p) == 2, what="the second episode's ERROR")
    assert saved() == again
    (inside / "filler").unlink()
    done.set()
    watcher.join(5)
    assert torn == [], f"the state file was torn: {torn[:5]} bytes"
    assert p.stop() == 0
