"""Rule-based, verifiable rewards (MiMo uses no others): math through Math-Verify, code through unit tests
run in a process sandbox. Every reward returns a RewardResult and never raises for what a model wrote."""

from mimo.rewards.code_reward import CodeTests, TestLevels, code_reward, extract_code
from mimo.rewards.math_reward import MathRewardPool, audit_math, extract_answer, math_reward
from mimo.rewards.result import RewardResult
from mimo.rewards.sandbox import SandboxLimits, SandboxPool, SandboxResult, run_python

__all__ = ["CodeTests", "MathRewardPool", "RewardResult", "SandboxLimits", "SandboxPool", "SandboxResult",
           "TestLevels", "audit_math", "code_reward", "extract_answer", "extract_code", "math_reward", "run_python"]
