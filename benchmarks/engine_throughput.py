"""Engine decode speed against transformers `generate`, same weights, same machine, side by side.

    python benchmarks/engine_throughput.py [--preset mimo-10m] [--threads 1] [--new-tokens 128]

Batch 1: decode tokens/s of one request. Batch 8 / 32: total generated tokens/s of that many
concurrent requests with prompts of different lengths (transformers: one left-padded batch;
mimo: continuous batching). Both greedy, fp32, no end token, so both produce the same token count.

Runs alternate between the two and the medians are printed, by wall time and by this process's CPU
time: on a machine shared with other jobs the wall rate swings with their load, while the CPU time of
a single-threaded run (the default) counts only the work it did.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM


def build(preset: str, path: str) -> tuple[MiMoForCausalLM, torch.nn.Module]:
    torch.manual_seed(0)
    config = MiMoConfig.from_preset(preset, num_nextn_predict_layers=0, model_type="qwen2",
                                    architectures=["Qwen2ForCausalLM"], initializer_range=0.1)
    MiMoForCausalLM(config).save_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return MiMoForCausalLM.from_pretrained(path), hf


def prompts_for(batch: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(batch)
    return [torch.randint(0, vocab, (16 + (37 * i) % 48,), generator=g).tolist() for i in range(batch)]


def timed(fn) -> tuple[float, float]:
    """Run fn -> (wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.inference_mode()
def run_hf(hf, prompts, new_tokens) -> tuple[float, float]:
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    out = []
    seconds = timed(lambda: out.append(hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                                   eos_token_id=None)))
    assert out[0].shape[1] - T == new_tokens
    return seconds


def run_mimo(engine, prompts, new_tokens) -> tuple[float, float]:
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    out = []
    seconds = timed(lambda: out.extend(engine.generate(prompts, params)))
    assert all(len(o.samples[0].token_ids) == new_tokens for o in out)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mimo-10m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        model, hf = build(args.preset, d)
    engine = Engine(model, max_batch_size=32)
    vocab = model.config.vocab_size
    run_mimo(engine, prompts_for(2, vocab), 8)  # warm-up both
    run_hf(hf, prompts_for(2, vocab), 8)
    print(f"preset {args.preset}, {args.threads} thread(s), {args.new_tokens} new tokens, "
          f"median of {args.repeats} alternating runs; tokens/s by wall time | by CPU time")
    print(f"{'batch':>5} {'transformers':>14} {'mimo':>14} {'ratio':>6} | {'transformers':>12} {'mimo':>8} {'ratio':>6}")
    for batch in (1, 8, 32):
        prompts = prompts_for(batch, vocab)
        hf_runs, mimo_runs = [], []
        for _ in range(args.repeats):
            hf_runs.append(run_hf(hf, prompts, args.new_tokens))
            mimo_runs.append(run_mimo(engine, prompts, args.new_tokens))
        tokens = batch * args.new_tokens
        hf_wall, hf_cpu = (tokens / statistics.median(r[i] for r in hf_runs) for i in (0, 1))
        mimo_wall, mimo_cpu = (tokens / statistics.median(r[i] for r in mimo_runs) for i in (0, 1))
        print(f"{batch:>5} {hf_wall:>14.1f} {mimo_wall:>14.1f} {mimo_wall / hf_wall:>5.2f}x | "
              f"{hf_cpu:>12.1f} {mimo_cpu:>8.1f} {mimo_cpu / hf_cpu:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
