"""`mimo chat` and `mimo generate` as a user runs them: real subprocesses on a tiny checkpoint."""

import subprocess
import sys

import pytest

from mimo.engine import Engine, SamplingParams
from mimo.serve.chat import stream
from mimo.serve.server import load_engine
from test_serve import build_checkpoint  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("chat"))


def run_mimo(*args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mimo", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_generate_prints_the_greedy_completion(checkpoint):
    engine = load_engine(checkpoint, speculative_tokens=0)
    expect = engine.generate([engine.tokenizer.encode("the model")],
                             SamplingParams(max_tokens=8, temperature=0))[0].samples[0].text
    done = run_mimo("generate", checkpoint, "the model", "--max-tokens", 8)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expect + "\n" and "tok/s" in done.stderr and "acceptance" in done.stderr


def test_chat_keeps_history_and_resets(checkpoint):
    done = run_mimo("chat", checkpoint, "--max-tokens", 6, "--temperature", 0,
                    stdin="the model adds\nand thinks\n/reset\nthe model adds\n/exit\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "history cleared" in out
    # Replies are greedy: the first turn and the first turn after /reset see the same prompt.
    turns = [t for t in out.split("> ")[1:] if "history cleared" not in t and t.strip()]
    assert len(turns) == 3 and turns[0] == turns[2] and turns[0] != turns[1]


def test_stream_calls_back_with_every_piece(checkpoint):
    engine: Engine = load_engine(checkpoint, speculative_tokens=1)
    pieces: list[str] = []
    prompt = engine.tokenizer.encode("count 1 2 3")
    sample = stream(engine, prompt, SamplingParams(max_tokens=10, temperature=0), pieces.append)
    assert "".join(pieces) == sample.text and not engine.has_unfinished()
