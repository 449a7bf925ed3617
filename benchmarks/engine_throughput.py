"""Engine decode speed against transformers `generate`, same weights, same machine, side by side.

    python benchmarks/engine_throughput.py [--preset mimo-10m] [--dtype float32] [--threads 1]
                                           [--new-tokens 128] [--breakdown] [--transformers-cb]

Rows (all greedy, no end token, so both produce the same tokens):
- batch 1: decode tokens/s of one request;
- batch 8 / 32: total tokens/s of that many concurrent requests with prompts of 16-63
  tokens, each generating --new-tokens (transformers: one left-padded batch; mimo: continuous batching);
- stream of 32 / 128 at 8 / 32 concurrent: 4x as many requests as may run at once, each asking for
  its own max_tokens (spread over 1/8..2x --new-tokens), as a server's queue of real requests does.
  mimo: continuous batching with max_batch_size 8 / 32, so a new request starts as soon as one ends.
  transformers: `generate` on consecutive batches of 8 / 32 in arrival order; it takes one
  max_new_tokens per batch, so each batch runs until its longest request is done. Only each request's
  own tokens count, for both.
--transformers-cb adds transformers' own continuous batching (`init_continuous_batching`, one
`add_request` per request with its max_new_tokens) on the stream rows.
--breakdown profiles one batch-32 run of each and prints the share of its time spent in the matmul and
attention kernels, the part any implementation pays (so the ratio it bounds).

Runs alternate between the two and the medians are printed, by wall time and by this process's CPU
time: on a machine shared with other jobs the wall rate swings with their load, while the CPU time of
a run counts only the work it did.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch
import transformers

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM

# Profiler names of the matmul and attention kernels (whichever path each implementation takes).
KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "_linear_pointwise", "_scaled_dot_product_")


def build(preset: str, path: str, dtype: torch.dtype = torch.float32) -> tuple[MiMoForCausalLM, torch.nn.Module]:
    torch.manual_seed(0)
    config = MiMoConfig.from_preset(preset, num_nextn_predict_layers=0, model_type="qwen2",
                                    architectures=["Qwen2ForCausalLM"], initializer_range=0.1)
    MiMoForCausalLM(config).to(dtype).save_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    return MiMoForCausalLM.from_pretrained(path, dtype=dtype), hf


def prompts_for(batch: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(batch)
    return [torch.randint(0, vocab, (16 + (37 * i) % 48,), generator=g).tolist() for i in range(batch)]


def lengths_for(n: int, new_tokens: int, mixed: bool) -> list[int]:
    """Each request's max_tokens: all equal, or spread evenly over new_tokens/8 .. 2 * new_tokens in a
    seeded random order."""
    if not mixed:
        return [new_tokens] * n
    low, high = max(1, new_tokens // 8), 2 * new_tokens
    order = list(range(n))
    random.Random(n).shuffle(order)
    return [low + (high - low) * k // max(1, n - 1) for k in order]


def timed(fn) -> tuple[float, float]:
    """Run fn -> (wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.inference_mode()
def hf_generate(hf, prompts, lengths) -> None:
    """One left-padded `generate` batch, run until its longest request is done."""
    T, longest = max(len(p) for p in prompts), max(lengths)
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=longest, min_new_tokens=longest,
                      do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape[1] - T == longest


def run_hf(hf, prompts, lengths, concurrency) -> tuple[float, float]:
    """Consecutive `generate` batches of `concurrency` requests."""
    chunks = range(0, len(prompts), concurrency)
    return timed(lambda: [hf_generate(hf, prompts[i:i + concurrency], lengths[i:i + concurrency]) for i in chunks])


def run_hf_continuous(hf, prompts, lengths, concurrency) -> tuple[float, float]:
    """transformers' continuous batching: one `add_request` per prompt with its own max_new_tokens
    (the manager is built and warmed up outside the timing, sized as `generate_batch` sizes it)."""
    from transformers.generation.continuous_batching.utils import WorkloadHints

    config = transformers.GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0,
                                           max_new_tokens=max(lengths))
    hints = WorkloadHints(max_prompt_length=max(len(p) for p in prompts), max_generated_length=max(lengths),
                          num_requests=len(prompts))
    done = []

    def go():
        for i, (p, n) in enumerate(zip(prompts, lengths)):
            manager.add_request(p, request_id=str(i), max_new_tokens=n)
        done.extend(manager.get_result(timeout=600) for _ in prompts)

    with hf.continuous_batching_context_manager(generation_config=config, block=True, timeout=5,
                                                workload_hints=hints) as manager:
        seconds = timed(go)
    assert sorted(len(r.generated_tokens) for r in done) == sorted(lengths)
    return seconds


def run_mimo(engines, prompts, lengths, concurrency) -> tuple[float, float]:
    engine = engines[concurrency]
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in lengths]
    out = []
    seconds = timed(lambda: out.extend(engine.generate(prompts, params)))
    assert [len(o.samples[0].token_ids) for o in out] == lengths
    return seconds


def kernel_share(run) -> float:
    """Share of a run's CPU time spent inside the matmul and attention kernels."""
    with torch.profiler.profile() as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if any(k in e.key for k in KERNELS)) / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mimo-10m")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--transformers-cb", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        model, hf = build(args.preset, d, getattr(torch, args.dtype))
    engines = {c: Engine(model, max_batch_size=c) for c in (1, 8, 32)}  # the concurrency cap
    vocab = model.config.vocab_size
    run_mimo(engines, prompts_for(2, vocab), [8, 8], 8)  # warm-up both
    run_hf(hf, prompts_for(2, vocab), [8, 8], 8)
    print(f"preset {args.preset}, {args.dtype}, {args.threads} thread(s), {args.new_tokens} new tokens, "
          f"median of {args.repeats} alternating runs; useful tokens/s by wall time | by CPU time")
    print(f"{'workload':>26} {'transformers':>13} {'mimo':>8} {'ratio':>6} | {'transformers':>12} {'mimo':>8} {'ratio':>6}"
          + ("   transformers CB (wall)" if args.transformers_cb else ""))
    for requests, concurrency in ((1, 1), (8, 8), (32, 32), (32, 8), (128, 32)):
        stream = requests > concurrency
        prompts, lengths = prompts_for(requests, vocab), lengths_for(requests, args.new_tokens, stream)
        runners = [run_hf, run_mimo] + ([run_hf_continuous] if args.transformers_cb and stream else [])
        runs = {fn: [] for fn in runners}
        for _ in range(args.repeats):
            for fn in runners:
                runs[fn].append(fn(engines if fn is run_mimo else hf, prompts, lengths, concurrency))
        tokens = sum(lengths)
        (hf_wall, hf_cpu), (mimo_wall, mimo_cpu) = (
            [tokens / statistics.median(r[i] for r in runs[fn]) for i in (0, 1)] for fn in (run_hf, run_mimo))
        name = f"stream of {requests}, {concurrency} at once" if stream else f"batch {requests}"
        line = (f"{name:>26} {hf_wall:>13.1f} {mimo_wall:>8.1f} {mimo_wall / hf_wall:>5.2f}x | "
                f"{hf_cpu:>12.1f} {mimo_cpu:>8.1f} {mimo_cpu / hf_cpu:>5.2f}x")
        if run_hf_continuous in runs:
            line += f"   {tokens / statistics.median(r[0] for r in runs[run_hf_continuous]):>10.1f}"
        print(line, flush=True)
    if args.breakdown:
        prompts, lengths = prompts_for(32, vocab), lengths_for(32, args.new_tokens, False)
        for name, fn, target in (("transformers", run_hf, hf), ("mimo", run_mimo, engines)):
            share = kernel_share(lambda: fn(target, prompts, lengths, 32))
            print(f"batch 32: {name} spends {share:.0%} of its CPU time in the matmul and attention kernels")

if __name__ == "__main__":
    main()
