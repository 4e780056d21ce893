"""`reactor menu`: the bash tool's test_alarm.sh menu, against the real database."""

from __future__ import annotations

import sys
from typing import TextIO

from reactor.config import Config
from reactor.errors import ReactorError
from reactor.ops import alarms
from reactor.text import one_line

MENU = """
reactor test menu ({where})
  1) Display all services
  2) Set a specific service in alarm state
  3) Set all services in alarm state
  4) Reset all alarms
  5) Quit
"""


def run(config: Config, inp: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    def ask(prompt: str) -> str | None:
        out.write(prompt)
        out.flush()
        line = inp.readline()
        return None if not line else line.strip()

    while True:
        out.write(MENU.format(where=alarms.where(config)))
        choice = ask("Choice [1-5]: ")
        if choice is None or choice in ("5", "q", "quit"):
            out.write("bye\n")
            return 0
        try:
            if choice == "1":
                alarms.print_processes(config, out)
            elif choice == "2":
                ident = ask("Process id or name: ")
                if not ident:
                    continue
                changed = alarms.set_alarm(config, ident, 1)
                out.write(f"alarm set for {one_line(changed[0][1])} (id {changed[0][0]})\n"
                          if changed else f"{ident} is already in alarm\n")
            elif choice == "3":
                changed = alarms.set_alarm(config, None, 1)
                out.write(f"alarm set for {len(changed)} process(es)\n")
            elif choice == "4":
                changed = alarms.set_alarm(config, None, 0)
                out.write(f"alarm reset for {len(changed)} process(es)\n")
            else:
                out.write(f"unknown choice {choice!r}\n")
        except ReactorError as exc:
            out.write(f"error: {exc}\n")
