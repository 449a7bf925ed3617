"""Math verifications per second: math_reward in-process (main thread, cached gold parse), against the
same checks with a cold gold cache, and through a MathRewardPool of worker processes.

Workload: every MATH-500 gold answer checked in its `prose` form (a boxed answer inside a sentence).

    OMP_NUM_THREADS=1 python benchmarks/math_verify_throughput.py [--data PATH] [--workers N]
"""

import argparse
import json
import os
import time
from pathlib import Path

from mimo.rewards.math_reward import SURFACE_FORMS, MathRewardPool, _parse_gold, math_reward


def timed(fn) -> float:
    start = time.perf_counter()
    results = fn()
    assert all(r.score == 1.0 for r in results)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/math500_test.jsonl")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    golds = [json.loads(line)["answer"] for line in args.data.open()]
    pairs = [(SURFACE_FORMS["prose"].format(g), g) for g in golds]

    _parse_gold.cache_clear()
    cold_s = timed(lambda: [math_reward(c, g) for c, g in pairs])  # every gold parsed once
    warm_s = timed(lambda: [math_reward(c, g) for c, g in pairs])  # RL-like: the gold's parse is cached
    with MathRewardPool(workers=args.workers) as pool:
        pool.map(pairs[:args.workers])  # workers import sympy before the clock starts
        pool_s = timed(lambda: pool.map(pairs))

    print(f"{len(pairs)} MATH-500 verifications, {os.cpu_count()} CPUs")
    print(f"in-process, cold gold cache  {len(pairs) / cold_s:7.1f} verif/s  (baseline)")
    print(f"in-process, warm gold cache  {len(pairs) / warm_s:7.1f} verif/s  ({cold_s / warm_s:.2f}x)")
    print(f"pool ({args.workers} workers, cold)     {len(pairs) / pool_s:7.1f} verif/s  ({cold_s / pool_s:.2f}x)")


if __name__ == "__main__":  # the pool spawns processes that re-import this file
    main()
