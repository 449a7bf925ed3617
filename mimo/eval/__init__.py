"""Evaluation harness: benchmark readers, generators (OpenAI-compatible endpoint or local checkpoint),
grading through mimo.rewards, and pass@k metrics. Entry point: `mimo eval` (mimo.eval.harness)."""
