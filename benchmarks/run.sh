#!/bin/sh
# The benchmark in one command: binlog reactor vs polling, side by side.
#   benchmarks/run.sh [--quick] [--only PHASE ...] [--help for every option]
# Installs what is missing (scripts/bootstrap.sh), then runs benchmarks/bench.py with the
# project's virtualenv. Results: benchmarks/results/latest.{json,md,png}.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m benchmarks.bench "$@"
