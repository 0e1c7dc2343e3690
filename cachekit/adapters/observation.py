"""Observation: one model call run with every candidate block watched (the first half of discovery).

Every child of every ``nn.ModuleList`` / ``nn.Sequential`` of the model, and the direct children of
those, is wrapped on the instance (undone before ``observe`` returns, whatever the call does), and
the model runs one call. What each call took (arguments bound to their names) and returned is kept
in execution order, per list. Judging which lists are block stacks is ``discover.py``'s part.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["BlockCall", "Observation", "TIMESTEP_NAMES", "observe"]

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


def _bind(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
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


def _containers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m)}


class _Patches:
    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []

    def wrap(self, module: nn.Module, make: Callable[[Callable], Callable]) -> None:
        had = "forward" in vars(module)
        old = vars(module).get("forward")
        module.forward = make(module.forward)

        def restore() -> None:
            if had:
                module.forward = old
            else:
                del module.forward
        self.undo.append(restore)

    def restore(self) -> None:
        for fn in reversed(self.undo):
            fn()
        self.undo.clear()


@torch.no_grad()
def observe(model: nn.Module, run: Callable[[], Any]) -> Observation:
    """Run ``run()`` (one call of ``model``) with every candidate block and its direct children
    observed; every wrapper is removed before this returns."""
    lists = _containers(model)
    calls: dict[str, list[tuple[int, BlockCall]]] = {p: [] for p in lists}
    stack: list[BlockCall] = []
    counter = [0]
    patches = _Patches()

    def observer(record: Callable[[BlockCall], None], original: Callable) -> Callable:
        def forward(*args: Any, **kwargs: Any) -> Any:
            call = BlockCall(counter[0], _bind(original, args, kwargs), None)
            counter[0] += 1
            record(call)
            stack.append(call)
            try:
                call.out = original(*args, **kwargs)
            finally:
                stack.pop()
            return call.out
        return forward

    try:
        wrapped: set[int] = set()
        for path, lst in lists.items():
            for j, block in enumerate(lst):
                if isinstance(block, (nn.ModuleList, nn.ModuleDict)):
                    continue   # a list of lists: the inner lists are candidates themselves
                patches.wrap(block, lambda orig, path=path, j=j: observer(
                    lambda c: calls[path].append((j, c)), orig))
                wrapped.add(id(block))
        for path, lst in lists.items():
            for block in lst:
                for attr, child in block.named_children():
                    if id(child) in wrapped or isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                        continue
                    patches.wrap(child, lambda orig, attr=attr: observer(
                        lambda c: stack[-1].children.append((attr, c)) if stack else None, orig))
        run()
    finally:
        patches.restore()
    params = inspect.signature(model.forward).parameters
    ts = next((n for n in TIMESTEP_NAMES if n in params), None)
    return Observation(model, lists, calls, ts)
