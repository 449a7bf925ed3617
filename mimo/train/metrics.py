"""Seeing progress: metrics to RUN_DIR/metrics.jsonl (plus TensorBoard / W&B when installed) and a
progress bar with loss, MTP loss, tokens/s, learning rate and ETA. Only rank 0 writes or draws.

metrics.jsonl has one JSON object per line, each with a "step" and a "kind" ("train", "eval", ...), so
`mimo plot` and other stages (RL) share the same file format. On resume, lines from steps after the
checkpoint (written by the interrupted run) are dropped, so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class MetricsLogger:
    def __init__(self, run_dir: str | Path, enabled: bool = True, resume_step: int | None = None,
                 backends: tuple[str, ...] = ("tensorboard", "wandb")):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if "tensorboard" in backends:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                pass
        if "wandb" in backends and os.environ.get("WANDB_API_KEY"):
            try:
                import wandb
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "mimo"), dir=str(run_dir),
                                         name=Path(run_dir).name, resume="allow")
            except ImportError:
                pass

    def log(self, step: int, kind: str = "train", **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a mimo run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TRAIN_FIELDS = ("loss {task.fields[loss]:.4f}  mtp {task.fields[mtp]:.4f}  {task.fields[tps]:,.0f} tok/s  "
                "lr {task.fields[lr]:.2e}")


def progress_bar(enabled: bool, fields: str = TRAIN_FIELDS) -> Progress:
    """A rich progress bar with ETA; `fields` formats the task's fields (by default loss, mtp, tps, lr)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(fields),
                    TimeRemainingColumn(), disable=not enabled, transient=False)
