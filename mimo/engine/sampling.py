"""Sampling parameters, logits processing, and the per-request random streams.

Processing is vectorised over rows that each carry their own parameters: temperature, then top-k,
top-p and min-p, each a mask of -inf on the scaled logits. The log-softmax of the result is the
"sampling distribution actually used"; a trainer that recomputes log_softmax(logits / T) gets the
same numbers when top-k/top-p/min-p are off.

Sampling uses the exponential-race trick (argmax of p / E with E ~ Exp(1), as vLLM does), which draws
exactly from p and lets every seeded request own a `torch.Generator`, so a seed reproduces its
output whatever else runs in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None  # sample j of a request uses seed + j
    n: int = 1
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # stop strings (need the engine's tokenizer)
    logprobs: int | None = None  # also return this many top tokens' raw log-probs per position
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.n >= 1, "n must be at least 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be between 0 and 20"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def process_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """[R, V] raw logits, one SamplingParams per row -> scaled logits with filtered tokens at -inf.

    Greedy rows are left at temperature 1 (their distribution is the argmax, handled by the caller)."""
    logits = logits.float()
    temps = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=logits.device)
    logits = logits / temps[:, None]
    top_k = [p.top_k for p in params]
    top_p = [p.top_p for p in params]
    if any(top_k) or any(p < 1 for p in top_p):
        sorted_logits, _ = logits.sort(dim=-1, descending=True)
        V = logits.shape[-1]
        k = torch.tensor([min(t, V) if t > 0 else V for t in top_k], device=logits.device)
        cutoff = sorted_logits.gather(-1, (k - 1)[:, None])  # k-th largest logit
        # top-p: keep the smallest prefix whose mass reaches p (the token that crosses p stays).
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        keep = mass_before < torch.tensor(top_p, device=logits.device)[:, None]
        last_kept = keep.sum(-1, keepdim=True) - 1
        cutoff = torch.maximum(cutoff, sorted_logits.gather(-1, last_kept))
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    min_p = torch.tensor([p.min_p for p in params], device=logits.device)
    if bool((min_p > 0).any()):
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p[:, None] * probs.max(-1, keepdim=True).values, float("-inf"))
    return logits


def exponential_noise(generators: list[torch.Generator | None], V: int, device: torch.device,
                      fallback: torch.Generator) -> torch.Tensor:
    """One row of Exp(1) noise per generator; rows without their own use the engine's stream."""
    rows = [torch.empty(V, device=device).exponential_(generator=g or fallback) for g in generators]
    return torch.stack(rows)


def sample_from(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Exponential race: argmax p / E is a draw from p."""
    return (probs / noise).argmax(-1)
