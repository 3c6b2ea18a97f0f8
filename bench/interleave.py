#!/usr/bin/env python3
"""Time several commands with their runs interleaved, and print JSON.

    interleave.py RUNS WARMUP NAME=COMMAND [NAME=COMMAND ...]

hyperfine runs all of one command, then all of the next. On a small shared
VM the machine's speed drifts over seconds (other guests, the kernel tearing
down the previous runs' namespaces and cgroups in the background), and that
drift lands on whichever command happens to run then. Here every round runs
each command once, in alternating order, so all of them see the same
conditions and their ratios stay meaningful. Commands are split on spaces
and spawned directly (no shell); a command that contains "&&" runs through
/bin/sh -c. A failing run aborts the benchmark.

Output: {"results": [{"command": NAME, "median": s, "mean": s, "stddev": s,
"p25": s, "p75": s, "runs": N}, ...]} (seconds, like hyperfine's export).
"""
import json
import os
import statistics
import sys
import time


def argv_of(command):
    if "&&" in command:
        return ["/bin/sh", "-c", command]
    return command.split()


def run_once(argv):
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if status != 0:
        sys.exit(f"interleave: {' '.join(argv)!r} failed (wait status {status})")
    return elapsed


def main():
    runs, warmup = int(sys.argv[1]), int(sys.argv[2])
    named = [arg.split("=", 1) for arg in sys.argv[3:]]
    argvs = [argv_of(cmd) for _, cmd in named]
    for _ in range(warmup):
        for argv in argvs:
            run_once(argv)
    times = [[] for _ in argvs]
    for i in range(runs):
        order = range(len(argvs)) if i % 2 == 0 else reversed(range(len(argvs)))
        for k in order:
            times[k].append(run_once(argvs[k]))
    results = []
    for (name, _), t in zip(named, times):
        q = statistics.quantiles(t, n=4)
        results.append(
            {
                "command": name,
                "median": statistics.median(t),
                "mean": statistics.mean(t),
                "stddev": statistics.stdev(t),
                "p25": q[0],
                "p75": q[2],
                "runs": len(t),
            }
        )
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
