"""A seeded generator of verifiable reasoning problems: the built-in data of the quickstart and of RL.

Every problem has a prompt, a worked solution (step-by-step reasoning inside <think>...</think>, then the
answer) and something to check an answer against: a gold final answer written as \\boxed{...} for the
math families, unit tests (assert statements) for the code family.

    arithmetic  column-wise addition / subtraction with carries and borrows, multiplication by one digit
    linear      solve a*x + b = c for an integer x
    word        templated word problems (one or two operations)
    code        write a small Python function that passes the given asserts

Each family has difficulty tiers 1 (easiest) to 3. The generator is deterministic: problem `index` of a
(family, difficulty, split, seed) stream is always the same problem, so a training run can resume from a
saved index. Splits are decided by a hash of the problem's identity (`Problem.key`, e.g. "add:47+38"),
not by the seed, so the train and held-out splits never share a problem whatever seeds are used.

The reasoning is written so that a tiny model can learn it: one column (or one operation) per line,
place names that say which digits to read, and numbers tokenised one digit per token.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Callable

FAMILIES = ("arithmetic", "linear", "word", "code")
DIFFICULTIES = (1, 2, 3)
SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 10  # share of each family's problem space reserved for evaluation
PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")


@dataclass(frozen=True)
class Problem:
    family: str
    difficulty: int
    prompt: str
    solution: str  # "<think>\n...\n</think>\n" + final answer (boxed, or a code block)
    answer: str | None  # gold content of \boxed{...}; None for code problems
    key: str  # the problem's identity: equal keys are the same problem; decides the split
    tests: list[str] = field(default_factory=list)  # assert statements, code problems only
    entry_point: str | None = None  # the function a code problem asks for

    @property
    def split(self) -> str:
        return split_of(self.key)

    def text(self) -> str:
        """The problem as one plain-text document, the form pretraining sees."""
        return f"Problem: {self.prompt}\nSolution: {self.solution}"

    def messages(self) -> list[dict[str, str]]:
        """The problem as a chat, the form SFT sees."""
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.solution}]


def split_of(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[i:j].strip()
            depth -= 1
    return None


def extract_code(text: str) -> str | None:
    """The last ```python fenced block of `text`, or None."""
    blocks = re.findall(r"```(?:python)?\n(.*?)```", text, flags=re.S)
    return blocks[-1] if blocks else None


def _solution(steps: list[str], answer: str) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\nThe answer is \\boxed{" + answer + "}."


# ---- arithmetic --------------------------------------------------------------------------------------

def _digits(n: int) -> list[int]:
    """Digits from the ones place up."""
    return [int(c) for c in reversed(str(n))]


def _add_steps(a: int, b: int) -> list[str]:
    da, db, steps, carry = _digits(a), _digits(b), [], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        total = x + y + carry
        terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
        carry = total // 10
        steps.append(f"{PLACES[i]}: {terms} = {total}, write {total % 10}" + (f", carry {carry}." if carry else "."))
    if carry:
        steps.append(f"{PLACES[len(steps)]}: write the carry {carry}.")
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    da, db, steps, borrow = _digits(a), _digits(b), [], 0
    for i in range(len(da)):
        x, y = da[i] - borrow, (db[i] if i < len(db) else 0)
        top = f"{da[i]} - {borrow}" if borrow else f"{da[i]}"
        borrow = 1 if x < y else 0
        if borrow:
            steps.append(f"{PLACES[i]}: {top} - {y} is below zero, borrow 1: {x + 10} - {y} = {x + 10 - y}.")
        else:
            steps.append(f"{PLACES[i]}: {top} - {y} = {x - y}.")
    return steps


def _mul_steps(a: int, b: int) -> list[str]:
    steps, carry = [], 0
    for i, x in enumerate(_digits(a)):
        total = x * b + carry
        terms = f"{x} * {b}" + (f" + {carry}" if carry else "")
        carry = total // 10
        steps.append(f"{PLACES[i]}: {terms} = {total}, write {total % 10}" + (f", carry {carry}." if carry else "."))
    if carry:
        steps.append(f"{PLACES[len(steps)]}: write the carry {carry}.")
    return steps


def work(a: int, op: str, b: int) -> list[str]:
    """The column-by-column working of a op b, ending "So a op b = result.". Every family computes through
    this, so a tiny model learns one procedure (and the digit facts) once and reuses it everywhere.
    Negative operands (tier-3 equations) are written as one step."""
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    if a < 0 or b < 0 or (op == "*" and not 0 <= b <= 9):
        return [f"So {a} {op} {b} = {result}."]
    if op == "-" and a < b:
        return [f"{a} is less than {b}, so compute {b} - {a} and negate it."] + work(b, "-", a)[:-1] + [
            f"So {a} - {b} = {result}."]
    steps = {"+": _add_steps, "-": _sub_steps, "*": _mul_steps}[op](a, b)
    return steps + [f"So {a} {op} {b} = {result}."]


def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    """Tier 1: 2-digit + 2-digit. Tier 2: 3-digit addition or subtraction. Tier 3: 4-digit addition or
    subtraction, or a 3-digit number times one digit."""
    width = {1: 2, 2: 3, 3: 4}[difficulty]
    op = "+" if difficulty == 1 else rng.choice("+-*" if difficulty == 3 else "+-")
    lo, hi = 10 ** (width - 1), 10**width - 1
    if op == "*":
        a, b = rng.randint(100, 999), rng.randint(2, 9)
    else:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "-":
            a, b = max(a, b), min(a, b)
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    steps = ["Work column by column from the right."] + work(a, op, b)
    return Problem("arithmetic", difficulty, f"What is {a} {op} {b}?", _solution(steps, str(result)),
                   str(result), key=f"arith:{a}{op}{b}")


# ---- linear equations --------------------------------------------------------------------------------

def linear(rng: random.Random, difficulty: int) -> Problem:
    """Tier 1: x + b = c. Tier 2: a*x + b = c, positive. Tier 3: negative coefficients and solutions."""
    if difficulty == 1:
        a, x, b = 1, rng.randint(1, 20), rng.randint(1, 20)
    elif difficulty == 2:
        a, x, b = rng.randint(2, 9), rng.randint(1, 12), rng.randint(1, 30)
    else:
        a, x, b = rng.choice([-1, 1]) * rng.randint(2, 9), rng.randint(-15, 15), rng.randint(-30, 30)
    c = a * x + b
    ax = "x" if a == 1 else f"{a}x"
    lhs = ax + (f" + {b}" if b >= 0 else f" - {-b}")
    if b >= 0:
        steps = [f"Subtract {b} from both sides: {ax} = {c} - {b}."] + work(c, "-", b)
    else:
        steps = [f"Add {-b} to both sides: {ax} = {c} + {-b}."] + work(c, "+", -b)
    if a != 1:
        steps.append(f"Divide both sides by {a}: x = {c - b} / {a} = {x}.")
    steps.append(f"Check: {a} * {x} + {b} = {c}." if a != 1 else f"Check: {x} + {b} = {c}.")
    return Problem("linear", difficulty, f"Solve for x: {lhs} = {c}.", _solution(steps, str(x)), str(x),
                   key=f"linear:{a},{b},{c}")


# ---- word problems -----------------------------------------------------------------------------------

NAMES = ("Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lina", "Ravi", "Yuki", "Sam")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "coins", "shells", "cards")


def word(rng: random.Random, difficulty: int) -> Problem:
    """Tier 1: one addition or subtraction. Tier 2: two steps. Tier 3: groups (multiplication) plus extras."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if difficulty == 1:
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        if rng.random() < 0.5:
            prompt = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
            steps = [f"{name} starts with {a} and gets {b}, so add: {a} + {b}."] + work(a, "+", b)
            result, key = a + b, f"w1+:{a},{b}"
        else:
            a, b = max(a, b), min(a, b)
            prompt = f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?"
            steps = [f"{name} starts with {a} and gives away {b}, so subtract: {a} - {b}."] + work(a, "-", b)
            result, key = a - b, f"w1-:{a},{b}"
    elif difficulty == 2:
        a, b, c = rng.randint(10, 60), rng.randint(2, 30), rng.randint(1, 9)
        prompt = (f"{name} has {a} {item}, buys {b} more, then loses {c}. "
                  f"How many {item} does {name} have at the end?")
        steps = ([f"After buying: {a} + {b}."] + work(a, "+", b) + [f"After losing {c}: {a + b} - {c}."]
                 + work(a + b, "-", c))
        result, key = a + b - c, f"w2:{a},{b},{c}"
    else:
        n, per, extra = rng.randint(2, 9), rng.randint(3, 25), rng.randint(1, 20)
        prompt = (f"{name} has {n} boxes with {per} {item} in each box and {extra} loose {item}. "
                  f"How many {item} does {name} have in total?")
        steps = ([f"In the boxes: {per} * {n}."] + work(per, "*", n) + [f"With the loose ones: {n * per} + {extra}."]
                 + work(n * per, "+", extra))
        result, key = n * per + extra, f"w3:{n},{per},{extra}"
    return Problem("word", difficulty, prompt, _solution(steps, str(result)),
                   str(result), key=f"word:{key}:{item}")


# ---- code --------------------------------------------------------------------------------------------

def code(rng: random.Random, difficulty: int) -> Problem:
    """Tier 1: arithmetic on one argument. Tier 2: a list reduction. Tier 3: a string transformation."""
    if difficulty == 1:
        k = rng.randint(2, 20)
        op, verb, fn = rng.choice([("+", "plus", "add"), ("*", "times", "times"), ("-", "minus", "minus")])
        name, task = f"{fn}_{k}", f"returns x {verb} {k}"
        body, reason = f"return x {op} {k}", f"The function returns x {op} {k}."
        inputs, expected = [rng.randint(-9, 30) for _ in range(3)], None
        expected = [eval(f"{v} {op} {k}") for v in inputs]  # noqa: S307 - our own literal arithmetic
        args = [str(v) for v in inputs]
    elif difficulty == 2:
        k = rng.randint(2, 9)
        name, task = f"sum_multiples_of_{k}", f"returns the sum of the numbers in the list xs that are multiples of {k}"
        body = f"return sum(x for x in xs if x % {k} == 0)"
        reason = f"Keep the numbers with x % {k} == 0 and add them up."
        lists = [[rng.randint(0, 40) for _ in range(rng.randint(2, 6))] for _ in range(3)]
        args, expected = [str(xs) for xs in lists], [sum(x for x in xs if x % k == 0) for xs in lists]
    else:
        ch = rng.choice("aeiou")
        name, task = f"count_{ch}", f"returns how many times the letter '{ch}' appears in the string s"
        body, reason = f"return s.count('{ch}')", f"Use str.count to count '{ch}'."
        words = ["".join(rng.choice("abcdeiou") for _ in range(rng.randint(3, 9))) for _ in range(3)]
        args, expected = [repr(w) for w in words], [w.count(ch) for w in words]
    param = {1: "x", 2: "xs", 3: "s"}[difficulty]
    tests = [f"assert {name}({a}) == {e!r}" for a, e in zip(args, expected)]
    prompt = f"Write a Python function {name}({param}) that {task}. It must pass:\n" + "\n".join(tests)
    solution = f"<think>\n{reason}\n</think>\n```python\ndef {name}({param}):\n    {body}\n```"
    return Problem("code", difficulty, prompt, solution, None, key=f"code:{name}:{'|'.join(args)}",
                   tests=tests, entry_point=name)


GENERATORS: dict[str, Callable[[random.Random, int], Problem]] = {
    "arithmetic": arithmetic, "linear": linear, "word": word, "code": code}


# ---- streams and evaluation sets ---------------------------------------------------------------------

def make_problem(family: str, difficulty: int, split: str, seed: int, index: int) -> Problem:
    """Problem number `index` of the (family, difficulty, split, seed) stream: always the same problem."""
    if family not in GENERATORS:
        raise ValueError(f"unknown reasoning family {family!r}; choose from {', '.join(FAMILIES)}")
    if difficulty not in DIFFICULTIES or split not in SPLITS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES} and split one of {SPLITS}")
    rng = random.Random(f"{seed}:{family}:{difficulty}:{split}:{index}")
    while True:  # rejection sampling: ~10% of draws belong to the other split
        problem = GENERATORS[family](rng, difficulty)
        if problem.split == split:
            return problem


def mixed_problem(families: list[str], difficulties: list[int], split: str, seed: int, index: int) -> Problem:
    """Item `index` of an endless stream mixing the given families and tiers uniformly. It depends only on
    (seed, index), so a stream restarted at a saved index continues exactly where it left off."""
    rng = random.Random(f"{seed}:mix:{index}")
    return make_problem(rng.choice(families), rng.choice(difficulties), split, seed, index)


def heldout_set(families: list[str], difficulties: list[int], per_tier: int, seed: int = 0) -> list[Problem]:
    """`per_tier` held-out problems for every (family, difficulty), in a fixed order, no problem twice
    (tiers can overlap: a tier-3 linear equation may happen to look like a tier-2 one)."""
    problems, seen = [], set()
    for family in families:
        for difficulty in difficulties:
            tier: list[Problem] = []
            for index in range(per_tier * 50):
                p = make_problem(family, difficulty, "heldout", seed, index)
                if p.key not in seen:
                    seen.add(p.key)
                    tier.append(p)
                if len(tier) == per_tier:
                    break
            problems += tier
    return problems
