"""Training checkpoints: a Hugging Face model folder plus everything needed to resume exactly.

    RUN_DIR/checkpoints/step_00000200/
        config.json, model.safetensors            the model, loadable by every mimo command
        tokenizer.json, tokenizer_config.json     its tokenizer
        training_state.pt                         optimizer, step, data position, RNG states, recipe

The folder is written into a hidden temporary directory and renamed into place only when complete
(`mimo.checkpoint.atomic_directory`), so a crash or `kill -9` mid-write leaves at most a hidden
`.step_...tmp-*` folder that `latest_checkpoint` never considers. A checkpoint counts as complete only
if its folder has the visible name *and* holds training_state.pt.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimo.checkpoint import atomic_directory, save_model
from mimo.model import MiMoForCausalLM

STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(path: Path, model: MiMoForCausalLM, tokenizer, state: dict[str, Any]) -> None:
    """Atomically write model + tokenizer + training state (`state`, saved with torch.save) to `path`."""
    with atomic_directory(path) as tmp:
        torch.save(state, tmp / STATE_FILE)
        tokenizer.save_pretrained(tmp)
        save_model(model, tmp)  # itself atomic; keeps the files written above


def save_final_model(path: Path, model: MiMoForCausalLM, tokenizer) -> None:
    with atomic_directory(path) as tmp:
        tokenizer.save_pretrained(tmp)
        save_model(model, tmp)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None. Hidden (in-progress) folders never count."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    complete = [p for p in folder.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return max(complete, key=lambda p: p.name, default=None)


def load_training_state(path: Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy RNG state and plain python objects we wrote ourselves.
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (keep <= 0 keeps everything)."""
    folder = Path(run_dir) / "checkpoints"
    if keep <= 0 or not folder.is_dir():
        return
    steps = sorted(p for p in folder.iterdir() if _STEP_DIR.match(p.name))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
