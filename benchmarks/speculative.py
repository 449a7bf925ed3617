"""MTP self-speculative decoding against plain decoding, on a tiny model trained here.

    python benchmarks/speculative.py [--train-seconds 120] [--preset mimo-10m] [--threads 1]

No trained checkpoint is assumed: the script trains the preset's shape (vocab from a tokenizer
trained on the same text) for --train-seconds with the main + MTP loss (plain torch AdamW) on
simple, predictable text (counting runs, repeated phrases, small sums), as MTP-accepting text in
the real world is the predictable part of it. It then decodes held-out prompts greedily at batch 1
with speculation off and with k = 1, 2, 3 drafts (with the default drafter confidence cut, and for
k = 2, 3 also without it), checks the outputs are token-identical, and reports tokens/s (median of
--repeats alternating runs), the speed-up and accepted/proposed drafts per position. A draft at
position j counts as proposed once the target model verifies it, i.e. after drafts 1..j-1 were
accepted, so the per-position rate is conditional on reaching that position.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
from mimo.tokenizer import train_tokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def line(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        start = rng.randrange(0, 900)
        return "count: " + " ".join(str(i) for i in range(start, start + rng.randint(8, 24)))
    if kind == 1:
        phrase = " ".join(rng.sample(WORDS, 3))
        return "say: " + ", ".join([phrase] * rng.randint(3, 6))
    a, b = rng.randrange(10), rng.randrange(10)
    return f"sum: {a} + {b} = {a + b}; {b} + {a} = {a + b}."


def train(preset: str, seconds: float, seed: int = 0):
    rng = random.Random(seed)
    tok = train_tokenizer([line(rng) for _ in range(3000)], vocab_size=600)
    torch.manual_seed(seed)
    config = MiMoConfig.from_preset(preset, vocab_size=len(tok), eos_token_id=tok.eos_token_id)
    model = MiMoForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    stream = [t for _ in range(20000) for t in tok.encode(line(rng) + "\n")]
    T, B = 128, 16
    start, step = time.time(), 0
    while time.time() - start < seconds:
        starts = [rng.randrange(len(stream) - T) for _ in range(B)]
        x = torch.tensor([stream[s:s + T] for s in starts])
        out = model(x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        step += 1
    print(f"trained {preset} ({model.num_parameters()['total'] / 1e6:.1f}M params) for {step} steps in "
          f"{time.time() - start:.0f}s: main loss {out.main_loss.item():.3f}, MTP loss {out.mtp_loss.item():.3f}")
    return model.eval(), tok, rng


def decode(engine: Engine, prompts, max_tokens: int) -> tuple[float, list[list[int]]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    start, outs = time.perf_counter(), []
    for p in prompts:  # batch 1: one request at a time
        outs.append(engine.generate([p], params)[0].samples[0].token_ids)
    return sum(map(len, outs)) / (time.perf_counter() - start), outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mimo-10m")
    ap.add_argument("--train-seconds", type=float, default=120)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, rng = train(args.preset, args.train_seconds)
    prompts = [tok.encode(line(rng) + "\n" + line(rng)[:12]) for _ in range(args.prompts)]
    decode(Engine(model, num_speculative_tokens=1), prompts[:1], 16)  # warm-up
    # (label, k, draft_confidence); the default cut is Engine's.
    configs = [("off", 0, 0.3)] + [(str(k), k, 0.3) for k in (1, 2, 3)] + [(f"{k}, no cut", k, 0.0) for k in (2, 3)]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    stats, base = {}, None
    for _ in range(args.repeats):
        for label, k, confidence in configs:
            engine = Engine(model, num_speculative_tokens=k, draft_confidence=confidence)
            rate, outs = decode(engine, prompts, args.max_tokens)
            base = base or outs
            assert outs == base, "speculative greedy output differs from plain decoding"
            rates[label].append(rate)
            # Every request's first token comes from its prefill step; the rest from decode steps.
            per_step = (sum(map(len, outs)) - len(prompts)) / (engine.stats.steps - len(prompts))
            stats[label] = (engine.stats, per_step)  # greedy: the same every repeat
    base_rate = statistics.median(rates["off"])
    print(f"{'k':>9} {'tok/s':>8} {'speed-up':>9}  {'accepted/proposed per draft position':<44} tokens/step")
    for label, _, _ in configs:
        rate = statistics.median(rates[label])
        s, per_step = stats[label]
        acc = [f"{a}/{p}={a / p:.2f}" if p else "0/0" for a, p in zip(s.draft_accepted, s.draft_proposed)]
        print(f"{label:>9} {rate:>8.1f} {rate / base_rate:>8.2f}x  {' '.join(acc) or '-':<44} {per_step:.2f}")


if __name__ == "__main__":
    main()
