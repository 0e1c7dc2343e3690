"""Observing one model call for discovery: every candidate block's ``forward`` wrapped on the
instance with the runtime's own ``InstancePatches`` (undone before ``observe`` returns, whatever
the call does), so no code outside ``runtime/`` assigns ``forward``. What the observation means is
judged by ``adapters/discover.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..adapters.discover import layout_from_observation
from ..adapters.base import ModelLayout
from ..adapters.observation import BlockCall, Observation, bind_arguments, candidate_lists, timestep_arg
from .patches import InstancePatches

__all__ = ["observe", "propose_layout"]


@torch.no_grad()
def observe(model: nn.Module, run: Callable[[], Any]) -> Observation:
    """Run ``run()`` (one call of ``model``) with every candidate block and its direct children
    observed; every wrapper is removed before this returns.

    Args:
        model: the module whose lists are candidates.
        run: calls ``model`` once.

    Example:
        >>> import torch, cachekit
        >>> from cachekit.runtime.observe import observe
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> obs = observe(net, lambda: net(torch.ones(1, 2)))
        >>> [j for j, _ in obs.calls[""]], "forward" in vars(net[0])
        ([0, 1], False)
    """
    lists = candidate_lists(model)
    calls: dict[str, list[tuple[int, BlockCall]]] = {p: [] for p in lists}
    stack: list[BlockCall] = []
    counter = [0]
    patches = InstancePatches()

    def observer(record: Callable[[BlockCall], None]) -> Callable[[Callable, tuple, dict], Any]:
        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = BlockCall(counter[0], bind_arguments(original, args, kwargs), None)
            counter[0] += 1
            record(call)
            stack.append(call)
            try:
                call.out = original(*args, **kwargs)
            finally:
                stack.pop()
            return call.out
        return impl

    try:
        wrapped: set[int] = set()
        for path, lst in lists.items():
            block: Any
            for j, block in enumerate(lst):
                if isinstance(block, (nn.ModuleList, nn.ModuleDict)):
                    continue   # a list of lists: the inner lists are candidates themselves
                patches.wrap(block, "forward", observer(lambda c, path=path, j=j: calls[path].append((j, c))))
                wrapped.add(id(block))
        for path, lst in lists.items():
            for block in lst:
                for attr, child in block.named_children():
                    if id(child) in wrapped or isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                        continue
                    patches.wrap(child, "forward", observer(
                        lambda c, attr=attr: stack[-1].children.append((attr, c)) if stack else None))
        run()
    finally:
        patches.undo()
    return Observation(model, lists, calls, timestep_arg(model))


def propose_layout(model: nn.Module, *args: Any, **kwargs: Any) -> ModelLayout:
    """Run ``model(*args, **kwargs)`` once (no grad, observed) and return the layout discovery
    finds; raise ``UnsupportedModelError`` naming every list and why it was left out.

    Args:
        model: the denoiser to look at.
        *args: its positional inputs for one call.
        **kwargs: its keyword inputs for one call.

    Example:
        >>> layout = cachekit.propose_layout(transformer, **inputs)  # doctest: +SKIP
        >>> print(cachekit.layout_source(type(transformer), layout))  # doctest: +SKIP
    """
    return layout_from_observation(observe(model, lambda: model(*args, **kwargs)))
