"""`mimo rl` end to end on a tiny model: log-prob consistency, metrics, frozen MTP, exact resume."""

import json

import pytest
import torch

from mimo.config import MiMoConfig
from mimo.data.reasoning import make_problem
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
from mimo.recipe import RecipeError
from mimo.rewards.result import RewardResult
from mimo.rl.train import RLRecipe, response_logprobs, train_rl
from mimo.tokenizer import train_tokenizer
from mimo.train.checkpointing import latest_checkpoint, load_training_state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    texts = [make_problem("arithmetic", 1, "train", 0, i).text() for i in range(300)]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=len(tok), num_hidden_layers=2,
                                                   eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_match_the_trainers(checkpoint, temperature):
    model = MiMoForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    engine = Engine(model, max_batch_size=8, seed=0)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    outs = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=temperature, n=2, ignore_eos=True))
    pairs = [(o.prompt_token_ids, s) for o in outs for s in o.samples]
    with torch.no_grad():
        lp, _, mask = response_logprobs(model, [p for p, _ in pairs], [s.token_ids for _, s in pairs],
                                        temperature, torch.device("cpu"))
    for i, (_, sample) in enumerate(pairs):
        ours = lp[i, : int(mask[i].sum())]
        torch.testing.assert_close(ours, torch.tensor(sample.logprobs), atol=2e-5, rtol=0)


def length_parity(problem, text, finish_reason):
    return RewardResult(float(len(text) % 2 == 0), "parity")


def recipe(checkpoint, run_dir, steps, mode="seamless"):
    r = RLRecipe(model=str(checkpoint), run_dir=str(run_dir), steps=steps)
    r.problems.count = 50
    r.rollout.mode, r.rollout.group_size, r.rollout.batch_groups = mode, 4, 2
    r.rollout.max_tokens, r.rollout.max_batch_size, r.rollout.reward_workers = 10, 16, 2
    r.grpo.updates_per_step, r.grpo.micro_batch = 2, 4
    r.optim.lr = 1e-3  # large enough that every step visibly moves the weights
    r.train.checkpoint_every, r.train.keep_checkpoints, r.train.threads = 2, 5, 1
    r.log_samples_every = 1
    r.eval.per_tier = 0
    return r


def test_rl_runs_logs_and_freezes_mtp(checkpoint, tmp_path):
    r = recipe(checkpoint, tmp_path / "run", 2)
    r.eval.per_tier, r.eval.max_tokens, r.problems.families, r.problems.difficulties = 3, 8, ["arithmetic"], [1, 2]
    final = train_rl(r, reward_fn=length_parity)
    every = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in every if r["kind"] == "rl"]
    assert [r["step"] for r in rows] == [1, 2]
    evals = [r for r in every if r["kind"] == "eval"]  # held-out accuracy before (step 0) and after
    assert [e["step"] for e in evals] == [0, 2] and set(evals[0]) >= {"accuracy/arithmetic-1", "accuracy/arithmetic-2"}
    report = json.loads((tmp_path / "run" / "heldout_accuracy.json").read_text())
    assert report["before"]["arithmetic-1"]["n"] == 3 and len(report["after"]["arithmetic-2"]["ci95"]) == 2
    for key in ("reward", "pass_rate", "response_length", "entropy", "clip_fraction", "dropped_group_share",
                "easy_pool", "generation_s", "reward_wait_s", "train_s", "idle_share", "wasted_sample_share"):
        assert key in rows[0], key
    assert (tmp_path / "run" / "samples.jsonl").read_text().count("\n") >= 2
    before = MiMoForCausalLM.from_pretrained(checkpoint).state_dict()
    after = MiMoForCausalLM.from_pretrained(final).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.mtp_layers."))
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("mode", ["seamless", "naive"])
def test_rl_resumes_exactly(checkpoint, tmp_path, mode):
    straight = train_rl(recipe(checkpoint, tmp_path / "a", 4, mode), reward_fn=length_parity)
    train_rl(recipe(checkpoint, tmp_path / "b", 2, mode), reward_fn=length_parity)  # "interrupted" after step 2
    resumed = train_rl(recipe(checkpoint, tmp_path / "b", 4, mode), reward_fn=length_parity)
    a = MiMoForCausalLM.from_pretrained(straight).state_dict()
    b = MiMoForCausalLM.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = lambda run: [(r["step"], r["reward"], r["loss"]) for r in  # noqa: E731
                         map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
    assert curve("a") == curve("b")
    assert load_training_state(latest_checkpoint(tmp_path / "b"))["step"] == 4
    with pytest.raises(RecipeError, match="zero steps"):
        train_rl(recipe(checkpoint, tmp_path / "b", 4, mode), reward_fn=length_parity)


TORCHRUN_RL = """
import sys
from mimo.rewards.result import RewardResult
from mimo.rl.train import RLRecipe, train_rl

def length_parity(problem, text, finish_reason):
    return RewardResult(float(len(text) % 2 == 0), "parity")

r = RLRecipe(model=sys.argv[1], run_dir=sys.argv[2], steps=int(sys.argv[3]))
r.problems.count = 50
r.rollout.group_size, r.rollout.batch_groups, r.rollout.max_tokens, r.rollout.max_batch_size = 4, 2, 10, 16
r.grpo.updates_per_step, r.grpo.micro_batch, r.grpo.overlong = 2, 2, "none"
r.optim.lr = 1e-3
r.train.threads, r.train.checkpoint_every, r.eval.per_tier = 1, 1, 0
train_rl(r, reward_fn=length_parity)
"""


def test_rl_under_torchrun_two_processes(checkpoint, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "rl_ddp.py"
    script.write_text(TORCHRUN_RL)
    torchrun = Path(sys.executable).with_name("torchrun")
    for steps in (1, 2):  # the second call resumes from the first's checkpoint
        # --standalone: a c10d rendezvous on a port torchrun picks itself, so parallel runs cannot collide.
        out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(checkpoint),
                              str(tmp_path / "run"), str(steps)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["grad_norm"] > 0 and r["entropy"] > 0 for r in rows)
    state = load_training_state(latest_checkpoint(tmp_path / "run"))
    assert len(state["sampler"]) == 2 and state["sampler"][0] != state["sampler"][1]


def test_bad_recipe_and_problem_file_are_one_line_errors(checkpoint, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n{"id": "b", "problem": \n')
    runs = {
        "rollout.grup_size=4": "grup_size",  # a misspelt key names itself
        f"problems.source=jsonl problems.path={bad}": "problems.jsonl:2: malformed JSON",
    }
    for overrides, message in runs.items():
        out = subprocess.run([sys.executable, "-m", "mimo", "rl", "recipes/rl-tiny.yaml", f"model={checkpoint}",
                              f"run_dir={tmp_path / 'run'}", *overrides.split()], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
