"""Where a command's CPU time goes, by kind of process: a Ray session's daemons, Ray Train's actors, Tune trials...

    python benchmarks/suite_cpu.py -- .venv/bin/python -m pytest -q -n 3 --dist loadfile
    python benchmarks/suite_cpu.py --top 15 -- .venv/bin/python -m pytest -q tests/test_compare.py

Runs the command and samples ``/proc`` every ``--interval`` seconds: each process's user+system CPU time, named by
what it runs (a Ray worker by its title, ``ray::TrainController.__init__``; a Python process by its script or
module), then prints the machine's busy CPU-seconds over the run and the CPU-seconds per kind with how many
processes of that kind ran. A process that starts and ends between two samples is missed, and a process that was
already running is counted whole: run it on a quiet machine. Linux only.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")


def process_name(pid: str) -> str | None:
    """What the process runs: its Ray title, ``python <script>``/``python -m <module>``, or the executable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().decode(errors="replace").split("\0")
    except OSError:
        return None
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


def cpu_seconds(pid: str) -> tuple[float, int] | None:
    """(user + system CPU seconds, start time in clock ticks) of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ, int(fields[19])


def busy_ticks() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # all, idle + iowait


class Sampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.done = interval, threading.Event()
        self.seen: dict[tuple[str, int], list] = {}  # (pid, start) -> [name, cpu-seconds]

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            got = cpu_seconds(pid)
            if got is None:
                continue
            cpu, start = got
            entry = self.seen.get((pid, start))
            if entry is None:
                name = process_name(pid)
                if name is not None:
                    self.seen[(pid, start)] = [name, cpu]
                continue
            entry[1] = cpu
            if entry[0].startswith(("python", "ray::IDLE")):  # a Ray worker that has since become an actor or task
                name = process_name(pid)
                if name and not name.startswith("ray::IDLE"):
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
    total0, idle0 = busy_ticks()
    t0 = time.perf_counter()
    sampler.start()
    rc = subprocess.call(command)
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    total1, idle1 = busy_ticks()
    busy = ((total1 - total0) - (idle1 - idle0)) / HZ
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
