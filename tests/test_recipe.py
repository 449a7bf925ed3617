"""Recipes: YAML + dotted overrides into dataclasses, and unknown keys rejected with their place."""

import pytest

from mimo.recipe import RecipeError, load_recipe
from mimo.train.loop import TrainRecipe


def test_yaml_and_overrides_are_typed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("run_dir: runs/x\nstages:\n  - {steps: 5, seq_len: 64}\n  - {steps: 7, seq_len: 128}\n"
                    "optim: {lr: 1e-3}\n")
    recipe = load_recipe(TrainRecipe, path, ["stages.1.steps=9", "optim.lr=2e-3", "train.compile=true",
                                             "sources.mine.kind=text", "sources.mine.path=c.txt"])
    assert recipe.run_dir == "runs/x"
    assert [s.steps for s in recipe.stages] == [5, 9] and recipe.total_steps == 14
    assert recipe.optim.lr == 2e-3 and isinstance(recipe.optim.lr, float)  # "1e-3" is a str to PyYAML
    assert recipe.train.compile is True
    assert recipe.sources["mine"].path == "c.txt" and recipe.sources["mine"].kind == "text"


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key 'lrr' in OptimArgs"),
    ("stages.0.seqlen=4", "unknown key 'seqlen' in StageArgs"),
    ("bogus=1", "unknown key 'bogus' in TrainRecipe"),
    ("train.micro_batch=many", "expected int"),
    ("stages.3.steps=1", "out of range"),
    ("no_equals_sign", "key=value"),
])
def test_bad_keys_and_values_are_named(tmp_path, override, message):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - {steps: 5}\n")
    with pytest.raises(RecipeError, match=message):
        load_recipe(TrainRecipe, path, [override])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(RecipeError, match=r"r\.yaml.*unknown key 'learning_rate'.*known keys: beta1"):
        load_recipe(TrainRecipe, path)


def test_shipped_training_recipes_load_and_validate():
    from pathlib import Path

    from mimo.train.loop import validate

    root = Path(__file__).resolve().parents[1] / "recipes"
    recipes = sorted(root.glob("pretrain*.yaml"))
    assert recipes
    for path in recipes:
        validate(load_recipe(TrainRecipe, path), "pretrain")
    sft = load_recipe(TrainRecipe, root / "sft-tiny.yaml")
    assert sft.model.init_from and sft.sources["chats"].kind == "reasoning_chat"
