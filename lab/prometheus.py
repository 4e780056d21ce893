"""A throwaway Prometheus server (Debian's /usr/bin/prometheus) in a temporary directory,
on its own loopback port, scraping the targets it is given; and promtool.

Used by the tests and the demo; never the machine's packaged service: its own config file,
its own TSDB directory, 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lab import LabUnavailable
from lab.mariadb import free_port

# loopback only: never through an http_proxy of the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LabUnavailable(f"{name} not found: install Prometheus (apt-get install prometheus)")


class Prometheus:
    """One prometheus process scraping `targets` (host:port) every `interval` seconds."""

    def __init__(self, base: str | os.PathLike[str], targets: list[str], *,
                 interval: float = 0.5, rule_files: list[str] | None = None) -> None:
        self.dir = Path(base)
        self.port = free_port()
        self.targets = targets
        self.interval = interval
        self.rule_files = rule_files or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Prometheus:
        exe = binary("prometheus")
        self.dir.mkdir(parents=True, exist_ok=True)
        ms = max(1, int(self.interval * 1000))
        config = self.dir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": f"{ms}ms", "scrape_timeout": f"{ms}ms",
                       "evaluation_interval": f"{ms}ms"},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": "reactor",
                                "static_configs": [{"targets": self.targets}]}],
        }, indent=1))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabUnavailable(f"prometheus exited ({self.proc.returncode}): "
                                     + self.log.read_text()[-2000:])
            try:
                with _OPENER.open(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise LabUnavailable(f"prometheus not ready within {timeout:g} s: "
                             + self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH?params; the `data` of a successful answer."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with _OPENER.open(url, timeout=10) as reply:
            body = json.loads(reply.read())
        if body.get("status") != "success":
            raise RuntimeError(f"{url}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=promql)
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, None when it has no result."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"{promql}: {len(result)} series, wanted one")
        return float(result[0]["value"][1])


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
