"""Code reward: run a solution against unit tests in the sandbox and score it.

Two test styles (`CodeTests`): assert snippets that run after the solution in its namespace (HumanEval,
MBPP) and stdin/stdout pairs (contest problems) compared whitespace-tolerantly.

Three modes:
    pass_all  1.0 only when every test passes (the vanilla binary reward).
    strict    MiMo's test-difficulty-driven reward, IOI-subtask style: a level's score is earned only
              when every test of that level and of every easier level passes.
    soft      each level's score is split evenly over its tests; the reward sums the passed tests.

Difficulty levels (`TestLevels.from_pass_rates`) come from how often reference solutions (several
models, several samples each) pass each test: pass rate >= 2/3 is Easy, >= 1/3 Medium, below Hard.
Level scores are Easy 0.2, Medium 0.3, Hard 0.5. Why: a full solution must still earn exactly 1.0, as
with pass_all; the tests nearly every sample passes (often the statement's examples) must be worth
little, or the policy learns to special-case them; and the hard tests are the ones that separate a real
solution from a partial one, so they carry half the reward. Levels with no tests are dropped and the
remaining scores renormalised to sum to 1. The MiMo report gives none of these numbers (spec 4.3).
"""

import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from mimo.rewards.result import RewardResult
from mimo.rewards.sandbox import SandboxLimits, SandboxPool, SandboxResult

LEVEL_NAMES = ("easy", "medium", "hard")
LEVEL_THRESHOLDS = (2 / 3, 1 / 3)  # pass rate at or above which a test is easy, medium
LEVEL_SCORES = (0.2, 0.3, 0.5)
FENCED = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class CodeTests:
    """The tests of one problem. Give `asserts` (snippets run after the solution, in its namespace; a test
    passes when it raises nothing) or `io` ((stdin, expected stdout) pairs), not both. `setup` is code
    run after the solution and before the tests (imports or fixtures the tests need, as MBPP's). `limits` bound each sandbox run: all asserts share
    one run; every io pair is its own run."""

    asserts: tuple[str, ...] = ()
    io: tuple[tuple[str, str], ...] = ()
    setup: str = ""
    limits: SandboxLimits = SandboxLimits()

    def __len__(self) -> int:
        return len(self.asserts) or len(self.io)


@dataclass(frozen=True)
class TestLevels:
    """Difficulty level (0 = easiest) of each test, and each level's score (summing to 1)."""

    __test__ = False  # not a pytest test class, despite the name

    level_of_test: tuple[int, ...]
    scores: tuple[float, ...]

    @classmethod
    def from_pass_rates(cls, pass_rates: list[float], thresholds: tuple[float, ...] = LEVEL_THRESHOLDS,
                        scores: tuple[float, ...] = LEVEL_SCORES) -> "TestLevels":
        """Cluster tests by the rate at which reference solutions pass them (see the module docstring)."""
        raw = [sum(rate < t for t in thresholds) for rate in pass_rates]
        used = sorted(set(raw))  # drop empty levels, keep the order
        total = sum(scores[level] for level in used)
        return cls(level_of_test=tuple(used.index(level) for level in raw),
                   scores=tuple(scores[level] / total for level in used))

    def reward(self, passed: list[bool], mode: str) -> float:
        tests_in = [[i for i, lv in enumerate(self.level_of_test) if lv == level] for level in range(len(self.scores))]
        if mode == "soft":
            return sum(self.scores[lv] / len(tests_in[lv]) for i, lv in enumerate(self.level_of_test) if passed[i])
        reward = 0.0
        for level, tests in enumerate(tests_in):  # strict: stop at the first level not fully passed
            if not all(passed[i] for i in tests):
                break
            reward += self.scores[level]
        return reward


def outputs_match(actual: str, expected: str) -> bool:
    """Whitespace-tolerant comparison: the same tokens in the same order (line breaks, runs of spaces and
    trailing whitespace do not matter). Numbers are compared as text, so 0.50 != 0.5."""
    return actual.split() == expected.split()


def extract_code(reply: str) -> str | None:
    """The code of a model reply: the last fenced block tagged python/py (else the last fenced block of
    any language), text after a `</think>` only; the whole reply if it has no fence. None if empty."""
    text = reply.rsplit("</think>", 1)[-1]
    blocks = FENCED.findall(text)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    code = (python or [code for _, code in blocks] or [text])[-1]
    return code if code.strip() else None


def run_tests(code: str, tests: CodeTests, pool: SandboxPool, stop_on_failure: bool = False) -> list[SandboxResult | None]:
    """One SandboxResult per test (for asserts, the single shared run repeated). With stop_on_failure,
    io tests not yet started when one fails are skipped and come back as None."""
    program = f"{code}\n{tests.setup}" if tests.setup else code
    if tests.asserts:
        result = pool.submit(program, tests=list(tests.asserts), limits=tests.limits).result()
        return [result] * len(tests.asserts)
    futures: list[Future] = [pool.submit(program, stdin=stdin, limits=tests.limits) for stdin, _ in tests.io]
    results: list[SandboxResult | None] = []
    for future, (_, expected) in zip(futures, tests.io):
        result = None if future.cancelled() else future.result()
        results.append(result)
        if stop_on_failure and not _passed(result, expected, len(results) - 1):
            for rest in futures:
                rest.cancel()
    return results


def _passed(result: SandboxResult | None, expected: str | None, index: int) -> bool:
    if result is None:
        return False
    if expected is None:  # an assert test
        return result.test_results.get(index, False)
    return result.ok and outputs_match(result.stdout, expected)


def check_tests(code: str, tests: CodeTests, pool: SandboxPool, stop_on_failure: bool = False) -> tuple[list[bool], str]:
    """Pass/fail per test, and a short reason naming the first failure ("" when all pass)."""
    results = run_tests(code, tests, pool, stop_on_failure)
    expected = [None] * len(tests.asserts) or [out for _, out in tests.io]
    passed = [_passed(r, e, i) for i, (r, e) in enumerate(zip(results, expected))]
    first = next((i for i, ok in enumerate(passed) if not ok), None)
    if first is None:
        return passed, ""
    result = results[first]
    if result is None:
        why = "skipped"
    elif result.ok and tests.io:
        why = "wrong answer"
    else:
        why = f"{result.status}: {result.detail}".strip(": ")
    return passed, f"test {first}: {why}"[:300]


def code_reward(completion_code: str, tests: CodeTests, mode: str = "pass_all", levels: TestLevels | None = None,
                pool: SandboxPool | None = None) -> RewardResult:
    """Score code against its tests in the sandbox; mode "pass_all" | "strict" | "soft" (strict and soft
    need `levels`). Never raises for anything the code does: crashes and timeouts score 0 with a reason.

    reason: "passed", "no_code", or "k/n passed; first failure: test i: <status/detail>".
    """
    if mode not in ("pass_all", "strict", "soft"):
        raise ValueError(f"unknown code reward mode {mode!r}: use pass_all, strict or soft")
    if mode != "pass_all" and (levels is None or len(levels.level_of_test) != len(tests)):
        raise ValueError(f"mode {mode!r} needs TestLevels with one level per test ({len(tests)} tests)")
    if not completion_code or not completion_code.strip():
        return RewardResult(0.0, "no_code", None)
    passed, failure = check_tests(completion_code, tests, pool or shared_pool(), stop_on_failure=mode == "pass_all")
    score = float(all(passed)) if mode == "pass_all" else levels.reward(passed, mode)
    reason = "passed" if not failure else f"{sum(passed)}/{len(passed)} passed; first failure: {failure}"
    return RewardResult(score, reason, completion_code)


def measure_pass_rates(solutions: list[str], tests: CodeTests, pool: SandboxPool | None = None) -> list[float]:
    """Per-test pass rate over reference solutions (steps 1-2 of the MiMo reward), for TestLevels."""
    outcomes = [check_tests(code, tests, pool or shared_pool())[0] for code in solutions]
    return [sum(col) / len(outcomes) for col in zip(*outcomes)]


_shared: SandboxPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> SandboxPool:
    """The process-wide sandbox pool used when no pool is passed (one worker per CPU)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SandboxPool()
        return _shared
