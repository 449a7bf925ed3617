"""Math reward: extraction rules, Math-Verify verdicts and reasons, the worker pool, and real-data audits."""

import json
import threading
from pathlib import Path

import pytest

from mimo.rewards import MathRewardPool, audit_math, extract_answer, math_reward
from mimo.rewards.math_reward import perturb

DATA = Path(__file__).parents[2] / "shared" / "data"


def golds(name: str, id_key: str = "id") -> list[tuple[str, str]]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (benchmark data lives in ../shared/data beside the repo)")
    return [(r[id_key], r["answer"]) for r in map(json.loads, path.open())]


@pytest.mark.parametrize("reply, expected", [
    ("so \\boxed{1} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{\\left\\{ 1, 2 \\right\\}}", "\\left\\{ 1, 2 \\right\\}"),
    ("<think>maybe \\boxed{3}</think> The answer is 4.", "4"),
    ("Natalia sold 72 clips.\n#### 72", "72"),
    ("Therefore, the final answer is: $18$.", "18"),
    ("42", "42"),
    ("I think it is 5 or maybe 6\nbut not sure", None),
    ("\\boxed{unclosed", None),
])
def test_extract_answer(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize("reply, gold, score, reason", [
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0, "correct"),
    ("\\boxed{\\dfrac12}", "\\frac{1}{2}", 1.0, "correct"),
    ("\\boxed{[1, 3)}", "[1,3)", 1.0, "correct"),
    ("\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", 1.0, "correct"),
    ("\\boxed{10\\text{ cm}}", "10", 1.0, "correct"),
    ("\\boxed{90^\\circ}", "90", 1.0, "correct"),
    ("\\boxed{1,000}", "1000", 1.0, "correct"),
    ("\\boxed{x = 5}", "5", 1.0, "correct"),
    ("\\boxed{0.51}", "0.5", 0.0, "mismatch"),
    ("\\boxed{(1, 3)}", "[1,3)", 0.0, "mismatch"),
    ("no final answer here\nat all", "3", 0.0, "no_answer"),
])
def test_math_reward_verdicts(reply, gold, score, reason):
    result = math_reward(reply, gold)
    assert (result.score, result.reason) == (score, reason), result


def test_off_main_thread_uses_worker_processes():
    results = []
    thread = threading.Thread(target=lambda: results.append(math_reward("\\boxed{\\frac{2}{4}}", "0.5")))
    thread.start()
    thread.join(60)
    assert results and results[0].score == 1.0


def test_pool_replaces_a_crashed_worker():
    with MathRewardPool(workers=1) as pool:
        assert pool.submit("\\boxed{2}", "2").result().score == 1.0
        process, _ = pool._idle.queue[0]
        process.kill()
        process.join()
        crashed = pool.submit("\\boxed{2}", "2").result()
        assert (crashed.score, crashed.reason) == (0.0, "error: worker crashed")
        assert pool.submit("\\boxed{3}", "3").result().score == 1.0  # a fresh worker took its place


@pytest.mark.parametrize("name", ["gsm8k_test.jsonl", "math500_test.jsonl", "aime2024.jsonl", "aime2025.jsonl"])
def test_gold_answers_verify_against_themselves(name):
    items = golds(name)
    audit = audit_math(items)
    assert audit.n == len(items)
    assert all(rate == 1.0 for rate in audit.self_verified.values()), audit.failures[:20]
    assert len(audit.self_verified) >= 3
    assert audit.perturbed_accepted == 0.0 and audit.gold_parse_failures == 0.0
    assert audit.failures == []


def test_perturbation():
    assert perturb("-5") == "-4" and perturb("\\frac{1}{2}") == "\\frac{1}{2}+1"
