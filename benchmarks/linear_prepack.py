"""oneDNN-prepacked linear (what mimo's engine runs) against `F.linear`, per weight shape, side by side.

    python benchmarks/linear_prepack.py [--dtype float32] [--threads 1]

For each projection shape of the mimo-2m / mimo-10m / mimo-50m presets, times y = x @ W.T for 1 and
32 rows, "hot" (4 weights of that shape, cycled, so small ones stay in cache) and "cold" (copies
filling 96 MiB, so every call streams its weight from memory, as decoding a model larger than the
cache does). The engine's rule (mimo/engine/runner.py: pack fp32 weights from 1 MiB up, all bf16
ones) comes from this table.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

# (out, in): q/k/v, o, gate/up, down and LM head of mimo-2m, mimo-10m and mimo-50m.
SHAPES = [(256, 128), (128, 128), (768, 128), (128, 384), (4096, 128),
          (384, 256), (256, 256), (1408, 256), (256, 704), (8192, 256),
          (768, 512), (512, 512), (2816, 512), (512, 1408), (16384, 512)]


def per_call_us(fn, calls: int, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"{args.dtype}, {args.threads} thread(s); microseconds per call, F.linear / prepacked (speed-up)")
    print(f"{'weight':>16} {'KiB':>6} {'cache':>5} | {'1 row':>24} | {'32 rows':>24}")
    for out_features, in_features in SHAPES:
        nbytes = out_features * in_features * dtype.itemsize
        for cache, count in (("hot", 4), ("cold", max(4, (96 << 20) // nbytes))):
            weights = [torch.randn(out_features, in_features, dtype=dtype) for _ in range(count)]
            packed = [torch.ops.mkldnn._reorder_linear_weight(w, 32) for w in weights]
            cells = []
            for rows in (1, 32):
                x = torch.randn(rows, in_features, dtype=dtype)
                plain = per_call_us(lambda: [F.linear(x, w) for w in weights], count)
                fast = per_call_us(lambda: [torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
                                            for p in packed], count)
                cells.append(f"{plain:>7.1f} / {fast:>7.1f} ({plain / fast:.2f}x)")
            print(f"{out_features:>7} x {in_features:<6} {nbytes >> 10:>6} {cache:>5} | {cells[0]} | {cells[1]}",
                  flush=True)


if __name__ == "__main__":
    main()
