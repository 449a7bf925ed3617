"""Code reward: real HumanEval / MBPP reference solutions through the sandbox, and the difficulty reward."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mimo.rewards import CodeTests, SandboxLimits, SandboxPool, TestLevels, code_reward, extract_code
from mimo.rewards.code_reward import measure_pass_rates, outputs_match

DATA = Path(__file__).parents[2] / "shared" / "data"


def load(name: str) -> list[dict]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (benchmark data lives in ../shared/data beside the repo)")
    return [json.loads(line) for line in path.open()]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool() as p:
        yield p


def run_all(fn, items):
    # More submitters than sandbox workers keep the pool saturated.
    with ThreadPoolExecutor(16) as ex:
        return list(ex.map(fn, items))


def test_humaneval_canonical_pass_and_broken_fail(pool):
    rows = load("humaneval.jsonl")

    def score(args):
        row, body = args
        tests = CodeTests(asserts=(f"{row['test']}\ncheck({row['entry_point']})",))
        return code_reward(row["prompt"] + body, tests, pool=pool)

    good = run_all(score, [(r, r["canonical_solution"]) for r in rows])
    broken = run_all(score, [(r, "    return None\n") for r in rows])
    assert len(rows) == 164
    assert [r["task_id"] for r, g in zip(rows, good) if g.score != 1.0] == []
    assert [r["task_id"] for r, b in zip(rows, broken) if b.score != 0.0] == []
    assert all(b.reason.startswith("0/1 passed") for b in broken)


@pytest.mark.parametrize("name", ["mbpp_test.jsonl", "mbpp_sanitized_test.jsonl"])
def test_mbpp_reference_solutions_pass(pool, name):
    rows = load(name)
    limits = SandboxLimits(wall_s=30)  # task 123 alone takes ~7 s

    def score(row):
        setup = row.get("test_setup_code") or "\n".join(row.get("test_imports", []))
        tests = CodeTests(asserts=tuple(row["test_list"] + row.get("challenge_test_list", [])), setup=setup, limits=limits)
        return code_reward(row["code"], tests, pool=pool)

    results = run_all(score, rows)
    failures = [(r["task_id"], res.reason) for r, res in zip(rows, results) if res.score != 1.0]
    assert failures == []
    wrong = code_reward("def nothing(): pass", CodeTests(asserts=tuple(rows[0]["test_list"])), pool=pool)
    assert wrong.score == 0.0 and "NameError" in wrong.reason


def test_stdin_stdout_tests_whitespace_tolerant(pool):
    tests = CodeTests(io=(("1 2\n", "3\n"), ("10 20\n", "30"), ("5 5", "10  \n\n")))
    assert code_reward("a, b = map(int, input().split())\nprint(a + b)", tests, pool=pool).score == 1.0
    half = code_reward("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)", tests, pool=pool)
    assert half.score == 0.0 and "wrong answer" in half.reason
    crash = code_reward("raise ValueError('boom')", tests, pool=pool)
    assert crash.score == 0.0 and "ValueError" in crash.reason
    assert outputs_match("1 2\n3", "1 2 3\n") and not outputs_match("1 2", "1 2 3")


def test_contest_data_round_trip(pool):
    """A program that prints the first expected output passes exactly the tests with that output."""
    row = next(r for r in load("code_contests_test.jsonl") if len(r["inputs"]) > 1)
    tests = CodeTests(io=tuple(zip(row["inputs"], row["outputs"])))
    cheat = f"print({row['outputs'][0]!r})"
    result = code_reward(cheat, tests, pool=pool)
    expected = all(out.split() == row["outputs"][0].split() for out in row["outputs"])
    assert result.score == float(expected)


def test_difficulty_levels_strict_and_soft():
    # Six tests: two easy (pass rate 0.9), two medium (0.5), two hard (0.1).
    levels = TestLevels.from_pass_rates([0.9, 0.9, 0.5, 0.5, 0.1, 0.1])
    assert levels.level_of_test == (0, 0, 1, 1, 2, 2) and levels.scores == pytest.approx((0.2, 0.3, 0.5))
    all_pass, easy_only = [True] * 6, [True, True, False, False, False, False]
    hard_without_medium = [True, True, False, True, True, True]
    assert levels.reward(all_pass, "strict") == pytest.approx(1.0)
    assert levels.reward(easy_only, "strict") == pytest.approx(0.2)
    assert levels.reward(hard_without_medium, "strict") == pytest.approx(0.2)  # medium not cleared: stop
    assert levels.reward(hard_without_medium, "soft") == pytest.approx(0.2 + 0.15 + 0.5)
    # Only two levels populated: their scores are renormalised so a full pass still earns 1.
    two = TestLevels.from_pass_rates([1.0, 0.0])
    assert sum(two.scores) == pytest.approx(1.0) and two.level_of_test == (0, 1)


def test_code_reward_modes_end_to_end(pool):
    tests = CodeTests(asserts=("assert f(1) == 1", "assert f(2) == 4", "assert f(-3) == 9"))
    references = ["def f(x): return x * x", "def f(x): return x * abs(x)", "def f(x): return x"]
    rates = measure_pass_rates(references, tests, pool)
    assert rates == pytest.approx([1.0, 2 / 3, 1 / 3])
    levels = TestLevels.from_pass_rates(rates)  # tests 0-1 easy, test 2 medium; no hard level
    assert levels.level_of_test == (0, 0, 1) and levels.scores == pytest.approx((0.4, 0.6))
    partial = "def f(x): return x * abs(x)"  # passes the easy tests, fails the medium one
    assert code_reward(partial, tests, "pass_all", pool=pool).score == 0.0
    assert code_reward(partial, tests, "strict", levels, pool=pool).score == pytest.approx(0.4)
    assert code_reward("def f(x): return x", tests, "strict", levels, pool=pool).score == 0.0
    assert code_reward("def f(x): return x", tests, "soft", levels, pool=pool).score == pytest.approx(0.2)
    assert code_reward("def f(x): return x * x", tests, "strict", levels, pool=pool).score == pytest.approx(1.0)
    with pytest.raises(ValueError):
        code_reward(partial, tests, "strict", None, pool=pool)


def test_code_reward_never_raises_for_hostile_code(pool):
    tests = CodeTests(asserts=("assert True",), limits=SandboxLimits(wall_s=2))
    for code in ("while True: pass", "import os; os._exit(0)", "def broken(:", ""):
        result = code_reward(code, tests, pool=pool)
        assert result.score == 0.0 and result.reason


def test_extract_code():
    whole = "Here:\n```python\ndef f(x):\n    return x\n```\nDone."
    assert extract_code(whole) == "def f(x):\n    return x\n"
    assert extract_code("```\nprint(1)\n```\n```py\nprint(2)\n```") == "print(2)\n"
    assert extract_code("<think>```python\nbad()\n```</think>\n```python\ngood()\n```") == "good()\n"
    assert extract_code("    return x + 1") == "    return x + 1"
    assert extract_code("  \n") is None
