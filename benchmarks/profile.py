"""Where the binlog path spends its time: py-spy samples a real `reactor run` (binlog mode,
settle_time 0) while alarms go through it, every thread included (the binlog reader runs
in a worker thread, the pipeline in the event loop).

    .venv/bin/python -m benchmarks.profile [--alarms 300]

Prints the functions with the most samples of their own and in total, per thread, and
keeps the folded stacks in benchmarks/results/profile.folded (flame-graph input).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.rigs import Lab
from benchmarks.workload import PlannedAlarm, run_alarms

RESULTS = Path(__file__).resolve().parent / "results"


def top(folded: Path, count: int = 20) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():  # py-spy now and then writes a frame torn by a race: skip it
            continue
        frames = stack.split(";")
        samples = int(n)
        threads[frames[0]] += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            total[frame] += samples
    out = ["samples per thread:"] + [f"  {n:6d}  {t}" for t, n in threads.most_common()]
    out += ["own samples (time spent in the function itself):"]
    out += [f"  {n:6d}  {f}" for f, n in own.most_common(count)]
    out += ["total samples (time spent in the function and what it called):"]
    out += [f"  {n:6d}  {f}" for f, n in total.most_common(count * 2)]
    return "\n".join(out)


def stop_sampler(sampler: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGINT (py-spy then writes what it sampled), SIGKILL if it does not end in time."""
    if sampler.poll() is not None:
        return
    sampler.send_signal(signal.SIGINT)
    try:
        sampler.wait(timeout)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alarms", type=int, default=300)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy not found: pip install py-spy (the project's bench extra)", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    folded = RESULTS / "profile.folded"
    lab = Lab()
    try:
        lab.start()
        units = [(100 + i, f"prof{i}") for i in range(8)]
        lab.add_units(units)
        config = lab.write_config("profile", mode="binlog", check_interval=300, server_id=77,
                                  settle=0)
        reactor = lab.start_reactor("run", "--config", str(config), ready=r"ready: mode=")
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(reactor.proc.pid), "--rate", "2000", "--threads",
             "--format", "raw", "--nonblocking", "--output", str(folded)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            workload = [PlannedAlarm(units[i % len(units)][0], 0.02)
                        for i in range(args.alarms)]
            run_alarms(lab, workload, timeout=10, tick=lambda done: None)
        finally:
            stop_sampler(sampler)  # whatever happened: py-spy writes its output and ends
        lab.stop_reactor(reactor)
    finally:
        lab.close()
    print(top(folded))
    print(f"folded stacks: {folded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
