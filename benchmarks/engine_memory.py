"""Weight memory the engine adds on top of the model, with and without prepacked weight copies.

    python benchmarks/engine_memory.py [--preset mimo-50m]

Each case runs in a fresh process (RSS growth from building a 1-slot, 16-position engine, so the KV
cache is negligible): with prepacking the engine holds packed copies of the projection weights; without
it (`prepack=False`, GPUs, or the engine's own memory guard) it runs the model's own tensors.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CASE = """
import torch
from mimo.config import MiMoConfig
from mimo.engine import Engine
from mimo.model import MiMoForCausalLM

def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

model = MiMoForCausalLM(MiMoConfig.from_preset({preset!r}, num_nextn_predict_layers=0)).to(torch.{dtype})
before = rss_mib()
engine = Engine(model, max_batch_size=1, max_seq_len=16, prepack={prepack})
print(sum(p.nbytes for p in model.parameters()) / 2**20, rss_mib() - before, engine.runner.prepack)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mimo-50m")
    args = ap.parse_args()
    print(f"preset {args.preset}: MiB of RSS the engine adds")
    print(f"{'dtype':>9} {'weights':>8} {'prepack':>8} {'no prepack':>11}")
    for dtype in ("float32", "bfloat16"):
        added = {}
        for prepack in (True, False):
            out = subprocess.run([sys.executable, "-c", CASE.format(preset=args.preset, dtype=dtype, prepack=prepack)],
                                 capture_output=True, text=True, check=True).stdout.split()
            weights, added[prepack] = float(out[0]), float(out[1])
        print(f"{dtype:>9} {weights:>8.0f} {added[True]:>8.0f} {added[False]:>11.0f}")


if __name__ == "__main__":
    main()
