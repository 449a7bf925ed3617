"""`mimo pretrain RECIPE.yaml [key=value ...]`: pretraining with next-token + MTP loss, in stages.

See recipes/pretrain-tiny.yaml for a commented recipe and mimo/train/loop.py for the loop itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimo.data.corpus import DataError
from mimo.recipe import RecipeError, load_recipe
from mimo.train.loop import TrainRecipe, train


def run_recipe(recipe_path: Path | None, overrides: list[str] | None, mode: str) -> Path:
    """Load, validate and run a recipe, turning recipe and data mistakes into a one-line error."""
    try:
        recipe = load_recipe(TrainRecipe, recipe_path, overrides)
        return train(recipe, mode=mode)
    except (RecipeError, DataError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def pretrain(recipe: Path = typer.Argument(..., help="YAML recipe (see recipes/)"),
             overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. optim.lr=1e-3")) -> None:
    """Pretrain a MiMo model: next-token + MTP loss, staged data mixtures, exact resume from RUN_DIR.

    Run it again with the same run_dir to resume after an interruption; under torchrun it trains with
    DDP (or FSDP2 on GPU with train.fsdp=true)."""
    run_recipe(recipe, overrides, "pretrain")
