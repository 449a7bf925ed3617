"""MiMo's GRPO variant (mimo-spec.md section 4.4), as small pure functions over tensors.

- Advantages are normalised within each group of G responses to one prompt: A = (r - mean) / std, the
  same for every token of a response. (std is the unbiased sample std, as verl and DAPO compute it.)
- The loss is the clipped surrogate with **clip-higher**: the ratio is clipped to [1 - eps_low,
  1 + eps_high] with eps_high > eps_low, so low-probability tokens with positive advantage can still
  grow (DAPO's defaults 0.2 / 0.28; MiMo does not publish its values).
- **Token-level** averaging: the surrogate is summed over every response token of the (mini-)batch and
  divided by the number of those tokens, so long responses weigh in proportion to their length instead
  of being averaged per sequence first.
- **No KL term** and no entropy bonus.
- **Dynamic sampling**: a group whose rewards are all equal (pass rate exactly 0 or 1 for binary rewards)
  has zero advantage everywhere and would contribute no gradient, so it is dropped and replaced.
- **Overlong responses** (cut by max_tokens) are masked out of the loss, or penalised softly as in DAPO,
  or kept as is (`overlong` = "mask" | "soft" | "none").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rewards [num_groups, G] -> advantages [num_groups, G], normalised within each group."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def is_informative(rewards: list[float]) -> bool:
    """Dynamic sampling's filter: a group teaches something only if its rewards differ."""
    return max(rewards) > min(rewards)


def overlong_reward(reward: float, length: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO's soft overlong punishment: a penalty that grows linearly from 0 to -1 over the last
    `cache_tokens` of the budget, added to the reward."""
    limit = max_tokens - cache_tokens
    if length <= limit:
        return reward
    return reward + max(-1.0, (limit - length) / cache_tokens)


@dataclass
class LossStats:
    loss: float
    clip_fraction: float  # share of tokens where the clipped branch was taken
    clip_low_fraction: float  # ... of those, ratio below 1 - eps_low with negative advantage
    clip_high_fraction: float  # ... ratio above 1 + eps_high with positive advantage
    approx_kl: float  # mean (ratio - 1) - log ratio: how far the policy moved from the rollout policy
    ratio_max: float


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.28,
                num_tokens: int | float | None = None) -> tuple[torch.Tensor, LossStats]:
    """Clipped surrogate, token-level: sum over masked tokens / num_tokens.

    logprobs, old_logprobs, mask: [B, T] (mask 1 on response tokens that count); advantages: [B] or [B, T].
    `num_tokens` is the token count of the whole mini-batch when it is split into micro-batches (or
    across ranks): each micro-batch's loss then adds up to the mini-batch's token mean exactly.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    # Zero on padding (whatever logprobs hold there, -inf included) so exp() stays finite.
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))
    mask = mask.to(logprobs.dtype)
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    denominator = float(num_tokens) if num_tokens is not None else mask.sum().clamp(min=1.0)
    loss = (per_token * mask).sum() / denominator

    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        low = ((ratio < 1.0 - eps_low) & (advantages < 0)).to(mask.dtype) * mask
        high = ((ratio > 1.0 + eps_high) & (advantages > 0)).to(mask.dtype) * mask
        stats = LossStats(
            loss=float(loss),
            clip_fraction=float((low + high).sum() / n),
            clip_low_fraction=float(low.sum() / n),
            clip_high_fraction=float(high.sum() / n),
            approx_kl=float((((ratio - 1) - log_ratio) * mask).sum() / n),
            ratio_max=float((ratio * mask).max()) if mask.any() else 1.0,
        )
    return loss, stats


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor,
                               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `targets` [B, T] under softmax(logits / temperature) [B, T, V], and the entropy of
    that distribution at each position. Dividing by the rollout temperature makes the trainer score the
    distribution the engine actually sampled from."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    chosen = logp.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy
