"""The man pages: they render without a single warning, and they document what the code does.

- man/reactor.8 and man/reactor.ini.5 render with `man --warnings` (and lexgrog can read
  their NAME line, as mandb must) with nothing on stderr and no line wider than the page;
- reactor.ini.5 documents every key of reactor.config.KEYS, under the heading of its
  section, with the same default (and, for a number, its range: "from LOW to HIGH"), and
  no key the code does not accept; its EXAMPLE is a valid configuration;
- reactor.8 documents every subcommand and option of reactor.cli.build_parser(), every
  exit status of reactor.ops.cli and every REACTOR_AUDIT step reactor/actions/ writes.

These tests never skip: without `man` (man-db, groff-base: scripts/bootstrap.sh installs
them) they fail and say so.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reactor.actions import pipeline
from reactor.config import KEYS, Number, _figure, parse_config
from reactor.errors import ConfigError
from reactor.ops import cli

MAN = Path(__file__).resolve().parent.parent / "man"
REACTOR_8 = MAN / "reactor.8"
REACTOR_INI_5 = MAN / "reactor.ini.5"
PAGES = [REACTOR_8, REACTOR_INI_5]
WIDTH = 80

# ------------------------------------------------------------------ reading roff source

# macros whose arguments are text (fonts alternate, quotes group words)
TEXT_MACROS = {"B", "I", "BR", "RB", "BI", "IB", "IR", "RI", "SH", "SS"}
FONT = re.compile(r"\\f(?:[BIRPC]|\[[A-Z]*\])")
ESCAPES = [("\\%", ""), ("\\&", ""), ("\\-", "-"), ("\\(aq", "'"), ("\\(dq", '"'),
           ("\\(bu", "*"), ("\\e", "\\")]
# `.TP` then `\fBkey\fR = \fIdefault\fR`, or `\fBkey\fR =` for an empty default
KEY_TAG = re.compile(r"\\fB(?P<key>[A-Za-z0-9_]+)\\fR =(?: \\fI(?P<default>.*)\\fR)?")


def unescape(text: str) -> str:
    text = FONT.sub("", text)
    for escape, plain in ESCAPES:
        text = text.replace(escape, plain)
    return text


def text_of(line: str) -> str:
    """The words a source line puts on the page (requests and comments: none)."""
    if line.startswith((".", "'")):
        name, _, rest = line[1:].partition(" ")
        if name not in TEXT_MACROS:
            return ""
        line = rest.replace('"', " ")
    return " ".join(unescape(line).split())


@dataclass
class Page:
    """A page's source split by .SH and .SS headings, with the tags of its .TP entries."""

    path: Path
    lines: list[str]
    sections: dict[str, list[str]] = field(default_factory=dict)  # .SH title -> lines
    subsections: dict[str, list[str]] = field(default_factory=dict)  # .SS title -> lines
    tags: list[tuple[str, str, str, int]] = field(default_factory=list)  # (.SH, .SS, tag, n)

    def text(self, lines: list[str]) -> str:
        return "\n".join(t for t in map(text_of, lines) if t)

    def output_lines(self, lines: list[str]) -> list[str]:
        """The text of lines, one string per output line (.br and paragraphs break)."""
        out: list[str] = [""]
        for line in lines:
            if line.split(" ")[0] in (".br", ".PP", ".P", ".LP", ".sp", ".TP", ".IP"):
                out.append("")
            out[-1] = f"{out[-1]} {text_of(line)}".strip()
        return [line for line in out if line]


def read_page(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    page = Page(path, lines)
    sh = ss = ""
    for n, line in enumerate(lines, 1):
        if line.startswith(".SH"):
            sh, ss = text_of(line), ""
            page.sections.setdefault(sh, [])
            continue
        if line.startswith(".SS"):
            ss = text_of(line)
            page.subsections.setdefault(ss, [])
            page.sections.setdefault(sh, []).append(line)
            continue
        page.sections.setdefault(sh, []).append(line)
        if ss:
            page.subsections[ss].append(line)
        if n >= 2 and lines[n - 2] == ".TP":
            page.tags.append((sh, ss, line, n))
    return page


def mentions(text: str, word: str) -> bool:
    """`word` (an option, a command) stands alone in text: --all is not in --all-units."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# ------------------------------------------------------------------ rendering


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not installed, so the man pages cannot be checked: install "
                    "man-db and groff-base (scripts/bootstrap.sh does)")
    return path


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path, locale: str) -> None:
    man = require("man")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAN", "LC_", "LANG"))}
    env.update(MANWIDTH=str(WIDTH), LC_ALL=locale, MANPAGER="cat", PAGER="cat")
    result = subprocess.run([man, "--warnings", "-l", str(page)], capture_output=True,
                            env=env, timeout=120, check=False)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0 and not stderr, (
        f"man --warnings -l {page} (LC_ALL={locale}) exited {result.returncode}:\n{stderr}")
    out = result.stdout.decode("utf-8", "replace").splitlines()
    assert any(line.startswith("NAME") for line in out), f"{page.name}: no NAME section"
    wide = [line for line in out if len(line) > WIDTH]
    assert not wide, f"{page.name}: lines wider than {WIDTH} columns:\n" + "\n".join(wide)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_mandb_can_read_the_name_line(page: Path) -> None:
    lexgrog = require("lexgrog")
    result = subprocess.run([lexgrog, str(page)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"lexgrog {page}: {result.stdout}{result.stderr}"
    assert " - " in result.stdout, result.stdout


# ------------------------------------------------------------------ reactor.ini.5 vs KEYS


def documented_keys() -> dict[tuple[str, str], str]:
    """(section, key) -> default, from every `.TP` key entry of reactor.ini.5. A key entry
    outside a section heading, a malformed one or one given twice fails the test."""
    page = read_page(REACTOR_INI_5)
    found: dict[tuple[str, str], str] = {}
    problems = []
    for _, ss, tag, n in page.tags:
        match = KEY_TAG.fullmatch(tag)
        if match is None:
            if tag.startswith("\\fB") and "\\fR =" in tag:
                problems.append(f"line {n}: malformed key entry {tag!r} (want "
                                r"'\fBkey\fR = \fIdefault\fR' or '\fBkey\fR =')")
            continue
        section = re.match(r"\[([a-z]+)[].]", ss)
        if section is None:
            problems.append(f"line {n}: key {match['key']} is not under a [section] heading "
                            f"(.SS {ss!r})")
            continue
        key = (section[1], match["key"])
        if key in found:
            problems.append(f"line {n}: [{key[0]}] {key[1]} is documented twice")
        found[key] = unescape(match["default"] or "")
    assert not problems, f"{REACTOR_INI_5}:\n" + "\n".join(problems)
    return found


def test_every_key_the_code_accepts_is_documented_and_nothing_else() -> None:
    documented = documented_keys()
    accepted = {(k.section, k.name) for k in KEYS}
    missing = sorted(accepted - documented.keys())
    unknown = sorted(documented.keys() - accepted)
    assert not missing, ("keys accepted by reactor/config.py but not in reactor.ini.5: "
                         + ", ".join(f"[{s}] {k}" for s, k in missing))
    assert not unknown, ("keys in reactor.ini.5 that reactor/config.py does not accept: "
                         + ", ".join(f"[{s}] {k}" for s, k in unknown))


def test_documented_defaults_are_the_code_defaults() -> None:
    documented = documented_keys()
    wrong = [f"[{k.section}] {k.name}: reactor.ini.5 says {documented[k.section, k.name]!r}, "
             f"KEYS says {k.default!r}"
             for k in KEYS if (k.section, k.name) in documented
             and documented[k.section, k.name] != k.default]
    assert not wrong, "defaults differ:\n" + "\n".join(wrong)


def key_entries() -> dict[tuple[str, str], str]:
    """(section, key) -> the text of its entry: from its tag to the next entry or heading."""
    page = read_page(REACTOR_INI_5)
    entries: dict[tuple[str, str], str] = {}
    for _, ss, tag, n in page.tags:
        match = KEY_TAG.fullmatch(tag)
        section = re.match(r"\[([a-z]+)[].]", ss)
        if match is None or section is None:
            continue
        end = next((i for i in range(n, len(page.lines))
                    if page.lines[i].startswith((".TP", ".SS", ".SH"))), len(page.lines))
        entries[section[1], match["key"]] = " ".join(page.text(page.lines[n:end]).split())
    return entries


def test_every_number_documents_its_range() -> None:
    """The range config.Number enforces, written "from LOW to HIGH" in the key's entry."""
    entries = key_entries()
    wrong = []
    for key in KEYS:
        if isinstance(key.parse, Number):
            want = f"from {_figure(key.parse.low)} to {_figure(key.parse.high)}"
            if want not in entries.get((key.section, key.name), ""):
                wrong.append(f"[{key.section}] {key.name}: want {want!r}")
    assert not wrong, "reactor.ini.5 does not give these ranges:\n" + "\n".join(wrong)


def test_the_example_configuration_is_valid() -> None:
    lines = read_page(REACTOR_INI_5).sections.get("EXAMPLE", [])
    assert ".EX" in lines and ".EE" in lines, "reactor.ini.5 has no .EX/.EE block in EXAMPLE"
    example = "\n".join(unescape(line) for line in lines[lines.index(".EX") + 1:
                                                        lines.index(".EE")])
    try:
        config = parse_config(example, "reactor.ini.5 EXAMPLE")
    except ConfigError as exc:
        pytest.fail("the EXAMPLE of reactor.ini.5 is not a valid configuration:\n"
                    + "\n".join(exc.problems))
    assert config.processes, "the EXAMPLE of reactor.ini.5 shows no [process.NAME] section"


def test_every_config_section_has_its_heading() -> None:
    headings = read_page(REACTOR_INI_5).subsections
    for section in sorted({k.section for k in KEYS}):
        want = f"[{section}.NAME]" if section in ("process", "alert") else f"[{section}]"
        assert any(h.startswith(want) for h in headings), f"no .SS heading for {want}"


# ------------------------------------------------------------------ reactor.8 vs the CLI


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("reactor.cli.build_parser() has no subcommands")


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_command_and_option_is_documented() -> None:
    page = read_page(REACTOR_8)
    synopsis_lines = page.output_lines(page.sections.get("SYNOPSIS", []))
    synopsis = "\n".join(synopsis_lines)
    options_section = page.text(page.sections.get("OPTIONS", []))
    problems = []
    for name, sub in subcommands().items():
        lines = [line for line in synopsis_lines if mentions(line, f"reactor {name}")]
        if not lines:
            problems.append(f"{name}: not in SYNOPSIS")
        heading = f"reactor {name}"
        if heading not in page.subsections:
            problems.append(f"{name}: no .SS {heading!r} under COMMANDS")
        described = page.text(page.subsections.get(heading, [])) + "\n" + options_section
        for action in options(sub):
            for opt in action.option_strings:
                if not mentions(described, opt):
                    problems.append(f"{name}: option {opt} not described in its subsection "
                                    "or OPTIONS")
            if not any(mentions(line, opt) for line in lines for opt in action.option_strings):
                problems.append(f"{name}: option {'/'.join(action.option_strings)} not in "
                                "its SYNOPSIS lines")
        for action in [a for a in sub._actions if not a.option_strings and a.choices]:
            for choice in action.choices or []:
                if not any(mentions(line, f"reactor {name} {choice}") for line in lines):
                    problems.append(f"{name}: 'reactor {name} {choice}' not in SYNOPSIS")
                if not mentions(page.text(page.subsections.get(heading, [])), choice):
                    problems.append(f"{name}: {choice} not described in its subsection")
    for action in options(cli.build_parser()):
        for opt in action.option_strings:
            if not (mentions(synopsis, opt) and mentions(options_section, opt)):
                problems.append(f"reactor {opt}: not in both SYNOPSIS and OPTIONS")
    assert not problems, f"{REACTOR_8}:\n" + "\n".join(problems)


def test_every_exit_status_is_documented() -> None:
    page = read_page(REACTOR_8)
    documented = {text_of(tag) for sh, _, tag, _ in page.tags if sh == "EXIT STATUS"}
    codes = {str(v) for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert codes, "reactor.cli defines no EXIT_* constants"
    missing = sorted(codes - documented, key=int)
    assert not missing, f"exit statuses of reactor.cli not under EXIT STATUS: {missing}"


def test_every_audit_step_is_documented() -> None:
    source = "".join(p.read_text(encoding="utf-8")
                     for p in Path(pipeline.__file__).parent.glob("*.py"))
    written = set(re.findall(r'\bstep\(\s*"([a-z_]+)"', source))
    assert written, "no step(...) calls found in reactor/actions/"
    page = read_page(REACTOR_8)
    documented = {text_of(tag) for _, ss, tag, _ in page.tags if ss == "Audit steps"}
    assert not written - documented, (
        f"audit steps written by reactor/actions/ but not under 'Audit steps' in "
        f"reactor.8: {sorted(written - documented)}")
    assert not documented - written, (
        f"audit steps in reactor.8 that reactor/actions/ never writes: "
        f"{sorted(documented - written)}")
