"""Text from outside (the database above all) made safe to print: one line, no control
sequences.

Anyone who can write PROCESE chooses process names, and names reach log lines, the
journal, STATUS_PROCESS.notes, REACTOR_AUDIT details and alerts. A newline in a name
would start a log line of its own (a forged record); under journald a line that begins
`<0>` becomes an emergency-priority entry; an escape character drives the terminal that
shows the log. `one_line()` escapes every such character the way Python writes it in a
string literal (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\u2028`), so that the text stays on its line and
still says what it held. Every stage may import this module; it imports nothing of
reactor.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators (which
# str.splitlines() and some log viewers take for line breaks)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(value: object, limit: int | None = None) -> str:
    """str(value) with every control character escaped; at most `limit` characters, never
    cutting an escape in two."""
    text = value if isinstance(value, str) else str(value)
    if _UNSAFE.search(text) is None:
        return text if limit is None else text[:limit]
    if limit is None:
        return _UNSAFE.sub(_escape, text)
    out: list[str] = []
    size = pos = 0
    for match in _UNSAFE.finditer(text):
        plain = text[pos:match.start()]
        if size + len(plain) >= limit:
            out.append(plain[:limit - size])
            return "".join(out)
        escaped = _escape(match)
        out.append(plain)
        size += len(plain)
        if size + len(escaped) > limit:
            return "".join(out)
        out.append(escaped)
        size += len(escaped)
        pos = match.end()
    out.append(text[pos:pos + limit - size])
    return "".join(out)


def has_control(text: str) -> re.Match[str] | None:
    """The first control character in text (see one_line), if any."""
    return _UNSAFE.search(text)


def id_list(ids: list[int], most: int = 20) -> str:
    """`7, 9, 12`: the first `most` ids, then ` ...` when there are more (for log lines)."""
    return ", ".join(map(str, ids[:most])) + (" ..." if len(ids) > most else "")
