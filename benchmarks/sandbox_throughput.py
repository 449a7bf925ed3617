"""Code-test executions per second: the SandboxPool against running the same sandboxed tests one by one.

Workload: every HumanEval canonical solution with its check() (one sandbox run each). Needs the benchmark
data (default ../shared/data/humaneval.jsonl beside the repo).

    OMP_NUM_THREADS=1 python benchmarks/sandbox_throughput.py [--data PATH] [--workers N] [--limit N]
"""

import argparse
import json
import os
import time
from pathlib import Path

from mimo.rewards.sandbox import SandboxPool, run_python

parser = argparse.ArgumentParser()
parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/humaneval.jsonl")
parser.add_argument("--workers", type=int, default=os.cpu_count())
parser.add_argument("--limit", type=int, default=164)
args = parser.parse_args()

rows = [json.loads(line) for line in args.data.open()][: args.limit]
programs = [r["prompt"] + r["canonical_solution"] + "\n" + r["test"] + f"\ncheck({r['entry_point']})" for r in rows]

start = time.perf_counter()
serial = [run_python(p) for p in programs]
serial_s = time.perf_counter() - start

with SandboxPool(workers=args.workers) as pool:
    start = time.perf_counter()
    pooled = pool.map([{"code": p} for p in programs])
    pooled_s = time.perf_counter() - start

assert all(r.ok for r in serial + pooled), "a canonical solution failed"
print(f"{len(programs)} HumanEval test runs, {os.cpu_count()} CPUs")
print(f"one by one       {len(programs) / serial_s:7.1f} exec/s  ({serial_s:.1f} s)")
print(f"pool ({args.workers} workers) {len(programs) / pooled_s:7.1f} exec/s  ({pooled_s:.1f} s)")
print(f"speedup          {serial_s / pooled_s:7.2f}x")
