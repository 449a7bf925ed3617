"""Benchmarks: read a dataset file into Problems, build each prompt, and grade a reply.

Readers take the JSONL formats of ../shared/data/README.md; a user's own set uses the `math` or `code`
benchmark (formats in docs/rewards.md):
    math   {"id", "problem", "answer"}                         graded by math_reward
    code   {"id", "problem", "tests": [assert, ...]}            asserts run after the reply's code
           {"id", "problem", "inputs": [...], "outputs": [...]} stdin/stdout, whitespace-tolerant

Prompt templates (chat: one user message, empty system prompt, as MiMo recommends; the completions API
gets the same text, followed for code by an opened ```python fence the model continues):
    math   "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
    code   "{task}\n\nWrite your solution in Python 3 and reply with it in a single ```python code block."
where {task} is, per benchmark: HumanEval, "Complete the following Python function:" then the prompt in
a python fence; MBPP, the description and "Your code should pass these tests:" with its test asserts;
contests and user stdin/stdout sets, the statement and "Read from standard input and write to standard
output.".
"""

import re
from dataclasses import dataclass
from pathlib import Path

from mimo.data import corpus
from mimo.rewards import CodeTests, RewardResult, SandboxLimits, SandboxPool, code_reward, extract_code, math_reward

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write your solution in Python 3 and reply with it in a single ```python code block."
CODE_FENCE = "```python\n"


DatasetError = corpus.DataError  # a dataset file that cannot be read; the message names the file and line


@dataclass
class Problem:
    """One benchmark item. `code_prefix` is code the reply continues or completes (HumanEval's prompt)."""

    id: str
    kind: str  # "math" or "code"
    text: str  # the prompt, before the chat template
    gold: str = ""
    tests: CodeTests | None = None
    code_prefix: str = ""
    entry_point: str = ""

    def completion_prompt(self) -> tuple[str, list[str]]:
        """Prompt and stop strings for the completions API (base models). HumanEval's prompt is the code
        itself and the model writes the body; other code prompts end in an opened fence."""
        if self.code_prefix:
            return self.code_prefix, ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
        if self.kind == "code":
            return f"{self.text}\n\n{CODE_FENCE}", ["```"]
        return self.text, []


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line; DatasetError naming the file and line on bad JSON
    or a missing field, or the file when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    rows = corpus.read_jsonl(path, required)
    if not rows:
        raise DatasetError(f"{path}: no records")
    return rows


def math_prompt(problem: str) -> str:
    return f"{problem}\n\n{MATH_INSTRUCTION}"


def code_prompt(task: str) -> str:
    return f"{task}\n\n{CODE_INSTRUCTION}"


def load_math(path, question_key: str = "problem") -> list[Problem]:
    return [Problem(id=str(r.get("id", n)), kind="math", text=math_prompt(r[question_key]), gold=str(r["answer"]))
            for n, r in read_jsonl(path, (question_key, "answer"))]


def load_gsm8k(path) -> list[Problem]:
    return load_math(path, question_key="question")


def load_humaneval(path) -> list[Problem]:
    rows = read_jsonl(path, ("task_id", "prompt", "test", "entry_point"))
    return [Problem(id=r["task_id"], kind="code",
                    text=code_prompt(f"Complete the following Python function:\n{CODE_FENCE}{r['prompt']}```"),
                    tests=CodeTests(asserts=(f"{r['test']}\ncheck({r['entry_point']})",)),
                    code_prefix=r["prompt"], entry_point=r["entry_point"]) for _, r in rows]


def load_mbpp(path) -> list[Problem]:
    """Both MBPP layouts: full/test (`text`, `test_setup_code`) and sanitized (`prompt`, `test_imports`)."""
    problems = []
    for n, r in read_jsonl(path, ("task_id", "test_list")):
        description = r.get("text") or r.get("prompt")
        if description is None:
            raise DatasetError(f"{path}:{n}: missing field text (or prompt)")
        setup = r.get("test_setup_code") or "\n".join(r.get("test_imports", []))
        asserts = "\n".join(r["test_list"])
        problems.append(Problem(id=str(r["task_id"]), kind="code",
                                text=code_prompt(f"{description}\nYour code should pass these tests:\n\n{asserts}"),
                                tests=CodeTests(asserts=tuple(r["test_list"] + r.get("challenge_test_list", [])),
                                                setup=setup)))
    return problems


def load_stdio(path) -> list[Problem]:
    """Contest-style problems; per-test wall limit twice the stated time limit (Python is slow), >= 4 s."""
    problems = []
    for n, r in read_jsonl(path, ("problem", "inputs", "outputs")):
        if len(r["inputs"]) != len(r["outputs"]) or not r["inputs"]:
            raise DatasetError(f"{path}:{n}: inputs and outputs must be non-empty lists of equal length")
        limits = SandboxLimits(wall_s=max(4.0, 2 * float(r.get("time_limit_s", 2.0))))
        problems.append(Problem(id=str(r.get("id", n)), kind="code",
                                text=code_prompt(f"{r['problem']}\n\nRead from standard input and write to standard output."),
                                tests=CodeTests(io=tuple(zip(r["inputs"], r["outputs"])), limits=limits)))
    return problems


def load_code(path) -> list[Problem]:
    """A user's code set: assert `tests`, or stdin/stdout `inputs`/`outputs`."""
    rows = read_jsonl(path, ("problem",))
    if all("tests" in r for _, r in rows):
        return [Problem(id=str(r.get("id", n)), kind="code", text=code_prompt(r["problem"]),
                        tests=CodeTests(asserts=tuple(r["tests"]), setup=r.get("setup", ""))) for n, r in rows]
    return load_stdio(path)


LOADERS = {"gsm8k": load_gsm8k, "math500": load_math, "aime": load_math, "math": load_math,
           "humaneval": load_humaneval, "mbpp": load_mbpp, "contests": load_stdio, "code": load_code}


def load_benchmark(name: str, path) -> list[Problem]:
    if name not in LOADERS:
        raise DatasetError(f"unknown benchmark {name!r}; choose one of: {', '.join(LOADERS)}")
    return LOADERS[name](path)


def solution_program(problem: Problem, reply: str) -> str | None:
    """The code to test for a reply. For HumanEval the reply may hold the whole function or only its body:
    a reply that defines the entry point runs after the prompt (which supplies imports and helpers); a
    body is indented if needed and appended to the prompt's signature."""
    code = extract_code(reply)
    if code is None or not problem.code_prefix:
        return code
    if re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE):
        return f"{problem.code_prefix}\n{code}"
    lines = code.rstrip().splitlines()
    body_indented = all(not line.strip() or line.startswith((" ", "\t")) for line in lines)
    body = code if body_indented else "\n".join("    " + line if line.strip() else line for line in lines)
    return problem.code_prefix + body.lstrip("\n") + "\n"


def grade(problem: Problem, reply: str, pool: SandboxPool | None = None) -> RewardResult:
    """Score one reply: math_reward for math, pass-all code_reward for code."""
    if problem.kind == "math":
        return math_reward(reply, problem.gold)
    program = solution_program(problem, reply)
    if program is None:
        return RewardResult(0.0, "no_code", None)
    return code_reward(program, problem.tests, pool=pool)
