"""The RL problem stream with MiMo's easy-data re-sampling.

Problems whose group reaches pass rate 1 move to an easy pool. Each draw takes from the easy pool with
probability `alpha` (10% in MiMo) and from the regular pool otherwise. MiMo found that dropping solved
problems outright made training unstable; drawing them now and then keeps the policy from forgetting
them while most compute goes where there is still something to learn. A problem from the easy pool that
is failed again (pass rate below 1) moves back to the regular pool.

The regular pool is walked in a seeded shuffled order, reshuffled each epoch. All state (pools, cursor,
RNG) is in `state_dict()`, so an RL run resumes drawing exactly where it stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RLProblem:
    """One verifiable problem: a chat prompt and what to check the answer against."""

    id: str
    prompt: str  # the user message
    kind: str  # "math" (gold answer) or "code" (tests)
    answer: str | None = None
    tests: list[str] = field(default_factory=list)  # assert statements for function-style code problems
    entry_point: str | None = None
    family: str = ""
    difficulty: int = 0


class ProblemSampler:
    def __init__(self, problems: list[RLProblem], alpha: float = 0.1, seed: int = 0):
        if not problems:
            raise ValueError("the RL problem set is empty")
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            raise ValueError("RL problem ids must be unique")
        self.problems = {p.id: p for p in problems}
        self.alpha = alpha
        self.rng = random.Random(seed)
        self.regular: list[str] = list(ids)  # regular pool, in problem-set order
        self.easy: list[str] = []
        self.order: list[str] = []  # this epoch's shuffled walk over the regular pool
        self.cursor = 0
        self.epoch = 0

    def draw(self) -> RLProblem:
        if self.easy and (not self.regular or self.rng.random() < self.alpha):
            return self.problems[self.rng.choice(self.easy)]
        while True:
            if self.cursor >= len(self.order):
                self.order = list(self.regular)
                self.rng.shuffle(self.order)
                self.cursor, self.epoch = 0, self.epoch + 1
            pid = self.order[self.cursor]
            self.cursor += 1
            if pid in self.regular:  # skip problems that moved to the easy pool mid-epoch
                return self.problems[pid]

    def update(self, problem_id: str, pass_rate: float) -> None:
        """Record a finished group's pass rate: solved problems go easy, failed easy ones come back."""
        if pass_rate >= 1.0 and problem_id in self.regular:
            self.regular.remove(problem_id)
            self.easy.append(problem_id)
        elif pass_rate < 1.0 and problem_id in self.easy:
            self.easy.remove(problem_id)
            self.regular.append(problem_id)

    def state_dict(self) -> dict[str, Any]:
        return {"regular": list(self.regular), "easy": list(self.easy), "order": list(self.order),
                "cursor": self.cursor, "epoch": self.epoch, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = (set(state["regular"]) | set(state["easy"])) - set(self.problems)
        if unknown:
            raise ValueError(f"RL state names problems not in this problem set, e.g. {sorted(unknown)[0]!r}")
        self.regular, self.easy, self.order = list(state["regular"]), list(state["easy"]), list(state["order"])
        self.cursor, self.epoch = state["cursor"], state["epoch"]
        rng_state = state["rng"]
        self.rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))  # JSON turns tuples to lists
