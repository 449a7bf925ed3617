"""The Seamless Rollout Engine and the naive baseline, on the real continuous-batching engine."""

import time

import pytest
import torch

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.model import MiMoForCausalLM
from mimo.rewards.result import RewardResult
from mimo.rl.problems import ProblemSampler, RLProblem
from mimo.rl.rollout import RewardWorkers, RolloutCollector

VOCAB = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=VOCAB, num_hidden_layers=2,
                                                  eos_token_id=3)).eval()


def parity_reward(problem, text, finish_reason):
    # A stand-in verifiable reward with a ~50% pass rate on random text: the parity of its length.
    return RewardResult(float(len(text) % 2 == 0), "parity")


def collector(model, reward_fn=parity_reward, n=40, workers=2, deadline_s=30.0, max_batch_size=16):
    problems = [RLProblem(id=f"p{i}", prompt="", kind="math", answer="0") for i in range(n)]
    engine = Engine(model, max_batch_size=max_batch_size, seed=0)
    sampler = ProblemSampler(problems, alpha=0.1, seed=0)
    rewards = RewardWorkers(reward_fn, workers=workers, deadline_s=deadline_s)
    encode = lambda p: [5 + int(p.id[1:]) % 50, 7, 9]  # noqa: E731 - a distinct prompt per problem
    decode = lambda ids: "x" * len(ids)  # noqa: E731
    params = SamplingParams(max_tokens=12, temperature=1.0)
    return RolloutCollector(engine, sampler, rewards, encode, decode, params, group_size=4), rewards


def test_seamless_selects_the_same_batch_as_naive(model):
    seamless, r1 = collector(model)
    naive, r2 = collector(model)
    try:
        got, s_stats = seamless.collect(3, seed=11, mode="seamless")
        want, n_stats = naive.collect(3, seed=11, mode="naive")
    finally:
        r1.close(), r2.close()
    assert len(got) == 3 and all(len(set(g.rewards)) > 1 for g in got)
    # FIFO selection + per-group seeds: the same problems, responses and rewards, whatever the timing.
    assert [g.problem.id for g in got] == [g.problem.id for g in want]
    assert [[r.token_ids for r in g.responses] for g in got] == [[r.token_ids for r in g.responses] for g in want]
    assert [g.index for g in got] == sorted(g.index for g in got)
    for stats in (s_stats, n_stats):
        assert stats.samples_used == 12 and stats.samples_generated >= 12 and stats.wall_s > 0
    # Both leave the problem sampler in the same state: later draws are rewound.
    assert seamless.sampler.state_dict()["cursor"] == naive.sampler.state_dict()["cursor"]
    # The engine is left empty: groups past the batch were aborted and their cache freed.
    assert not seamless.engine.has_unfinished() and not naive.engine.has_unfinished()


def test_a_crashing_or_hanging_reward_scores_zero_and_rollout_goes_on(model, caplog):
    calls = {"n": 0}

    def flaky(problem, text, finish_reason):
        calls["n"] += 1
        if calls["n"] % 5 == 1:
            raise RuntimeError("judge crashed")
        if calls["n"] % 5 == 2:
            time.sleep(3)  # past the deadline below
        return parity_reward(problem, text, finish_reason)

    col, rewards = collector(model, reward_fn=flaky, workers=4, deadline_s=1.0)
    try:
        groups, _ = col.collect(2, seed=3, mode="seamless")
    finally:
        rewards.close()
    assert len(groups) == 2 and all(len(set(g.rewards)) > 1 for g in groups)
    assert "judge crashed'); scoring 0" in caplog.text and "exceeded its 1s deadline; scoring 0" in caplog.text
    zeroed = [r for g in groups for r in g.responses if r.reason.startswith(("reward_error", "reward_timeout"))]
    assert all(r.reward == 0.0 for r in zeroed)


def test_no_informative_group_fails_loudly(model):
    col, rewards = collector(model, reward_fn=lambda p, t, f: RewardResult(1.0, "always"))
    col.max_groups_factor = 2
    try:
        with pytest.raises(RuntimeError, match="too few informative groups"):
            col.collect(2, seed=0, mode="seamless")
    finally:
        rewards.close()
