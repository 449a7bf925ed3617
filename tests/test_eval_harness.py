"""The eval harness end to end against a real OpenAI-compatible HTTP server on loopback (canned replies),
plus metrics and bad input."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from mimo.cli import _register, app
from mimo.eval.benchmarks import DatasetError, load_benchmark
from mimo.eval.generators import EndpointError, OpenAIGenerator, SamplingSettings
from mimo.eval.harness import run_eval
from mimo.eval.metrics import pass_at_k, summarize

DATA = Path(__file__).parents[2] / "shared" / "data"


class FakeEndpoint:
    """A tiny OpenAI-compatible server: `reply(prompt_text, n_request)` gives each completion; the first
    `fail_first` requests get HTTP 503 (to exercise retries)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_first = 0
        self.reply = lambda text, n: "no idea"
        api = FastAPI()

        @api.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            return self._answer(body, body["messages"][-1]["content"], chat=True)

        @api.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            return self._answer(body, body["prompt"], chat=False)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _answer(self, body: dict, text: str, chat: bool):
        self.requests.append(body)
        if len(self.requests) <= self.fail_first:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        content = self.reply(text, len(self.requests))
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": content}} if chat else {"text": content})
        return {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
                "model": body["model"], "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def stop(self):
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def endpoint():
    server = FakeEndpoint()
    yield server
    server.stop()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def math_problems(tmp_path, n=6):
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    return load_benchmark("math", write_jsonl(tmp_path / "math.jsonl", rows))


def test_pass_at_k_matches_brute_force():
    from itertools import combinations
    n, c = 6, 2
    for k in range(1, n + 1):
        subsets = list(combinations([True] * c + [False] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_summary_avg_at_k_and_ci():
    summary = summarize({"a": [True, True, False, False], "b": [True, True, True, False], "c": [True] + [False] * 3})
    assert summary.pass1 == pytest.approx(0.5) and summary.samples_per_problem == 4
    assert summary.pass_at[4] == pytest.approx(1.0) and summary.pass_at[1] == pytest.approx(0.5)
    low, high = summary.ci95  # per-problem accuracies .5, .75, .25: std .25 over 3 problems
    assert high - low == pytest.approx(2 * 1.96 * 0.25 / 3 ** 0.5) and low < 0.5 < high


def test_math_eval_over_http_with_k_samples_and_resume(endpoint, tmp_path):
    problems = math_problems(tmp_path)
    # Sample 0 of every problem is right, the others are wrong: avg@4 = 25%, pass@4 = 100%.
    calls = {}

    def reply(text, n):
        i = int(text.split()[2])
        calls[i] = calls.get(i, 0) + 1
        return f"Let me add. The answer is \\boxed{{{2 * i if calls[i] == 1 else 2 * i + 1}}}."

    endpoint.reply = reply
    output = tmp_path / "out.jsonl"
    gen = OpenAIGenerator(endpoint.url, "fake", max_retries=1)
    summary = run_eval(problems, gen, output, samples=4, concurrency=1)
    assert summary.pass1 == pytest.approx(0.25) and summary.pass_at[4] == pytest.approx(1.0)
    records = [json.loads(line) for line in output.open()]
    assert len(records) == 24 and {"prompt", "completion", "extracted", "correct", "reason"} <= records[0].keys()
    assert records[0]["prompt"].endswith("put your final answer within \\boxed{}.")
    assert endpoint.requests[0]["messages"][0] == {"role": "system", "content": ""}
    assert endpoint.requests[0]["temperature"] == 0.6 and endpoint.requests[0]["top_p"] == 0.95
    # A second run finds every sample done and asks the server nothing.
    before = len(endpoint.requests)
    again = run_eval(problems, gen, output, samples=4, concurrency=4)
    assert len(endpoint.requests) == before and again.pass1 == summary.pass1
    # Different settings on the same output are refused.
    with pytest.raises(DatasetError, match="other settings"):
        run_eval(problems, gen, output, samples=4, settings=SamplingSettings(temperature=1.0))


def test_retries_then_clear_error_keeping_finished_samples(endpoint, tmp_path):
    problems = math_problems(tmp_path, n=4)
    endpoint.fail_first = 1  # one 503, then a retry succeeds
    endpoint.reply = lambda text, n: "\\boxed{0}"
    output = tmp_path / "out.jsonl"
    run_eval(problems[:1], OpenAIGenerator(endpoint.url, "fake", max_retries=2), output, concurrency=1)
    assert len(endpoint.requests) == 2
    endpoint.stop()  # the endpoint goes away mid-evaluation
    dead = OpenAIGenerator(endpoint.url, "fake", max_retries=1, timeout_s=2)
    with pytest.raises(EndpointError, match="1 of 4 samples are saved"):
        run_eval(problems, dead, output, concurrency=2)
    assert [json.loads(line)["id"] for line in output.open()] == ["p0"]


def test_code_eval_whole_function_body_only_and_completions(endpoint, tmp_path):
    rows = [{"task_id": "T/0", "entry_point": "add",
             "prompt": "import math\n\ndef add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
             "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"}]
    problems = load_benchmark("humaneval", write_jsonl(tmp_path / "he.jsonl", rows))
    replies = iter(["Sure:\n```python\ndef add(a, b):\n    return a + b\n```",  # whole function
                    "```python\nreturn a + b\n```",  # body only, unindented
                    "```python\ndef add(a, b):\n    return a - b\n```"])  # wrong
    endpoint.reply = lambda text, n: next(replies)
    gen = OpenAIGenerator(endpoint.url, "fake", max_retries=1)
    summary = run_eval(problems, gen, tmp_path / "out.jsonl", samples=3, concurrency=1)
    assert summary.pass1 == pytest.approx(2 / 3)
    endpoint.reply = lambda text, n: "    return a + b\n"  # a base model continuing the prompt
    base = OpenAIGenerator(endpoint.url, "fake", api="completions", max_retries=1)
    assert run_eval(problems, base, tmp_path / "base.jsonl").pass1 == 1.0
    assert endpoint.requests[-1]["prompt"] == rows[0]["prompt"] and "\ndef " in endpoint.requests[-1]["stop"]


def test_cli_end_to_end_prints_percent(endpoint, tmp_path):
    data = write_jsonl(tmp_path / "sums.jsonl", [{"id": "s", "problem": "Add the two numbers.",
                                                "inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}])
    endpoint.reply = lambda text, n: "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    _register()
    result = CliRunner().invoke(app, ["eval", "--benchmark", "contests", "--data", str(data), "--base-url", endpoint.url,
                                      "--model-name", "fake", "-k", "2", "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0, result.output
    assert "pass@1 (avg@2): 100.00%" in result.output
    assert json.loads((tmp_path / "o.jsonl.summary.json").read_text())["pass1"] == 1.0


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "problem": "1+1", "answer": "2"}\n\n{"id": "b", "problem": "oops"\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: malformed JSON"):
        load_benchmark("math", bad)
    bad.write_text('{"id": "a", "problem": "1+1"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: missing field\(s\) answer"):
        load_benchmark("math", bad)
    with pytest.raises(DatasetError, match="unknown benchmark 'mmlu'"):
        load_benchmark("mmlu", bad)
    _register()
    result = CliRunner().invoke(app, ["eval", "--benchmark", "mmlu", "--data", str(bad), "--base-url",
                                      "http://127.0.0.1:9/v1", "--model-name", "m"])
    assert result.exit_code == 2 and "unknown benchmark" in result.output


@pytest.mark.parametrize("name, benchmark, count", [
    ("gsm8k_test.jsonl", "gsm8k", 1319), ("math500_test.jsonl", "math500", 500), ("aime2024.jsonl", "aime", 30),
    ("aime2025.jsonl", "aime", 30), ("humaneval.jsonl", "humaneval", 164), ("mbpp_test.jsonl", "mbpp", 500),
    ("mbpp_sanitized_test.jsonl", "mbpp", 257), ("code_contests_test.jsonl", "contests", 165)])
def test_real_datasets_load(name, benchmark, count):
    if not (DATA / name).exists():
        pytest.skip(f"{DATA / name} not found")
    problems = load_benchmark(benchmark, DATA / name)
    assert len(problems) == count and len({p.id for p in problems}) == count
    assert all(p.gold if p.kind == "math" else len(p.tests) > 0 for p in problems)


def test_eval_a_local_checkpoint_through_the_engine(tmp_path):
    """`mimo eval --model CHECKPOINT`: generations from mimo's engine in-process, graded and summarised."""
    import subprocess
    import sys

    import torch

    from mimo.config import MiMoConfig
    from mimo.model import MiMoForCausalLM
    from mimo.tokenizer import train_tokenizer

    tok = train_tokenizer([f"What is {a} + {b}? \\boxed{{{a + b}}}" for a in range(60) for b in range(20)], 300)
    torch.manual_seed(0)
    MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=len(tok), num_hidden_layers=2,
                                           eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"id": f"s{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))
    out = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-m", "mimo", "eval", "--benchmark", "math", "--data", str(data),
                             "--model", str(tmp_path / "ckpt"), "-k", "2", "--max-tokens", "16", "--output", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["id"], r["sample"]) for r in rows) == [(f"s{i}", j) for i in range(3) for j in range(2)]
    assert all(r["correct"] is False and r["reason"] for r in rows)  # a random model: graded, and wrong
    assert "pass@1 (avg@2)" in result.stdout + result.stderr
