#!/bin/sh
# Live demo on a throwaway MariaDB (and a sandboxed systemd): set alarms with the stock
# mariadb client and watch the reactor see them, with the measured latency.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m lab.demo "$@"
