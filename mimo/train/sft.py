"""`mimo sft RECIPE.yaml [key=value ...]`: supervised fine-tuning on chats.

The loss covers only the assistant's tokens (its reasoning, answer and closing <|im_end|>); the MTP
layers keep training alongside the trunk, as MiMo does in SFT. Conversations are packed without being
cut (a conversation longer than seq_len is an error). The loop is mimo/train/loop.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimo.train.pretrain import run_recipe


def sft(recipe: Path = typer.Argument(..., help="YAML recipe (see recipes/sft-tiny.yaml)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. model.init_from=runs/x/model")) -> None:
    """Supervised fine-tuning from model.init_from on chat JSONL or the built-in reasoning chats."""
    run_recipe(recipe, overrides, "sft")
