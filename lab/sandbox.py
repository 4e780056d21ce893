"""A real systemd user manager, isolated in its own cgroup, PID and mount namespaces.

This follows ../shared/docs/systemd-sandbox.md. NEVER start systemd any other way on a
shared machine: started bare it moves every process of the machine into its cgroups.

    sbx = SystemdSandbox(tmpdir).start()
    sbx.write_unit("demo.service", "[Service]\\nExecStart=/bin/sleep infinity\\n")
    ... D-Bus clients use sbx.address (a session bus) ...
    sbx.stop()

Only the namespace's own PID 1 is ever killed (which takes everything inside with it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab import LabUnavailable
from reactor.actions.systemd import unit_path

SYSTEMD = "/lib/systemd/systemd"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Runs inside the new namespaces: private /run/systemd and fresh cgroup mounts whose root is
# the sandbox's child cgroup, then a session bus and `systemd --user` on it.
_INSIDE = r"""
set -e
mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system
# what PID 1 creates at boot: the nodes ProtectHome=, InaccessiblePaths= ... mount over paths
mkdir /run/systemd/inaccessible && cd /run/systemd/inaccessible
touch reg && mkdir dir && mkfifo fifo && mknod chr c 0 0 && mknod blk b 0 0
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
chmod 0 reg dir fifo chr blk sock && cd /
mount -t tmpfs tmpfs /sys/fs/cgroup
for c in $V1; do mkdir /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
mkdir /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
export XDG_RUNTIME_DIR=$D/xrt XDG_CONFIG_HOME=$D/config HOME=$D
dbus-daemon --session --address=unix:path=$D/xrt/bus --fork --nopidfile
DBUS_SESSION_BUS_ADDRESS=unix:path=$D/xrt/bus /lib/systemd/systemd --user --log-target=console &
wait
"""

# Runs outside: move this shell into a child cgroup of every hierarchy (cpuset skipped: it
# would need cpus/mems), then become the namespaces' launcher.
_OUTSIDE = r"""
for h in /sys/fs/cgroup/*/; do
  [ -f "$h/cgroup.procs" ] || continue
  case $h in *cpuset*) continue;; esac
  mkdir -p "$h$NAME" && echo $$ > "$h$NAME/cgroup.procs"
done
exec setsid unshare --cgroup --pid --fork --mount-proc --mount --propagation private \
  bash -c "$INSIDE"
"""


def _v1_controllers() -> list[str]:
    """The cgroup v1 controllers mounted one per directory, as this recipe needs."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup" and parts[1].startswith("/sys/fs/cgroup/"):
            name = parts[1].rsplit("/", 1)[1]
            if name != "systemd":
                found.append(name)
    return found


def check_available() -> None:
    """Raise LabUnavailable with the reason when this machine cannot run the sandbox."""
    if os.geteuid() != 0:
        raise LabUnavailable("the systemd sandbox needs root (cgroups and namespaces)")
    for tool in ("unshare", "setsid", "dbus-daemon", "busctl"):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"{tool} not found (apt-get install util-linux dbus systemd)")
    if not os.access(SYSTEMD, os.X_OK):
        raise LabUnavailable(f"{SYSTEMD} not found (apt-get install systemd)")
    mounts = Path("/proc/mounts").read_text()
    if " /sys/fs/cgroup/systemd cgroup " not in mounts or not _v1_controllers():
        raise LabUnavailable(
            "the sandbox recipe needs the hybrid cgroup layout (v1 controllers and "
            "/sys/fs/cgroup/systemd); this machine has another"
        )
    if not os.access(CGROUP_ROOT / "systemd", os.W_OK):
        raise LabUnavailable("/sys/fs/cgroup is not writable here")


class SystemdSandbox:
    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.dir = Path(base).resolve()
        self.name = f"reactor-sbx-{os.getpid()}-{self.dir.name}"
        self.address = f"unix:path={self.dir}/xrt/bus"
        self.unit_dir = self.dir / "config" / "systemd" / "user"
        self.log = self.dir / "systemd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> SystemdSandbox:
        check_available()
        (self.dir / "xrt").mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "xrt", 0o700)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "D": str(self.dir),
            "NAME": self.name,
            "V1": " ".join(c for c in _v1_controllers()),
            "INSIDE": _INSIDE,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["bash", "-c", _OUTSIDE], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sandboxed systemd did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        done = subprocess.run(
            ["busctl", f"--address={self.address}", "status", "org.freedesktop.systemd1"],
            capture_output=True, check=False,
        )
        return done.returncode == 0

    def busctl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["busctl", f"--address={self.address}", *args],
                              capture_output=True, text=True, check=False, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"busctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def manager(self, method: str, signature: str = "", *args: str, check: bool = True) -> str:
        return self.busctl("call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                           "org.freedesktop.systemd1.Manager", method,
                           *((signature, *args) if signature else ()), check=check)

    def write_unit(self, name: str, text: str, *, reload: bool = True) -> Path:
        path = self.unit_dir / name
        path.write_text(text)
        if reload:
            self.reload()
        return path

    def reload(self) -> None:
        self.manager("Reload")

    def unit_property(self, unit: str, prop: str, interface: str = "Unit") -> str:
        """A unit property as busctl prints it, value only (e.g. 'active', '1234')."""
        path = unit_path(unit)
        out = self.busctl("get-property", "org.freedesktop.systemd1", path,
                          f"org.freedesktop.systemd1.{interface}", prop)
        _, _, value = out.strip().partition(" ")
        return value.strip('"')

    def _namespace_init(self) -> int | None:
        """The host PID of the namespace's PID 1 (found under our own cgroup only)."""
        top = CGROUP_ROOT / "systemd" / self.name
        if not top.is_dir():
            return None
        for procs in top.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) >= 2 and ids[-1] == "1":
                            return int(pid)
        return None

    def stop(self) -> None:
        """Kill the namespace's PID 1 (the kernel ends everything inside), remove cgroups."""
        init = self._namespace_init()
        if init is not None:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass  # never kill by name; the launcher exits when its child does
            self.proc = None
        deadline = time.monotonic() + 10
        for hierarchy in CGROUP_ROOT.iterdir():
            top = hierarchy / self.name
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True) + [top]:
                while True:
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)

