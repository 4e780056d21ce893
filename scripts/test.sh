#!/bin/sh
# The test suite: lint, types, then pytest against a throwaway MariaDB and a sandboxed systemd.
# Integration tests that cannot start their MariaDB or systemd FAIL rather than skip; on a
# machine that cannot run them (no root, no cgroups) set REACTOR_ALLOW_SKIP=1.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
