"""The unit path: sub-block units (self-attention, cross-attention, FFN) whose outputs are cached.

Each unit's forward (or block method, for torch's layers) is hooked. The unit asks the method (the
leader branch; followers copy); on reuse it returns the output it produced at its last computed
step (or a forecast of it), and the block around it goes on as usual: norms, AdaLN modulation,
gates and residual adds run on the current input, so a reused output is re-modulated each step.
An output is only reused for inputs of the shape it was made for.

Additive blocks (``BlockUnits.additive``: torch's pre-norm decoder layer, whose output is its input
plus its units' outputs) are hooked too: when every unit of such a block is reused at a step, the
block returns x + c_1 + c_2 + ... in the block's order (bit-identical to running it) and its norms
and Python cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..adapters import Block, Unit
from ..adapters.base import BlockBinding
from ..kernels import reuse
from ..methods.base import CacheMethod, UnitContext, read_local
from .paths import Current, Hook
from .state import BranchState, Call


@dataclass
class _UnitCall:
    """Per model call: decisions an additive block's hook made for its units, which run next."""

    pending: dict[int, bool] = field(default_factory=dict)


class UnitPath:
    def __init__(self, method: CacheMethod, blocks: list[Block], units: list[Unit], depth: int,
                 current: Current, reader: Callable | None = None) -> None:
        self.method, self.blocks, self.units, self.depth, self.current = method, blocks, units, depth, current
        self.reader = reader if reader is not None else read_local
        self.columns = tuple(u.name for u in units)

    def call_state(self) -> _UnitCall:
        return _UnitCall()

    def hooks(self) -> list[Hook]:
        hooks = [Hook(unit.owner, unit.attr, self._unit_impl(u)) for u, unit in enumerate(self.units)]
        for layer, members in _additive_layers(self.blocks, self.units).items():
            ref = self.blocks[layer]
            binding = BlockBinding(ref.module.forward, ref.io, ref.name)
            hooks.append(Hook(ref.module, "forward", self._additive_block_impl(layer, members, binding), False))
        return hooks

    def _ctx(self, call: Call, u: int) -> UnitContext:
        return UnitContext(call.method_step, call.method_num_steps, u, call.branch, call.leader, call.state.scratch,
                           self.reader)

    def _unit_impl(self, u: int) -> Callable:
        """A sub-block unit: compute and cache its output, or return the cached output."""

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.current()
            if call is None:
                return original(*args, **kwargs)
            branch = call.state
            pending = call.local.pending.pop(u, None)   # decided by an additive block's hook
            compute = call.decide(u, lambda: self.method.decide(self._ctx(call, u))) if pending is None else pending
            key = _shape_key(args, kwargs)
            cached = branch.latest(u)
            if not compute and cached is not None and cached[0] == key:
                call.reused[u] = True
                return self._reused(call, branch, u)
            out = original(*args, **kwargs)
            if branch.history.get(u) and cached[0] != key:
                branch.history[u] = []   # other input shapes: older outputs cannot forecast this one
            branch.remember(u, call.method_step, (key, _detach(out)), self.depth)
            call.computed[u] = True
            self.method.observe_unit(self._ctx(call, u), out)
            return out

        return impl

    def _additive_block_impl(self, layer: int, members: tuple[int, ...], binding: BlockBinding) -> Callable:
        main = binding.io.streams[0]

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.current()
            if call is None:
                return original(*args, **kwargs)
            branch = call.state
            decisions = [call.decide(u, lambda u=u: self.method.decide(self._ctx(call, u))) for u in members]
            key = _shape_key(args, kwargs)
            keys = branch.extra.setdefault("block_keys", {})
            if not any(decisions) and keys.get(layer) == key:
                x = binding.streams(args, kwargs)[main]
                for j, u in enumerate(members):
                    call.reused[u] = True
                    r = self._reused(call, branch, u)
                    # the first add makes a new tensor (the layer's input stays as it was); the
                    # others write into it: the same additions, one allocation per layer
                    x = x + r if j == 0 else reuse(x, [r], [1.0], inplace=True)
                return binding.build_output({main: x})
            call.local.pending.update(zip(members, decisions))
            try:
                result = original(*args, **kwargs)
            finally:
                for u in members:
                    call.local.pending.pop(u, None)
            # Every unit now holds an output made for inputs of this shape (computed or reused).
            keys[layer] = key
            return result

        return impl

    def _reused(self, call: Call, branch: BranchState, u: int) -> Any:
        """A unit's output on a reuse step: the cached output, or its forecast."""
        hist = branch.history.get(u, ())   # (step, (input-shape key, output)), newest first
        latest = hist[0][1][1]
        parts = (latest,) if isinstance(latest, torch.Tensor) else latest
        if not isinstance(parts, tuple) or not all(isinstance(t, torch.Tensor) for t in parts):
            return latest
        weights = self.method.reuse_weights(self._ctx(call, u), tuple(s for s, _ in hist))
        if tuple(weights) == (1.0,):
            return latest
        # sum_i w_i H_i written as H_0 + (w_0 - 1) H_0 + sum_{i>0} w_i H_i: the fused reuse form.
        # A unit returning a tuple (joint attention: image and text outputs) is forecast per element.
        hist = [(s, out if isinstance(out, tuple) else (out,)) for s, (_, out) in hist[:len(weights)]]
        forecast = tuple(reuse(p, [out[j] for _, out in hist], [weights[0] - 1.0, *weights[1:]])
                         for j, p in enumerate(parts))
        return forecast[0] if isinstance(latest, torch.Tensor) else forecast


def _additive_layers(blocks: list[Block], units: list[Unit]) -> dict[int, tuple[int, ...]]:
    """Layer index -> its unit indices, for blocks that are their input plus their units' outputs."""
    members: dict[int, list[int]] = {}
    for u, unit in enumerate(units):
        members.setdefault(unit.layer, []).append(u)
    out = {}
    for layer, ids in members.items():
        flag = units[ids[0]].additive
        block = blocks[layer].module
        if flag and getattr(block, flag, False) is True and all(units[u].kind != "block" for u in ids):
            out[layer] = tuple(ids)
    return out


def _shape_key(args: tuple, kwargs: dict) -> tuple:
    """Shapes of the tensor arguments: a cached unit output is only reused for same-shaped inputs."""
    return tuple(tuple(a.shape) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))


def _detach(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, tuple):
        return tuple(_detach(o) for o in out)
    return out
