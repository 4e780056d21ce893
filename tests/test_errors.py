"""The one error tree: every public exception of reactor lives in reactor/errors.py, is drawn
in its docstring, and has an exit status in the CLI without a special case."""

from __future__ import annotations

import ast
import inspect

import pytest

from reactor import errors
from reactor.ops import cli
from tests.conftest import REPO


def _own_classes() -> list[type[BaseException]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == errors.__name__]


def test_every_error_class_is_in_the_documented_tree() -> None:
    doc = errors.__doc__ or ""
    drawn = {line.lstrip(" │├└─").split()[0] for line in doc.splitlines()
             if line.lstrip(" │├└─") and line.lstrip(" │├└─")[0].isupper()}
    missing = sorted(c.__name__ for c in _own_classes() if c.__name__ not in drawn)
    assert not missing, f"error classes missing from errors.py's tree: {missing}"


def test_no_public_exception_outside_errors_py() -> None:
    """A public exception class anywhere else in reactor/ would be outside the tree (private
    ones, `_Name`, stay inside the adapter that raises and catches them)."""
    outside = []
    for path in (REPO / "reactor").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(b) for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Unavailable", "Refused", "Timeout",
                                   "Lost", "Locked", "NotFound", "Failed", "Denied"))
                       for b in bases):
                    outside.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not outside, f"public exceptions outside reactor/errors.py: {outside}"


@pytest.mark.parametrize(("exc", "code", "prefix"), [
    (errors.ConfigError(["[monitor] mode: bad"]), cli.EXIT_CONFIG, ""),
    (errors.DatabaseUnavailable("down"), cli.EXIT_DATABASE, "database unavailable: "),
    (errors.DatabaseRefused("denied"), cli.EXIT_DATABASE, "database refused: "),
    (errors.ServerNotSuitable("MIXED"), cli.EXIT_SERVER, ""),
    (errors.BinlogRefused("no grant"), cli.EXIT_SERVER, ""),
    (errors.BusUnavailable("gone"), cli.EXIT_BUS, "D-Bus unavailable: "),
    (errors.StateLocked("held"), cli.EXIT_FAILED, ""),
    (errors.NotFound("no such process"), cli.EXIT_FAILED, ""),
])
def test_each_error_has_its_exit_status(exc: errors.ReactorError, code: int, prefix: str) -> None:
    assert cli.exit_code(exc) == (code, prefix)


def test_every_error_class_maps_to_an_exit_status() -> None:
    for cls in _own_classes():
        if issubclass(cls, errors.ReactorError):
            code, _ = cli.exit_code(cls.__new__(cls))
            assert code in (cli.EXIT_CONFIG, cli.EXIT_DATABASE, cli.EXIT_SERVER, cli.EXIT_BUS,
                            cli.EXIT_FAILED), cls
