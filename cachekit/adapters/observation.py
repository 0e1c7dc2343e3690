"""Observation: one model call run with every candidate block watched (the first half of discovery).

What one observed model call executed: every child of every ``nn.ModuleList`` / ``nn.Sequential``
of the model, and the direct children of those, with what each call took (arguments bound to their
names) and returned, in execution order, per list. The observing itself wraps ``forward`` on
instances, so it lives with the runtime's other patches (``cachekit/runtime/observe.py``); judging
which lists are block stacks is ``discover.py``'s part. This module holds the data both share.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

__all__ = ["BlockCall", "Observation", "TIMESTEP_NAMES", "bind_arguments", "candidate_lists", "timestep_arg"]

#: Names under which the model's timestep argument is found (``Observation.timestep_arg``), so that a
#: discovered model can tell when a new generation starts.
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "vision_timesteps", "sigma", "bb_ca_time", "decoder_noise_time")


@dataclass
class BlockCall:
    """One call of one block of a candidate list, or of one direct child of a block."""

    order: int
    args: dict[str, Any]
    out: Any
    children: list[tuple[str, "BlockCall"]] = field(default_factory=list)


@dataclass
class Observation:
    """What one model call executed: per candidate list, its blocks' calls in order."""

    model: nn.Module
    lists: dict[str, nn.Module]
    calls: dict[str, list[tuple[int, BlockCall]]]     # list path -> [(block index, call)]
    timestep_arg: str | None


def bind_arguments(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """``fn``'s call arguments by parameter name (``*args`` / ``**kwargs`` flattened; ``argN``
    where the signature cannot bind them)."""
    try:
        sig = inspect.signature(fn)
        bound = sig.bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    out = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind == inspect.Parameter.VAR_POSITIONAL:
            out.update({f"{name}{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def candidate_lists(model: nn.Module) -> dict[str, nn.Module]:
    """Every non-empty ``nn.ModuleList`` / ``nn.Sequential`` of ``model``, by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m)}


def timestep_arg(model: nn.Module) -> str | None:
    """The name of ``model.forward``'s timestep parameter (one of ``TIMESTEP_NAMES``), or None."""
    params = inspect.signature(model.forward).parameters
    return next((n for n in TIMESTEP_NAMES if n in params), None)
