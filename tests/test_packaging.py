"""What `pip install .` puts on a server: the reactor package with every sub-package, and
nothing of the lab (throwaway MariaDB, systemd sandbox, demo), the tests or the benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

NOT_SHIPPED = ("lab/", "tests/", "benchmarks/", "scripts/")


def _checkout_copy(dest: Path) -> Path:
    """The files a clean clone has, without this checkout's venv and build leftovers."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_the_installed_package_has_every_stage_and_no_lab_code(tmp_path: Path) -> None:
    """Build the wheel as `pip install .` does, install it into an empty directory, and look
    at what landed there: every module of reactor/, its entry point, and no lab code."""
    src = _checkout_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("reactor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if n.startswith(NOT_SHIPPED) or n.startswith("lab")]
    assert not shipped, f"the wheel ships code that is not the daemon's: {shipped}"
    modules = sorted(str(p.relative_to(REPO)) for p in (REPO / "reactor").rglob("*.py"))
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules of reactor/ missing from the wheel: {missing}"
    (entry,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "reactor = reactor.ops.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert top == ["bin", "reactor"] or top == ["reactor"], top
    # a Python that sees only the standard library and the install: reactor is there, the
    # lab is not
    probe = "import reactor, importlib.util as u; print(u.find_spec('lab'))"
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path,
                          env={"PYTHONPATH": str(target)}, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "None"


def test_the_readme_architecture_matches_the_tree() -> None:
    """Every sub-package of reactor/ and every top-level module is in the README's tree, and
    the tree names nothing that does not exist."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```", 2)[1]
    drawn_packages = set(re.findall(r"^  (\w+)/", tree, re.M))
    real_packages = {p.parent.name for p in (REPO / "reactor").glob("*/__init__.py")}
    assert drawn_packages == real_packages
    drawn_modules = {m for line in re.findall(r"^  ((?:\w+\.py\s+)+)", tree, re.M)
                     for m in line.split()}
    real_modules = {p.name for p in (REPO / "reactor").glob("*.py")} - {"__init__.py",
                                                                       "__main__.py"}
    assert drawn_modules == real_modules
    for path in re.findall(r"\b((?:sources|actions|storage|ops|alerts|metrics)/\w+\.py)",
                           section):
        assert (REPO / "reactor" / path).is_file(), f"README names reactor/{path}"
