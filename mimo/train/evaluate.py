"""Held-out evaluation on the built-in reasoning problems: greedy, batched, through mimo.engine.

Math families score exact match of the \\boxed{...} answer against the gold answer; the code family
scores 1 when the extracted ```python block passes every given assert inside mimo.rewards.sandbox.
Results are reported per (family, difficulty) tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from mimo.data.reasoning import Problem, extract_boxed, extract_code
from mimo.engine import Engine, SamplingParams
from mimo.model import IGNORE_INDEX, MiMoForCausalLM, shifted_cross_entropy
from mimo.rewards.sandbox import SandboxLimits, SandboxPool
from mimo.tokenizer import Tokenizer


@dataclass
class Graded:
    problem: Problem
    completion: str
    correct: bool


def generate_answers(model: MiMoForCausalLM, tokenizer: Tokenizer, problems: list[Problem],
                     max_new_tokens: int = 200, batch_size: int = 64) -> list[str]:
    """Greedy completions of each problem's prompt in the chat format (what SFT taught)."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True)
               for p in problems]
    longest = max(len(p) for p in prompts) + max_new_tokens
    engine = Engine(model, tokenizer, max_batch_size=batch_size, max_seq_len=longest)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=tokenizer.stop_token_ids)
    outputs = engine.generate(prompts, params)
    return [tokenizer.decode(out.samples[0].token_ids, skip_special_tokens=True) for out in outputs]


def grade(problems: list[Problem], completions: list[str]) -> list[Graded]:
    graded = [Graded(p, c, p.answer is not None and extract_boxed(c) == p.answer) for p, c in zip(problems, completions)]
    code_jobs = [(i, extract_code(g.completion)) for i, g in enumerate(graded) if g.problem.tests]
    with SandboxPool(workers=2, limits=SandboxLimits(wall_s=5.0)) as pool:
        results = pool.map([{"code": code or "", "tests": graded[i].problem.tests} for i, code in code_jobs])
    for (i, code), result in zip(code_jobs, results):
        tests = graded[i].problem.tests
        graded[i].correct = bool(code) and result.ok and all(result.test_results.get(t) for t in range(len(tests)))
    return graded


def evaluate(model: MiMoForCausalLM, tokenizer: Tokenizer, problems: list[Problem],
             max_new_tokens: int = 200) -> list[Graded]:
    return grade(problems, generate_answers(model, tokenizer, problems, max_new_tokens))


def accuracy_by_tier(graded: list[Graded]) -> dict[tuple[str, int], tuple[float, int]]:
    """(family, difficulty) -> (accuracy, number of problems)."""
    tiers: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for g in graded:
        tiers[(g.problem.family, g.problem.difficulty)].append(g.correct)
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(tiers.items())}


@torch.no_grad()
def heldout_scores(model: MiMoForCausalLM, tokenizer: Tokenizer, problems: list[Problem],
                   batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced scores on the reference solutions of held-out chats (assistant tokens only):
    next-token loss, MTP loss, and MTP top-1 accuracy on the token two ahead, which is the rate at which
    speculative decoding with the MTP layer as the drafter gets its draft accepted."""
    totals = {"main_loss": 0.0, "mtp_loss": 0.0, "next_token_top1": 0.0, "mtp_top1": 0.0}
    counts = {"main": 0, "mtp": 0}
    for start in range(0, len(problems), batch_size):
        chats = [tokenizer.encode_chat(p.messages()) for p in problems[start:start + batch_size]]
        width = max(len(ids) for ids, _ in chats)
        ids = torch.tensor([c[0] + [0] * (width - len(c[0])) for c in chats])
        labels = torch.tensor([[t if m else IGNORE_INDEX for t, m in zip(*c)] + [IGNORE_INDEX] * (width - len(c[0]))
                               for c in chats])
        out = model(ids, attention_mask=(torch.arange(width)[None] < torch.tensor([[len(c[0])] for c in chats])).long())
        for key, logits, shift in (("main", out.logits, 1), *(("mtp", lg, 2) for lg in out.mtp_logits[:1])):
            target = labels[:, shift:]
            valid = target != IGNORE_INDEX
            pred = logits[:, :-shift].argmax(-1)
            n = int(valid.sum())
            totals[f"{key}_loss"] += float(shifted_cross_entropy(logits, labels, shift)) * n
            totals["next_token_top1" if key == "main" else "mtp_top1"] += float((pred == target)[valid].sum())
            counts[key] += n
    return {k: v / max(1, counts["main" if k in ("main_loss", "next_token_top1") else "mtp"]) for k, v in totals.items()}
