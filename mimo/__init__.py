"""mimo: an open implementation of Xiaomi's MiMo reasoning-LLM system.

Data flows through the package in this order:
data -> tokenizer -> model -> train (pretrain, sft, rl) -> engine -> serve -> eval -> export.
"""

__version__ = "0.1.0"
