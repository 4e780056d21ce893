"""Plain-text tables for the operator commands: columns padded to their widest cell. Cells
come from the database: control characters are escaped (a name must not move the cursor
or clear the operator's terminal)."""

from __future__ import annotations

from typing import TextIO

from reactor.text import one_line


def table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    rows = [[one_line(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
