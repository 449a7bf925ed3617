"""The OpenAI-compatible server, driven by the official `openai` client and raw HTTP on loopback:
chat, completions, streaming, n, stop, seed, logprobs, usage, reasoning_content, bad input, and 200
concurrent clients of which some disconnect mid-stream."""

import asyncio
import json
import random
import subprocess
import sys
import time

import httpx
from conftest import running_server
import openai
import pytest
import torch

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
from mimo.serve.reasoning import ReasoningParser, split_reasoning
from mimo.serve.server import create_app, load_engine
from mimo.tokenizer import train_tokenizer

MODEL = "tiny"


def corpus(lines: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "the model adds numbers and thinks about each step before it answers the question".split()
    out = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        out.append(f"{' '.join(rng.choices(words, k=6))}: {a} + {b} = {a + b}.")
    return out


def build_checkpoint(path, chat_template: str | None = None):
    tok = train_tokenizer(corpus(), vocab_size=400)
    if chat_template:
        tok.config["chat_template"] = chat_template
    torch.manual_seed(0)
    config = MiMoConfig.from_preset("mimo-2m", vocab_size=len(tok), initializer_range=0.1, max_position_embeddings=256,
                                    eos_token_id=tok.eos_token_id)
    MiMoForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    engine = load_engine(checkpoint, max_batch_size=16)  # the checkpoint has an MTP layer: speculation on
    with running_server(create_app(engine, MODEL)) as url:
        yield url, engine


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=60)


HELLO = [{"role": "user", "content": "the model adds 12 + 30"}]
# The random tiny model may emit an end token at any point; tests that count tokens ask it not to stop.
NO_EOS = {"extra_body": {"ignore_eos": True}}


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}


def test_chat_usage_and_logprobs(server, client):
    engine = server[1]
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, logprobs=True,
                                       top_logprobs=3, **NO_EOS)
    choice = r.choices[0]
    prompt = engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(choice.logprobs.content) == 12
    assert r.usage.total_tokens == len(prompt) + 12 and choice.finish_reason == "length"
    for entry in choice.logprobs.content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy takes the top token
    # The same request straight through a fresh engine gives the same tokens.
    direct = Engine(engine.model, engine.tokenizer).generate([prompt], engine_params(12, ignore_eos=True))
    direct = direct[0].samples[0]
    assert choice.message.content == direct.text and choice.message.reasoning_content is None


def engine_params(max_tokens, **kw):
    return SamplingParams(max_tokens=max_tokens, temperature=0, **kw)


def test_streaming_matches_non_streaming(client):
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, temperature=0, **NO_EOS)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}, **NO_EOS))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_n_and_seed_reproducibility(client):
    kw = dict(model=MODEL, messages=HELLO, max_tokens=16, temperature=1.0, n=2, seed=1234, **NO_EOS)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    texts = [c.message.content for c in a.choices]
    assert len(texts) == 2 and texts[0] != texts[1]
    assert texts == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == 32
    streamed = {}
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert [streamed[0], streamed[1]] == texts


def test_stop_strings(client):
    free = client.completions.create(model=MODEL, prompt="the model adds", max_tokens=24, temperature=0,
                                  **NO_EOS).choices[0]
    stop = free.text[8:11]
    cut = free.text[:free.text.index(stop)]
    r = client.completions.create(model=MODEL, prompt="the model adds", max_tokens=24, temperature=0, stop=[stop],
                                  **NO_EOS)
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="the model adds", max_tokens=24, temperature=0,
                                         stop=stop, stream=True, **NO_EOS)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_completions_with_token_prompt_and_logprobs(server, client):
    ids = server[1].tokenizer.encode("12 + 30 =")
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0, logprobs=2,
                                  **NO_EOS)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 6 == r.usage.completion_tokens and r.usage.prompt_tokens == len(ids)
    assert "".join(lp.tokens) == r.choices[0].text and all(len(t) == 2 for t in lp.top_logprobs)


def test_metrics(server, client):
    client.completions.create(model=MODEL, prompt="the", max_tokens=4)
    text = httpx.get(server[0] + "/metrics").text
    for name in ("mimo_requests_waiting", "mimo_requests_running", "mimo_generation_tokens_per_second",
                 'mimo_spec_decode_acceptance_rate{position="0"}'):
        assert name in text
    generated = float(next(line.split()[1] for line in text.splitlines()
                           if line.startswith("mimo_generation_tokens_total")))
    assert generated >= 4


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    ({"model": MODEL, "messages": HELLO, "frobnicate": 1}, 400, "frobnicate"),
    ({"model": MODEL, "messages": HELLO, "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "messages": HELLO, "max_tokens": -5}, 400, "max_tokens"),
    ({"model": MODEL, "messages": HELLO, "max_tokens": 10**9}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "the " * 400}]}, 400, "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ({"model": MODEL, "messages": HELLO, "n": 10**6}, 400, "n"),
    ({"model": "gpt-9", "messages": HELLO}, 404, "model"),
    ({"messages": "hello"}, 400, "messages"),
    ([1, 2, 3], 400, None),
])
def test_bad_requests_get_openai_errors(server, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server[0] + "/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param:
        assert error["param"].startswith(param)


def test_bad_completion_prompt_and_unknown_route(server):
    r = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": [10**7]})
    assert r.status_code == 400 and "prompt token ids" in r.json()["error"]["message"]
    r = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": ""})
    assert r.status_code == 400
    r = httpx.get(server[0] + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_200_concurrent_clients_some_disconnecting(checkpoint):
    """A smaller server (8 slots, 40 waiting) under 200 clients: every request gets a completion or an
    OpenAI 429, streams cut mid-way free their cache, and the server stays healthy."""
    engine = load_engine(checkpoint, max_batch_size=8)
    with running_server(create_app(engine, MODEL, max_waiting=40)) as url:
        async def one(http: httpx.AsyncClient, i: int):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"add {i} + {i}"}],
                    "max_tokens": 8 + i % 8, "temperature": 0.8, "seed": i, "ignore_eos": True}
            if i % 4:
                r = await http.post(url + "/v1/chat/completions", json=body)
                if r.status_code == 200:
                    assert r.json()["usage"]["completion_tokens"] >= 1
                else:
                    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_exceeded"
                return r.status_code
            async with http.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True,
                                                                               "max_tokens": 200}) as r:
                if r.status_code != 200:
                    return r.status_code
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        break  # hang up after the first chunk
                return "disconnected"

        async def main():
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                return await asyncio.gather(*(one(http, i) for i in range(200)))

        results = asyncio.run(main())
        assert results.count(200) >= 20 and results.count("disconnected") >= 5 and 429 in results
        assert set(results) <= {200, 429, "disconnected"}
        deadline = time.time() + 30
        while engine.has_unfinished() or engine.requests:
            assert time.time() < deadline, "aborted requests still hold the cache"
            time.sleep(0.05)
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "the", "max_tokens": 3}).is_success


def test_reasoning_content_split(tmp_path):
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    engine = load_engine(build_checkpoint(tmp_path, template), max_batch_size=4, speculative_tokens=0)
    with running_server(create_app(engine, MODEL)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, temperature=0)
        solo = Engine(engine.model, engine.tokenizer)  # the served engine belongs to the server's thread
        raw = solo.generate([engine.tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)],
                            engine_params(10))[0].samples[0].text
        expect_reasoning, expect_content = split_reasoning(raw, thinking=True)
        assert r.choices[0].message.reasoning_content == expect_reasoning
        assert r.choices[0].message.content == expect_content
        chunks = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, temperature=0, stream=True)
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == raw


def test_reasoning_parser_handles_split_tags():
    assert split_reasoning("<think>\nplan\n</think>\n\nanswer") == ("plan", "answer")
    assert split_reasoning("no tags here") == (None, "no tags here")
    assert split_reasoning("still thinking", thinking=True) == ("still thinking", "")
    parser, got = ReasoningParser(), ([], [])
    for piece in ["<th", "ink>ab", "c</thi", "nk>", "ans<", "wer"]:
        r, c = parser.feed(piece)
        got[0].append(r)
        got[1].append(c)
    r, c = parser.feed("", final=True)
    assert "".join(got[0]) + r == "abc" and "".join(got[1]) + c == "ans<wer"


def test_mimo_serve_cli(checkpoint):
    """`mimo serve CHECKPOINT` as a user runs it: a real process on a free loopback port."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mimo", "serve", str(checkpoint), "--port", str(port),
                             "--host", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "mimo serve did not come up"
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        name = checkpoint.name
        r = client.chat.completions.create(model=name, messages=HELLO, max_tokens=5, **NO_EOS)
        assert r.usage.completion_tokens == 5
    finally:
        proc.terminate()
        proc.wait(30)
