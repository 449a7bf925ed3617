"""RL's scale path: rollouts on a live OpenAI-compatible server (`mimo serve` on loopback), with the
trainer's weights synced to it through /update_weights_from_disk after every step."""

import json

import httpx
import pytest
import torch
from conftest import running_server

from mimo.config import MiMoConfig
from mimo.data.reasoning import make_problem
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
from mimo.rewards.result import RewardResult
from mimo.rl.train import RLRecipe, train_rl
from mimo.serve.server import create_app, load_engine
from mimo.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    tok = train_tokenizer([make_problem("arithmetic", 1, "train", 0, i).text() for i in range(300)], vocab_size=300)
    torch.manual_seed(0)
    MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=len(tok), num_hidden_layers=2,
                                           eos_token_id=tok.eos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def length_parity(problem, text, finish_reason):
    return RewardResult(float(len(text) % 2 == 0), "parity")


def test_rl_with_remote_rollouts_and_weight_sync(checkpoint, tmp_path):
    engine = load_engine(checkpoint, max_batch_size=16, speculative_tokens=0)
    with running_server(create_app(engine, "policy")) as url:
        r = RLRecipe(model=str(checkpoint), run_dir=str(tmp_path / "run"), steps=2)
        r.problems.count = 50
        r.rollout.backend, r.rollout.base_url = "remote", url + "/v1"
        r.rollout.group_size, r.rollout.batch_groups, r.rollout.max_tokens = 4, 2, 10
        r.grpo.old_logprobs, r.grpo.overlong, r.grpo.micro_batch = "recompute", "none", 4
        r.optim.lr, r.train.threads, r.eval.per_tier = 1e-3, 1, 0
        final = train_rl(r, reward_fn=length_parity)

        # The server now generates with the trained weights: its greedy output equals a local engine's.
        trained = MiMoForCausalLM.from_pretrained(final)
        assert not torch.equal(trained.lm_head.weight, MiMoForCausalLM.from_pretrained(checkpoint).lm_head.weight)
        prompt = [5, 6, 7, 8]
        local = Engine(trained, max_batch_size=2).generate([prompt], SamplingParams(max_tokens=12, temperature=0,
                                                                                      ignore_eos=True))
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0,
                                                           "ignore_eos": True, "logprobs": 0,
                                                           "return_tokens_as_token_ids": True}).json()
        remote_ids = [int(t.removeprefix("token_id:")) for t in reply["choices"][0]["logprobs"]["tokens"]]
        assert remote_ids == local[0].samples[0].token_ids

        # A bad sync is refused with a clear error, and the served weights stay as they were.
        bad = httpx.post(f"{url}/update_weights_from_disk", json={"model_path": str(tmp_path / "nowhere")})
        assert bad.status_code == 400 and "cannot load weights" in bad.json()["error"]["message"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]


def test_remote_backend_requires_recomputed_logprobs(checkpoint, tmp_path):
    from mimo.recipe import RecipeError
    r = RLRecipe(model=str(checkpoint), run_dir=str(tmp_path / "x"))
    r.rollout.backend, r.rollout.base_url = "remote", "http://127.0.0.1:9/v1"
    with pytest.raises(RecipeError, match="old_logprobs=recompute"):
        train_rl(r)
