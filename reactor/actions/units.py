"""Pure: which unit an alarm names, and whether the reactor may touch it.

Process names come from the database: anyone who can write PROCESE chooses them. They are
checked here before anything else happens, and never reach a shell anywhere (commands run
as argv; `%s` becomes exactly one argument).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from reactor.config import UNIT_SUFFIXES, Config, ProcessConfig, builtin_denied
from reactor.errors import Refused

# A process name: what a unit prefix or a program name can be. No leading '-' (it would
# become an option of a command given %s), no spaces, quotes or shell metacharacters.
_PROCESS_NAME = re.compile(r"[A-Za-z0-9_.@:+][A-Za-z0-9_.@:+\-]{0,99}")
# systemd's unit-name alphabet (unit_name_is_valid): letters, digits, ":-_.\" and one "@".
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\-]+")
UNIT_NAME_MAX = 255


def valid_unit_name(unit: str) -> bool:
    """systemd's rules: NAME.SUFFIX or PREFIX@INSTANCE.SUFFIX, a known suffix, at most 255
    characters, only [A-Za-z0-9:-_.\\] besides the one '@'. Templates (PREFIX@.SUFFIX)
    cannot be started and are refused."""
    if len(unit) > UNIT_NAME_MAX:
        return False
    stem, dot, suffix = unit.rpartition(".")
    if not dot or f".{suffix}" not in UNIT_SUFFIXES or not stem:
        return False
    prefix, at, instance = stem.partition("@")
    if not prefix or not _UNIT_CHARS.fullmatch(prefix):
        return False
    if at:
        return bool(instance) and "@" not in instance and bool(_UNIT_CHARS.fullmatch(instance))
    return True


@dataclass(frozen=True, slots=True)
class Target:
    """What one alarm's cycle acts on."""

    name: str  # process_name from PROCESE
    unit: str  # the systemd unit it maps to
    settings: ProcessConfig


def resolve(config: Config, name: str | None, pid: int) -> Target:
    """The target of an alarm, or Refused with a reason fit for the notes column."""
    if name is None:
        raise Refused(f"unknown process id {pid} (not in PROCESE)")
    if not _PROCESS_NAME.fullmatch(name):
        raise Refused(f"invalid process name {name[:40]!r}")
    unit = config.unit_for(name)
    settings = config.for_process(name)
    if settings.restart_strategy != "process" and not valid_unit_name(unit):
        raise Refused(f"invalid unit name {unit[:40]!r}")
    if builtin_denied(unit) or unit == own_unit():
        raise Refused(f"unit {unit} is denied: reactor never acts on it (built-in list)")
    if not config.unit_allowed(unit):
        raise Refused(f"unit {unit} is denied by [monitor] allowed_units/denied_units")
    return Target(name, unit, settings)


@functools.cache
def own_unit() -> str | None:
    """The service unit reactor itself runs in (from its cgroup), if any: never restarted,
    whatever it is called."""
    unit = unit_of("self")
    return unit if unit is not None and unit.endswith(".service") else None


def unit_of(pid: int | str) -> str | None:
    """The unit a process belongs to: the innermost service or scope of its cgroup path
    (/proc/PID/cgroup); None when it is in none, or is gone."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return cgroup_unit(f.read())
    except OSError:
        return None


def cgroup_unit(text: str) -> str | None:
    """cgroup_unit(contents of /proc/PID/cgroup): the systemd hierarchy's line
    ("N:name=systemd:PATH", cgroup v1 and hybrid) wins over the unified one ("0::PATH")."""
    paths = {}
    for line in text.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers in ("", "name=systemd"):
            paths[controllers] = path
    for controllers in ("name=systemd", ""):
        units = [part for part in paths.get(controllers, "").split("/")
                 if part.endswith((".service", ".scope"))]
        if units:
            return units[-1]
    return None
