"""Benchmarks: the binlog reactor against polling, measured end to end (see README.md).

    benchmarks/run.sh [--quick] [--only MODE ...]
"""
