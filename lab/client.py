"""What the demo, the tests and the benchmarks do as the operator's side: write a config
file, and watch a row the way a client would."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

CLEAR_POLL = 0.0005  # seconds between a client's reads of a row


def write_config(path: str | os.PathLike[str],
                 sections: Mapping[str, Mapping[str, Any]]) -> str:
    """An INI file of `sections` ({"database": {"port": 3306, ...}, "process.x": {...}}),
    mode 0600 as the reactor expects of a file holding a password. Returns the path."""
    text = "".join(
        f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
        for section, values in sections.items())
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return os.fspath(path)


def wait_cleared(cur: Any, pid: int, timeout: float) -> float | None:
    """Read the process's row every CLEAR_POLL s on an open cursor; the wall-clock time
    alarma=0 was first seen, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute("SELECT alarma FROM STATUS_PROCESS WHERE process_id = %s", (pid,))
        row = cur.fetchone()
        if row is not None and row[0] == 0:
            return time.time()
        time.sleep(CLEAR_POLL)
    return None
