"""The public verbs: apply, remove, stats, reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import methods as _methods  # noqa: F401  (registers the built-in methods)
from .adapters import ModelLayout, find_model, find_units, resolve
from .config import CacheConfig, ConfigError, method_for
from .recipe import load_recipe, recipe_for_model
from .runtime.compile import compile_options
from .runtime.session import SESSION_ATTR, BlockRef, Session
from .runtime.state import CacheStats

__all__ = ["apply", "remove", "stats", "reset", "AlreadyAppliedError", "NotAppliedError", "find_model"]


class AlreadyAppliedError(RuntimeError):
    """The target (or the model inside it) already carries cachekit hooks."""


class NotAppliedError(RuntimeError):
    """The target carries no cachekit hooks."""


def _session(obj: Any) -> Session | None:
    return vars(obj).get(SESSION_ATTR) if hasattr(obj, "__dict__") else None


def _require_session(target: Any, verb: str) -> Session:
    session = _session(target)
    if session is None:
        raise NotAppliedError(f"cachekit.{verb}: {type(target).__name__} has no cachekit hooks "
                              f"(call cachekit.apply first)")
    return session


def _resolve_config(config: CacheConfig | str | Path | None, model_class: str) -> CacheConfig:
    if config is None:
        return recipe_for_model(model_class).config
    if isinstance(config, CacheConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_recipe(config).config
    raise ConfigError(f"config must be a CacheConfig, a recipe name or a recipe path, "
                      f"got {type(config).__name__}")


def apply(target: Any, config: CacheConfig | str | Path | None = None, *,
          layout: ModelLayout | None = None, compile: bool | dict = False) -> Any:
    """Install caching hooks on ``target``'s transformer blocks; returns ``target``.

    Args:
        target: a diffusers pipeline, a diffusers transformer model, or any ``nn.Module`` holding a
            list of transformer blocks.
        config: a config object (``EasyCacheConfig(...)``), a packaged recipe name (``"wan"``), a
            path to a recipe YAML, or None for the recipe registered for this model class (else
            the safe default recipe).
        layout: where the blocks are, for models cachekit does not know.
        compile: True to ``torch.compile`` each block's original forward (each sub-block unit's for
            BAC), ``fullgraph=True`` where dynamo takes it whole; the caching decisions stay eager,
            so steps and generations cause no recompiles. A dict passes ``torch.compile`` options
            (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options``). A block compiled with
            ``.compile()`` (diffusers' ``compile_repeated_blocks``) is compiled by cachekit instead
            until ``remove``. The model outside the blocks stays eager.

    Nothing is changed when this raises. Hooks live on the instances only.
    """
    compile_opts = compile_options(compile)
    model, _ = find_model(target)
    for obj in (target, model):
        if _session(obj) is not None:
            raise AlreadyAppliedError(f"cachekit.apply: {type(obj).__name__} already has cachekit hooks; "
                                      f"call cachekit.remove first")
    if getattr(model, "is_cache_enabled", False) is True:  # diffusers' CacheMixin property
        raise AlreadyAppliedError(f"cachekit.apply: diffusers' own cache is enabled on {type(model).__name__}; "
                                  f"call .disable_cache() first (two caches would skip each other's blocks)")
    resolved = resolve(target, layout)
    cfg = _resolve_config(config, type(model).__name__)
    blocks = [BlockRef(name, mod, io) for name, mod, io in resolved.blocks]
    for ref in blocks:
        if getattr(vars(ref.module).get("forward"), "__cachekit__", False):
            raise AlreadyAppliedError(f"cachekit.apply: block {ref.name} already has cachekit hooks")
    method = method_for(cfg)
    units = find_units(resolved.blocks) if method.granularity == "unit" else None
    method.bind(model, tuple(u.name for u in units) if units else tuple(b.name for b in blocks))
    session = Session(method, model, blocks, resolved.layout.timestep_arg, resolved.scheduler, units)
    session.install([model] if target is model else [model, target], compile_opts)
    return target


def remove(target: Any) -> Any:
    """Undo ``apply`` exactly: original ``forward`` objects back, no attribute left behind."""
    _require_session(target, "remove").uninstall()
    return target


def stats(target: Any) -> CacheStats:
    """What the last generation did: computed fraction and the (calls x blocks) recompute plan."""
    return _require_session(target, "stats").stats()


def reset(target: Any, num_steps: int | None = None) -> None:
    """Start a new generation now (bare modules; pipelines do this on every call by themselves).

    Args:
        num_steps: steps of the coming generation, so methods can always compute the last one;
            a generation also ends by itself after this many steps.
    """
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"cachekit.reset: num_steps must be an int >= 1, got {num_steps!r}")
    _require_session(target, "reset").reset(num_steps)
