"""GRPO pieces on hand-built batches: advantages, clip-higher, token-level averaging, dynamic sampling,
overlong shaping and the easy pool."""

import json
import random

import pytest
import torch

from mimo.rl.grpo import group_advantages, is_informative, overlong_reward, policy_loss, token_logprobs_and_entropy
from mimo.rl.problems import ProblemSampler, RLProblem


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(rewards)
    std0 = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased: sqrt(1/3)
    torch.testing.assert_close(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std0 + 1e-6))
    assert adv[1, 3] < 0 < adv[1, 0] and torch.allclose(adv[1, :3], adv[1, :1].expand(3))
    assert torch.equal(adv[2], torch.zeros(4))  # an uninformative group gives no signal
    torch.testing.assert_close(adv.sum(1), torch.zeros(3), atol=1e-5, rtol=0)


def test_dynamic_sampling_filter():
    assert is_informative([0, 1, 0, 0]) and is_informative([0.25, 0.5])
    assert not is_informative([1, 1, 1]) and not is_informative([0, 0]) and not is_informative([0.3, 0.3])


def test_clip_higher_is_asymmetric():
    old = torch.zeros(1, 4)
    # ratios 0.5, 0.9, 1.2, 1.5 against advantage +1 and -1.
    new = torch.log(torch.tensor([[0.5, 0.9, 1.2, 1.5]]))
    mask = torch.ones(1, 4)
    pos, s_pos = policy_loss(new, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.28)
    # A>0: min(r, clip(r)) = [0.5, 0.9, 1.2, 1.28]
    torch.testing.assert_close(pos, -torch.tensor([0.5, 0.9, 1.2, 1.28]).mean())
    assert s_pos.clip_high_fraction == 0.25 and s_pos.clip_low_fraction == 0.0
    neg, s_neg = policy_loss(new, old, torch.tensor([-1.0]), mask, eps_low=0.2, eps_high=0.28)
    # A<0: min(-r, -clip(r)) = -max(r, clip(r)) = -[0.8, 0.9, 1.2, 1.5]
    torch.testing.assert_close(neg, torch.tensor([0.8, 0.9, 1.2, 1.5]).mean())
    assert s_neg.clip_low_fraction == 0.25 and s_neg.clip_high_fraction == 0.0


def test_gradient_vanishes_only_where_clipped():
    new = torch.log(torch.tensor([[0.5, 1.0, 1.5]])).requires_grad_()
    loss, _ = policy_loss(new, torch.zeros(1, 3), torch.tensor([1.0]), torch.ones(1, 3))
    loss.backward()
    # d/dlogp of -ratio*A/3 = -ratio/3 where unclipped; 0 at ratio 1.5 > 1.28.
    torch.testing.assert_close(new.grad, torch.tensor([[-0.5 / 3, -1.0 / 3, 0.0]]))


def test_token_level_averaging_weights_long_responses_by_length():
    # A 1-token response with advantage +1 and a 3-token one with advantage -1, ratio 1 everywhere.
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    loss, _ = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask)
    torch.testing.assert_close(loss, torch.tensor((-1.0 + 3.0) / 4))  # token mean, not (−1 + 1)/2 = 0
    # Split into micro-batches with the mini-batch token count: the parts add up to the whole.
    a, _ = policy_loss(logp[:1], logp[:1], torch.tensor([1.0]), mask[:1], num_tokens=4)
    b, _ = policy_loss(logp[1:], logp[1:], torch.tensor([-1.0]), mask[1:], num_tokens=4)
    torch.testing.assert_close(a + b, loss)


def test_padding_never_produces_nan():
    logp = torch.tensor([[-1.0, float("-inf")]])
    old = torch.tensor([[-1.0, 0.0]])
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(loss) and stats.clip_fraction == 0.0


def test_trainer_logprobs_use_the_sampling_temperature():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    lp, ent = token_logprobs_and_entropy(logits, targets, temperature=0.7)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(lp, ref)
    assert (ent > 0).all() and (ent <= torch.log(torch.tensor(11.0)) + 1e-5).all()


def test_overlong_soft_penalty():
    assert overlong_reward(1.0, 80, max_tokens=100, cache_tokens=20) == 1.0
    assert overlong_reward(1.0, 90, max_tokens=100, cache_tokens=20) == pytest.approx(0.5)
    assert overlong_reward(0.0, 95, max_tokens=100, cache_tokens=20) == pytest.approx(-0.75)
    assert overlong_reward(0.0, 100, max_tokens=100, cache_tokens=20) == pytest.approx(-1.0)


def problems(n):
    return [RLProblem(id=f"p{i}", prompt=f"q{i}", kind="math", answer=str(i)) for i in range(n)]


def test_easy_pool_draws_with_probability_alpha():
    sampler = ProblemSampler(problems(50), alpha=0.1, seed=0)
    for i in range(10):
        sampler.update(f"p{i}", 1.0)  # solved: moves to the easy pool
    assert len(sampler.easy) == 10 and len(sampler.regular) == 40
    draws = [sampler.draw().id for _ in range(4000)]
    easy_share = sum(int(d[1:]) < 10 for d in draws) / len(draws)
    assert 0.08 < easy_share < 0.12
    sampler.update("p3", 0.5)  # failed again: back to the regular pool
    assert "p3" in sampler.regular and "p3" not in sampler.easy


def test_regular_pool_is_walked_without_repeats_per_epoch():
    sampler = ProblemSampler(problems(20), alpha=0.1, seed=1)
    first_epoch = [sampler.draw().id for _ in range(20)]
    assert sorted(first_epoch) == sorted(f"p{i}" for i in range(20))


def test_sampler_state_resumes_exactly():
    a = ProblemSampler(problems(30), alpha=0.3, seed=2)
    for i in range(25):
        a.update(a.draw().id, random.Random(i).choice([0.0, 1.0]))
    state = json.loads(json.dumps(a.state_dict()))  # as saved to disk
    b = ProblemSampler(problems(30), alpha=0.3, seed=99)
    b.load_state_dict(state)
    assert [a.draw().id for _ in range(50)] == [b.draw().id for _ in range(50)]


def test_sampler_rejects_bad_problem_sets():
    with pytest.raises(ValueError, match="empty"):
        ProblemSampler([])
    with pytest.raises(ValueError, match="unique"):
        ProblemSampler(problems(2) + problems(1))
