"""Where a command's CPU time goes, by kind of process: a Ray session's daemons, Ray Train's actors, Tune trials...

    python benchmarks/suite_cpu.py -- .venv/bin/python -m pytest -q -n 3 --dist loadfile
    python benchmarks/suite_cpu.py --top 15 -- .venv/bin/python -m pytest -q tests/test_compare.py

Runs the command and samples every process (psutil) every ``--interval`` seconds: each process's user+system CPU time, named by
what it runs (a Ray worker by its title, ``ray::TrainController.__init__``; a Python process by its script or
module), then prints the machine's busy CPU-seconds over the run and the CPU-seconds per kind with how many
processes of that kind ran. A process that starts and ends between two samples is missed, and a process that was
already running is counted whole: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time

import psutil


def process_name(argv: list[str]) -> str | None:
    """What the process runs: its Ray title, ``python <script>``/``python -m <module>``, or the executable."""
    argv = [a for a in argv if a]
    if not argv:
        return None
    if argv[0].startswith("ray::"):
        return argv[0].split()[0]
    exe = os.path.basename(argv[0])
    if "python" in exe:
        rest = [a for a in argv[1:] if a not in ("-u", "-B")]
        if rest[:1] == ["-m"] and len(rest) > 1:
            return f"python -m {rest[1]}"
        if rest and not rest[0].startswith("-"):
            return f"python {os.path.basename(rest[0])}"
        return "python"
    return exe


def busy_seconds() -> float:
    """CPU-seconds the machine has spent busy (all states but idle and iowait) since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Sampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.done = interval, threading.Event()
        self.seen: dict[tuple[int, float], list] = {}  # (pid, create time) -> [name, cpu-seconds]

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for proc in psutil.process_iter(["cmdline", "cpu_times", "create_time"]):
            info = proc.info
            if info["cpu_times"] is None or info["create_time"] is None:
                continue  # gone, or not ours to read
            cpu = info["cpu_times"].user + info["cpu_times"].system
            name = process_name(info["cmdline"] or [])
            entry = self.seen.get((proc.pid, info["create_time"]))
            if entry is None:
                if name is not None:
                    self.seen[(proc.pid, info["create_time"])] = [name, cpu]
                continue
            entry[1] = cpu
            # a Ray worker that has since become an actor or task takes its new title
            if entry[0].startswith(("python", "ray::IDLE")) and name and not name.startswith("ray::IDLE"):
                entry[0] = name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between samples (default 0.3)")
    parser.add_argument("--top", type=int, default=30, help="kinds of process to print (default 30)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    sampler = Sampler(args.interval)
    busy0 = busy_seconds()
    t0 = time.perf_counter()
    sampler.start()
    rc = subprocess.call(command)
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    busy = busy_seconds() - busy0
    by_kind: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for name, cpu in sampler.seen.values():
        by_kind[name][0] += cpu
        by_kind[name][1] += 1
    print(f"\n{' '.join(command)}: exit {rc}, {wall:.1f} s wall, machine busy {busy:.1f} CPU-s "
          f"({busy / wall:.2f} of {os.cpu_count()} cores)")
    print(f"{'CPU-s':>9} {'procs':>6}  kind")
    for name, (cpu, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{cpu:9.1f} {n:6d}  {name}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
