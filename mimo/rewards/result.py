"""The value every reward returns."""

from dataclasses import dataclass


@dataclass
class RewardResult:
    """score in [0, 1]; reason says why (e.g. "correct", "mismatch", "no_answer", "timeout"); extracted is the
    answer or code the reward judged, None when nothing could be extracted."""

    score: float
    reason: str
    extracted: str | None = None
