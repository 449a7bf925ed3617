"""Held-out evaluation on the built-in reasoning problems: greedy, batched, through mimo.engine.

Math families score exact match of the \\boxed{...} answer against the gold answer; the code family
scores 1 when the extracted ```python block passes every given assert inside mimo.rewards.sandbox.
Results are reported per (family, difficulty) tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from mimo.data.reasoning import Problem, extract_boxed, extract_code
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
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
