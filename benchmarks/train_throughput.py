"""Training-step throughput: mimo against a `transformers` Qwen2 step of the same config and batch, side
by side, and both against the machine's measured fp32 matmul peak.

    python benchmarks/train_throughput.py                       # mimo-2m-shaped, 512 vocab, 16 x 256
    python benchmarks/train_throughput.py --preset mimo-10m --batch 8 --seq-len 512 --threads 2

A step is forward + backward + AdamW on random tokens. Rows (repeats interleaved so machine noise hits
all alike; the median is reported):
  mimo, no MTP      the trunk only: the same computation as the Qwen2 step
  mimo, with MTP    plus the MTP layer and its loss (what pretraining runs)
  transformers      Qwen2ForCausalLM with the same weights shape, SDPA attention
Achieved GFLOP/s counts 6 x matmul params + attention per token (mimo.train.flops).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mimo.config import MiMoConfig
from mimo.model import MiMoForCausalLM
from mimo.train.flops import matmul_peak_gflops, training_flops_per_token


def mimo_step(model, opt, ids, with_mtp):
    out = model(ids, labels=ids, with_mtp=with_mtp)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def hf_step(model, opt, ids):
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mimo-2m")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = MiMoConfig.from_preset(args.preset, vocab_size=args.vocab)
    torch.manual_seed(0)
    mimo = MiMoForCausalLM(config).train()
    hf_config = Qwen2Config(**{k: v for k, v in config.to_dict().items() if k not in ("architectures", "model_type")})
    hf_config._attn_implementation = "sdpa"
    hf = Qwen2ForCausalLM(hf_config).train()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len))
    tokens = ids.numel()

    opt_mimo = torch.optim.AdamW(mimo.parameters(), lr=1e-4, foreach=True)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, foreach=True)
    runs = {"mimo, no MTP": lambda: mimo_step(mimo, opt_mimo, ids, False),
            "mimo, with MTP": lambda: mimo_step(mimo, opt_mimo, ids, True),
            "transformers Qwen2": lambda: hf_step(hf, opt_hf, ids)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    peak = matmul_peak_gflops("cpu", seconds=1.0)

    flops = {"mimo, no MTP": training_flops_per_token(config, args.seq_len, with_mtp=False),
             "mimo, with MTP": training_flops_per_token(config, args.seq_len, with_mtp=True),
             "transformers Qwen2": training_flops_per_token(config, args.seq_len, with_mtp=False)}
    base = statistics.median(times["transformers Qwen2"])
    print(f"{args.preset} (vocab {args.vocab}), batch {args.batch} x {args.seq_len} tokens, {args.threads} threads, "
          f"torch {torch.__version__}; fp32 matmul peak {peak:.1f} GFLOP/s\n")
    print("| step | ms/step | tokens/s | GFLOP/s | % of matmul peak | speed vs transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in runs:
        t = statistics.median(times[name])
        gflops = flops[name] * tokens / t / 1e9
        print(f"| {name} | {t * 1e3:.0f} | {tokens / t:,.0f} | {gflops:.1f} | {gflops / peak:.0%} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
