"""Metrics over k samples per problem: pass@1 as avg@k, unbiased pass@k, and a 95% confidence interval."""

import math
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


@dataclass
class Summary:
    """pass@1 is avg@k (mean over problems of the fraction of correct samples); ci95 is its normal-approx
    95% interval across problems (problems are the unit of sampling, as AIME's 30 show); pass_at has
    the unbiased pass@k for k = 1, 2, 4, ... up to the samples per problem."""

    problems: int
    samples_per_problem: int
    pass1: float
    ci95: tuple[float, float]
    pass_at: dict[int, float]


def summarize(correct: dict[str, list[bool]]) -> Summary:
    """`correct` maps each problem id to its samples' verdicts (all problems with the same count n)."""
    n = min(len(v) for v in correct.values())
    accuracies = [sum(v[:n]) / n for v in correct.values()]
    count = len(accuracies)
    mean = sum(accuracies) / count
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (count - 1)) if count > 1 else 0.0
    half = 1.96 * std / math.sqrt(count)
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    pass_at = {k: sum(pass_at_k(n, sum(v[:n]), k) for v in correct.values()) / count for k in ks}
    return Summary(problems=count, samples_per_problem=n, pass1=mean, ci95=(max(0.0, mean - half), min(1.0, mean + half)),
                   pass_at=pass_at)
