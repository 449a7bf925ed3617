"""`mimo plot RUN_DIR [RUN_DIR ...]`: PNG curves from the runs' metrics.jsonl.

One figure with a panel per metric the runs logged: pretraining/SFT (next-token loss, MTP loss, learning
rate, tokens/s), RL (reward, pass rate, response length, entropy, clip fraction, seconds per step) and
"eval" records (held-out accuracy per tier shares one panel); several runs are overlaid for comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from mimo.train.metrics import read_metrics

PANELS = (("train", "main_loss", "next-token loss"), ("train", "mtp_loss", "MTP loss"),
          ("train", "lr", "learning rate"), ("train", "tokens_per_s", "tokens/s"),
          ("rl", "reward", "RL reward"), ("rl", "pass_rate", "RL pass rate"),
          ("rl", "response_length", "response length (tokens)"), ("rl", "entropy", "policy entropy"),
          ("rl", "clip_fraction", "clip fraction"), ("rl", "step_s", "seconds per RL step"))
ACCURACY = "accuracy/"  # eval keys with this prefix (one per tier) share the held-out accuracy panel


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    runs = {Path(d): read_metrics(d) for d in run_dirs}
    logged = {(r.get("kind"), k) for records in runs.values() for r in records for k, v in r.items()
              if k not in ("step", "kind") and isinstance(v, (int, float))}
    panels = [(kind, [key], title) for kind, key, title in PANELS if (kind, key) in logged]
    accuracy = sorted(k for kind, k in logged if kind == "eval" and k.startswith(ACCURACY))
    if accuracy:
        panels.append(("eval", accuracy, "held-out accuracy"))
    panels += [("eval", [k], k) for kind, k in sorted(logged) if kind == "eval" and not k.startswith(ACCURACY)]
    if not panels:
        raise FileNotFoundError(f"no metrics to plot in {', '.join(map(str, run_dirs))}")
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (kind, keys, title) in zip(axes.flat, panels):
        for run, records in runs.items():
            for key in keys:
                points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and key in r]
                if points:
                    steps, values = zip(*points)
                    label = run.name if len(keys) == 1 else f"{run.name} {key.removeprefix(ACCURACY)}"
                    ax.plot(steps, values, marker="o" if kind == "eval" else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        if keys[0].endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(keys) > 1 or len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot(run_dirs: list[Path] = typer.Argument(..., help="one or more run folders with metrics.jsonl"),
         out: Optional[Path] = typer.Option(None, help="PNG path (default: RUN_DIR/curves.png of the first run)")) -> None:
    """Write PNG curves (losses, LR, tokens/s; RL reward, pass rate, length, entropy; held-out accuracy)."""
    try:
        path = plot_runs(run_dirs, out or Path(run_dirs[0]) / "curves.png")
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")
