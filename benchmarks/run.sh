#!/bin/sh
# The benchmark in one command: binlog reactor vs polling, side by side.
#   benchmarks/run.sh [--quick] [--only PHASE ...] [--help for every option]
#   benchmarks/run.sh --only fleet [--quick] [...]   the fleet benchmark (benchmarks/fleet.py)
# Installs what is missing (scripts/bootstrap.sh), then runs benchmarks/bench.py with the
# project's virtualenv. Results: benchmarks/results/latest.{json,md,png}.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ "${1:-}" = "--only" ] && [ "${2:-}" = "fleet" ]; then
  shift 2
  exec .venv/bin/python -m benchmarks.fleet "$@"
fi
exec .venv/bin/python -m benchmarks.bench "$@"
