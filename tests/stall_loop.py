"""`reactor run` with a stalled event loop, for the watchdog test (test_service_unit.py).

    python tests/stall_loop.py MARKER run --config PATH

Runs the real CLI in this process. Once the daemon has sent READY=1 it schedules a blocking
call (time.sleep) on the event loop a moment later: no more WATCHDOG=1 pings, so systemd
must kill it for the watchdog. Only the first run stalls: the stall creates MARKER, and a
run that finds MARKER is left alone (so the test can see systemd's restart come up again).
Nothing in reactor/ knows about this; the hook is a wrapper around Notifier.ready.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from reactor.notify import Notifier
from reactor.ops import cli

STALL_AFTER = 1.0  # seconds after READY=1
STALL_FOR = 3600.0


def main() -> int:
    marker, argv = sys.argv[1], sys.argv[2:]
    if not os.path.exists(marker):
        ready = Notifier.ready

        def ready_then_stall(self: Notifier, status: str) -> None:
            ready(self, status)
            asyncio.get_running_loop().call_later(STALL_AFTER, stall, marker)

        Notifier.ready = ready_then_stall  # type: ignore[method-assign]
    return cli.main(argv)


def stall(marker: str) -> None:
    with open(marker, "w") as f:
        f.write(f"{os.getpid()}\n")
    print(f"stall_loop: blocking the event loop for {STALL_FOR:g} s", file=sys.stderr,
          flush=True)
    time.sleep(STALL_FOR)  # the event loop stops here: no WATCHDOG=1 any more


if __name__ == "__main__":
    sys.exit(main())
