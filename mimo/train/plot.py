"""`mimo plot RUN_DIR [RUN_DIR ...]`: PNG curves from the runs' metrics.jsonl.

One figure with a panel per metric (next-token loss, MTP loss, learning rate, tokens/s, and any
"eval" metrics such as held-out accuracy); several runs are overlaid for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimo.train.metrics import read_metrics

PANELS = (("train", "main_loss", "next-token loss"), ("train", "mtp_loss", "MTP loss"),
          ("train", "lr", "learning rate"), ("train", "tokens_per_s", "tokens/s"))


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    runs = {Path(d): read_metrics(d) for d in run_dirs}
    eval_keys = sorted({k for records in runs.values() for r in records if r.get("kind") == "eval"
                        for k, v in r.items() if k not in ("step", "kind") and isinstance(v, (int, float))})
    panels = [p for p in PANELS if any(p[1] in r for records in runs.values() for r in records)]
    panels += [("eval", k, k) for k in eval_keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (kind, key, title) in zip(axes[0], panels):
        for run, records in runs.items():
            points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and key in r]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if kind == "eval" else None, label=run.name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot(run_dirs: list[Path] = typer.Argument(..., help="one or more run folders with metrics.jsonl"),
         out: Optional[Path] = typer.Option(None, help="PNG path (default: RUN_DIR/curves.png of the first run)")) -> None:
    """Write PNG training curves (loss, MTP loss, LR, tokens/s, eval metrics) for one or more runs."""
    try:
        path = plot_runs(run_dirs, out or Path(run_dirs[0]) / "curves.png")
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")
