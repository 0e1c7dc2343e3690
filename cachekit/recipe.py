"""Recipes: YAML files that name a method and its settings, and say where the numbers come from.

Schema (every key checked; unknown keys are an error naming the key)::

    name: wan                          # optional, defaults to the file name
    models: [WanTransformer3DModel]    # model class names this recipe is picked for by apply(pipe)
    method: easycache                  # a registered method name
    settings: {threshold: 0.05, warmup: 10}
    source: "where the settings come from: a published figure, or the command that measured them"
    measured: {...}                    # optional free-form results (written by tuning tools)
    notes: "..."                       # optional

Packaged recipes live in the top-level ``recipes/`` folder, installed as ``cachekit.recipes``.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import CacheConfig, ConfigError, config_classes
from .errors import RecipeError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = ["Recipe", "RecipeError", "load_recipe", "save_recipe", "packaged_recipes", "recipe_for_model"]

_KEYS = {"name", "models", "method", "settings", "source", "measured", "notes"}
DEFAULT_RECIPE = "default"


@dataclass(frozen=True)
class Recipe:
    """A loaded recipe: the config it names and where its numbers come from.

    Attributes:
        name: the recipe's name (the file name without ``.yaml`` unless the file gives one).
        config: the method's config, built from ``method`` and ``settings`` and checked.
        models: model class names ``cachekit.apply(pipe)`` picks this recipe for.
        source: where the settings come from: a published figure, or the command that measured them.
        measured: free-form results (tuning and calibration tools write them).
        notes: anything else the file says.
        path: the file it was read from.

    Example:
        >>> import cachekit
        >>> recipe = cachekit.load_recipe("fast")
        >>> recipe.name, recipe.config.method, recipe.config.interval
        ('fast', 'fixed_interval', 4)
        >>> recipe.source
        'Calibration-free preset "fast", chosen by ...'
    """

    name: str
    config: CacheConfig
    models: tuple[str, ...] = ()
    source: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    path: str = ""


def _recipe_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("cachekit.recipes")))
    except ModuleNotFoundError:  # running from a source tree that was not installed
        return Path(__file__).resolve().parent.parent / "recipes"


def packaged_recipes() -> dict[str, Path]:
    """Recipe name -> path, for the recipes shipped with cachekit.

    Example:
        >>> import cachekit
        >>> "wan" in cachekit.packaged_recipes()
        True
    """
    return {p.stem: p for p in sorted(_recipe_dir().glob("*.yaml"))}


def parse_recipe(data: Any, where: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    methods = config_classes()
    method = data.get("method")
    if method not in methods:
        raise RecipeError(f"{where}: method must be one of {', '.join(sorted(methods))}, got {method!r}")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise RecipeError(f"{where}: settings must be a mapping, got {type(settings).__name__}")
    models = data.get("models") or []
    if isinstance(models, str) or not all(isinstance(m, str) for m in models):
        raise RecipeError(f"{where}: models must be a list of class names, got {models!r}")
    for key in ("source", "notes", "name"):
        if key in data and not isinstance(data[key], str):
            raise RecipeError(f"{where}: {key} must be a string, got {type(data[key]).__name__}")
    measured = data.get("measured") or {}
    if not isinstance(measured, dict):
        raise RecipeError(f"{where}: measured must be a mapping, got {type(measured).__name__}")
    try:
        config = methods[method].from_settings(settings)
    except ConfigError as e:
        raise RecipeError(f"{where}: settings: {e}") from None
    except TypeError as e:  # dataclass construction with odd keys
        raise RecipeError(f"{where}: settings: {e}") from None
    return Recipe(name=data.get("name") or Path(where).stem, config=config, models=tuple(models),
                  source=data.get("source", ""), measured=measured, notes=data.get("notes", ""),
                  path=where)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A packaged recipe by name (``"wan"``) or a YAML file by path.

    Args:
        name_or_path: a name from ``packaged_recipes()``, or a path to a recipe YAML.

    Example:
        >>> import cachekit
        >>> cachekit.load_recipe("fast").config.interval
        4
    """
    text_path = Path(name_or_path)
    packaged = packaged_recipes()
    if str(name_or_path) in packaged:
        text_path = packaged[str(name_or_path)]
    elif text_path.suffix.lower() not in (".yaml", ".yml") and not text_path.exists():
        raise RecipeError(f"unknown recipe {str(name_or_path)!r}; packaged: {', '.join(packaged)}; "
                          f"or give a path to a .yaml file")
    try:
        data = yaml.safe_load(text_path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{text_path}: no such recipe file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{text_path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_recipe(data, str(text_path))


def save_recipe(config: CacheConfig, path: str | Path, *, models: tuple[str, ...] = (), source: str = "",
                measured: dict | None = None, notes: str = "", name: str | None = None) -> Path:
    """Write ``config`` as a recipe YAML that ``load_recipe`` reads back to an equal config.

    Args:
        config: the config to write (its method and settings).
        path: the YAML file to write; returned.
        models: model class names ``cachekit.apply(pipe)`` picks the recipe for.
        source: where the settings come from (a published figure, or the command that measured them).
        measured: free-form results, kept under ``measured``.
        notes: anything else worth keeping.
        name: the recipe's name (default: the file name without ``.yaml``).

    Nothing is written when the recipe could not be read back (``RecipeError``).

    Example:
        >>> import tempfile, cachekit
        >>> config = cachekit.FixedIntervalConfig(interval=3)
        >>> path = cachekit.save_recipe(config, tempfile.mkdtemp() + "/every3.yaml", models=("MyTransformer",),
        ...                             source="hand-written")
        >>> recipe = cachekit.load_recipe(path)
        >>> recipe.name, recipe.models, recipe.config == config
        ('every3', ('MyTransformer',), True)
    """
    path = Path(path)
    data: dict[str, Any] = {"name": name or path.stem, "models": list(models), **config.to_dict(),
                            "source": source}
    if measured:
        data["measured"] = measured
    if notes:
        data["notes"] = notes
    parse_recipe(data, str(path))  # refuse to write what could not be read back
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def recipe_for_model(model_class_name: str) -> Recipe:
    """The packaged recipe listing this model class, else the safe default recipe."""
    for name, path in packaged_recipes().items():
        if name == DEFAULT_RECIPE:
            continue
        recipe = load_recipe(path)
        if model_class_name in recipe.models:
            return recipe
    return load_recipe(DEFAULT_RECIPE)
