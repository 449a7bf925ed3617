"""MTP ablation: the quickstart recipe trained with and without the MTP loss, equal steps and tokens.

    python benchmarks/mtp_ablation.py                                   # quickstart-sized (2 x ~10 min)
    python benchmarks/mtp_ablation.py --pretrain-steps 300 --sft-steps 60 --eval-per-tier 20   # quicker

Both arms run the identical recipe, seeds and data stream (so they see exactly the same tokens); the only
difference is the MTP loss weight (the recipe's 0.3 -> 0.1 schedule, or 0 everywhere). Reported for each:
held-out accuracy per family and tier (greedy), teacher-forced next-token loss and top-1 accuracy on the
held-out reference solutions, and the MTP layer's top-1 accuracy on the token two ahead: the acceptance
rate one-token MTP speculative decoding would get. Without the MTP loss the MTP layer is never trained,
so its top-1 shows what an untrained drafter would accept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from rich.console import Console

from mimo.data.reasoning import DIFFICULTIES, FAMILIES, heldout_set
from mimo.model import MiMoForCausalLM
from mimo.quickstart import quickstart_recipes
from mimo.tokenizer import Tokenizer
from mimo.train.evaluate import accuracy_by_tier, evaluate, heldout_scores
from mimo.train.loop import train


def run_arm(out: Path, mtp: bool, args) -> dict:
    pretrain, sft = quickstart_recipes(out, args.pretrain_steps, args.sft_steps, args.threads, args.seed)
    if not mtp:
        for recipe in (pretrain, sft):
            recipe.stages = [dataclasses.replace(s, mtp_loss_weight=0.0) for s in recipe.stages]
    console = Console()
    train(pretrain, "pretrain", console)
    final = train(sft, "sft", console)
    model, tokenizer = MiMoForCausalLM.from_pretrained(final), Tokenizer.from_pretrained(final)
    problems = heldout_set(list(FAMILIES), list(DIFFICULTIES), args.eval_per_tier, seed=args.seed)
    accuracy = accuracy_by_tier(evaluate(model, tokenizer, problems))
    scores = heldout_scores(model, tokenizer, problems)
    return {"accuracy": {f"{f}/tier{d}": a for (f, d), (a, _) in accuracy.items()},
            "mean_accuracy": sum(a for a, _ in accuracy.values()) / len(accuracy), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/mtp_ablation"))
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--eval-per-tier", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"with MTP loss": run_arm(args.out / "with_mtp", True, args),
               "without MTP loss": run_arm(args.out / "without_mtp", False, args)}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"\nMTP ablation: {args.pretrain_steps} pretrain + {args.sft_steps} SFT steps per arm, "
          f"{args.eval_per_tier} held-out problems per tier\n")
    print("| arm | held-out acc (mean of tiers) | arithmetic t1 / t2 / t3 | next-token loss | next-token top-1 "
          "| MTP top-1 on token t+2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm, r in results.items():
        arith = " / ".join(f"{r['accuracy'][f'arithmetic/tier{d}']:.0%}" for d in DIFFICULTIES)
        print(f"| {arm} | {r['mean_accuracy']:.1%} | {arith} | {r['main_loss']:.4f} | {r['next_token_top1']:.1%} "
              f"| {r['mtp_top1']:.1%} |")


if __name__ == "__main__":
    main()
