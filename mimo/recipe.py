"""Recipes: dataclasses filled from a YAML file plus dotted `key=value` command-line overrides.

    recipe = load_recipe(PretrainRecipe, "recipes/pretrain-tiny.yaml", ["optim.lr=1e-3", "stages.0.steps=50"])

Every key is checked against the dataclass fields before anything runs: a misspelt key is an error that
names it, its place in the recipe and the keys that do exist, instead of a setting silently ignored.
Override values are parsed as YAML scalars (`3`, `1e-3`, `true`, `null`, `[a, b]`), so they take the
same types they would in the file. Nested dataclasses, lists of dataclasses (indexed `stages.0.steps`)
and dicts of dataclasses (`sources.math.path`) are supported; that is all the training recipes need.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe that cannot be used as written; the message names the file and the key."""


def load_recipe(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file (optional) with `key=value` overrides applied on top."""
    raw: dict[str, Any] = {}
    source = f"{path or 'recipe defaults'}" + (" + overrides" if overrides else "")
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RecipeError(f"cannot read recipe {path}: {e}") from e
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form key=value")
        _set_dotted(raw, key.strip().split("."), yaml.safe_load(value) if value.strip() else None)
    return build(cls, raw, where=source)


def build(cls: type[T], data: Any, where: str) -> T:
    """Recursively turn plain YAML data into the dataclass `cls`, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} in {cls.__name__}; known keys: {', '.join(sorted(fields))}")
    kwargs = {name: _convert(hints[name], value, f"{where}: {name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {e}") from e


def to_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as plain data (what gets written to the run folder as recipe.yaml)."""
    return dataclasses.asdict(recipe)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        if isinstance(value, dict):  # produced by an override such as stages.0.steps on an absent list
            value = [value[k] for k in sorted(value)]
        return [build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return {k: build(args[1], v, f"{where}.{k}") for k, v in (value or {}).items()}
    if hint is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        try:  # PyYAML reads 1e-3 (no dot) as a string; accept it as the float it means
            return float(value)
        except ValueError:
            raise RecipeError(f"{where}: expected float, got {value!r}") from None
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise RecipeError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _set_dotted(node: Any, keys: list[str], value: Any) -> None:
    key, rest = keys[0], keys[1:]
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            raise RecipeError(f"override index {key!r} is out of range (the list has {len(node)} items)")
        if rest:
            _set_dotted(node[int(key)], rest, value)
        else:
            node[int(key)] = value
        return
    if rest:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        _set_dotted(child, rest, value)
    else:
        node[key] = value
