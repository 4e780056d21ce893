"""A throwaway Alertmanager (Debian's prometheus-alertmanager) on its own loopback port.

    am = Alertmanager(tmpdir).start()
    ... [alert.am] url = am.url ...
    am.alerts()                  # GET /api/v2/alerts: the alerts it holds, active ones
    am.stop()

Its own minimal configuration (one receiver that sends nothing), its own storage
directory, clustering off (`--cluster.listen-address=`). The packaged service is never
touched. Only the process started here is ever stopped, by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab import LabUnavailable
from lab.mariadb import free_port

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """route:
  receiver: "null"
  group_wait: 1s
receivers:
  - name: "null"
"""


class Alertmanager:
    def __init__(self, base: str | os.PathLike[str], *, port: int | None = None) -> None:
        self.dir = Path(base)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager") or BINARY
        if not os.access(binary, os.X_OK):
            raise LabUnavailable("prometheus-alertmanager not found: apt-get install "
                                 "prometheus-alertmanager (scripts/bootstrap.sh does)")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "alertmanager.yml").write_text(CONFIG)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.dir / 'alertmanager.yml'}",
                 f"--storage.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabUnavailable(f"alertmanager exited {self.proc.returncode}: "
                                     f"{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise LabUnavailable(f"alertmanager not ready within {timeout:g} s")

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: every alert that is not resolved."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as answer:
            data: list[dict[str, Any]] = json.load(answer)
        return data

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
