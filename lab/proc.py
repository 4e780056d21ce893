"""A `reactor` subprocess driven by another program (tests, demo, benchmarks): its stdout
and stderr are read line by line by threads, so the caller can wait for a line."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ReactorProcess:
    """A `reactor` subprocess whose stdout and stderr lines are read by threads."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *,
                 echo_stderr: bool = False, wrapper: tuple[str, ...] = ()) -> None:
        """`wrapper`: a command that runs reactor's (e.g. unshare; it must exec it, so that
        the process is reactor's)."""
        self.args = args
        self.echo_stderr = echo_stderr
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "reactor", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=REPO, bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        self._err_cond = threading.Condition()
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self.echo_stderr:
                sys.stderr.write("    | " + line)
                sys.stderr.flush()
            with self._err_cond:
                self.err_lines.append(line)
                self._err_cond.notify_all()
        with self._err_cond:
            self._err_cond.notify_all()

    @property
    def stderr(self) -> str:
        with self._err_cond:
            return "".join(self.err_lines)

    def wait_stderr(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait for a stderr line matching pattern (searching from line `start`)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._err_cond:
            while True:
                for line in self.err_lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._more_coming()):
                    raise AssertionError(
                        f"no stderr line matching {pattern!r} (exit={self.proc.poll()}):\n"
                        + "".join(self.err_lines)[-4000:])
                self._err_cond.wait(min(left, 0.2))

    def _more_coming(self) -> bool:
        return self.proc.stderr is not None and not self.proc.stderr.closed

    def line(self, timeout: float = 10.0) -> str:
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no stdout line within {timeout} s; stderr:\n{self.stderr[-4000:]}") from None

    def lines_for(self, seconds: float) -> list[str]:
        """Every stdout line that arrives in the next `seconds`."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.out.get(timeout=left))
            except queue.Empty:
                break
        return got

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"reactor did not stop on SIGTERM:\n{self.stderr[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
