"""The hooks of one applied target and the state they share.

``Session.install`` wraps, on instances only: the model's ``forward`` (finds the step and CFG branch
of each call), each block's ``forward`` (compute or reuse its segment), diffusers'
``cache_context`` (names the CFG branch), the scheduler's ``set_timesteps`` (a pipeline call
starts a new generation and tells the number of steps) and ``step`` (counts the steps, ``steps.py``).
``uninstall`` undoes all of it. With ``compile`` the originals are compiled (``compile.py``).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch
from torch import nn

from ..adapters.base import BlockBinding, BlockIO
from ..kernels import add_residual, residual, reuse
from ..methods.base import CacheMethod, UnitContext
from .compile import compiled_impl, eager_only
from .patches import InstancePatches
from .state import CacheStats, Generation
from .steps import StepClock

SESSION_ATTR = "_cachekit_session"


@dataclass(frozen=True)
class BlockRef:
    name: str
    module: nn.Module
    io: BlockIO


def _timestep_value(t: Any) -> float | None:
    """First element of the timestep as a float: enough to tell steps apart (the pipeline
    broadcasts one value over the batch). A device-to-host sync per model call on an accelerator:
    only read when no scheduler counts the steps (``runtime.steps``)."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return float(t.reshape(-1)[0]) if t.numel() else None
    if isinstance(t, (int, float)):
        return float(t)
    return None


class Session:
    def __init__(self, method: CacheMethod, root: nn.Module, blocks: list[BlockRef],
                 timestep_arg: str | None, scheduler: Any = None, units: list | None = None) -> None:
        """``units`` (sub-block methods only): ``adapters.Unit`` objects; they replace the blocks
        as the plan's columns and as the places hooked."""
        self.method, self.root, self.blocks, self.units = method, root, blocks, units
        self.scheduler = scheduler
        self.block_names = tuple(u.name for u in units) if units else tuple(b.name for b in blocks)
        if not units:
            self.segments = _check_segments(method.segments(len(blocks)), len(blocks))
            self.segment_of = [next(k for k, (a, b) in enumerate(self.segments) if a <= i < b)
                               for i in range(len(blocks))]
        self._t_pos, self._t_name = _arg_position(root.forward, timestep_arg)
        self.gen = Generation(len(self.block_names), method.num_steps)
        self.previous: Generation | None = None
        self.call = None  # the model call in progress, if any
        self.context: Hashable | None = None  # diffusers cache_context name, if set
        self._patches = InstancePatches()
        self.depth = method.history_depth  # cached steps kept per segment/unit (forecasting)
        self.clock = StepClock()  # steps from scheduler.step calls (runtime.steps)

    # ---- install / uninstall -------------------------------------------------------------
    def install(self, owners: list[object], compile: dict | None = None) -> None:
        """Patch instances; on any failure undo what was done and re-raise. ``compile``: torch.compile
        options for the originals of the innermost hooks (``runtime.compile``), None for eager."""
        try:
            for owner in owners:
                self._patches.set(owner, SESSION_ATTR, self)
            self._hook(self.root, "forward", self._model_forward)
            if self.units:
                for i, unit in enumerate(self.units):
                    self._hook(unit.owner, unit.attr, self._unit_impl(i), compile)
                for layer, members in _additive_layers(self.blocks, self.units).items():
                    ref = self.blocks[layer]
                    binding = BlockBinding(ref.module.forward, ref.io, ref.name)
                    self._hook(ref.module, "forward", self._additive_block_impl(layer, members, binding))
            else:
                for i, ref in enumerate(self.blocks):
                    binding = BlockBinding(ref.module.forward, ref.io, ref.name)
                    self._hook(ref.module, "forward", self._block_impl(i, binding), compile)
            if callable(getattr(self.root, "cache_context", None)):
                self._patches.wrap(self.root, "cache_context", self._cache_context)
            if self.scheduler is not None and callable(getattr(self.scheduler, "set_timesteps", None)):
                self._patches.wrap(self.scheduler, "set_timesteps", self._set_timesteps)
                if callable(getattr(self.scheduler, "step", None)):
                    self._patches.wrap(self.scheduler, "step", self.clock.step)
        except BaseException:
            self._patches.undo()
            raise

    def _hook(self, owner: object, attr: str, impl: Callable, compile: dict | None = None) -> None:
        """Wrap ``owner.attr`` with ``impl``, a graph break for dynamo; with ``compile`` options the
        original it calls is compiled, and a ``.compile()`` already on ``owner`` is set aside."""
        if compile is not None:
            impl = compiled_impl(impl, getattr(owner, attr), compile)
            if attr == "forward" and vars(owner).get("_compiled_call_impl") is not None:
                self._patches.set(owner, "_compiled_call_impl", None)
        self._patches.wrap(owner, attr, eager_only(impl))

    def uninstall(self) -> None:
        self._patches.undo()
        self.gen = self.previous = None

    # ---- generations ---------------------------------------------------------------------
    def reset(self, num_steps: int | None = None) -> None:
        """Start a new generation; nothing cached before is reused."""
        if self.gen is not None and self.gen.calls:
            self.previous = self.gen
        self.method.check_num_steps(num_steps)
        self.gen = Generation(len(self.block_names), num_steps or self.method.num_steps)

    def stats(self) -> CacheStats:
        gen = self.gen if self.gen is not None and self.gen.calls else self.previous
        return CacheStats.from_generation(gen, self.block_names)

    def _set_timesteps(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        result = original(*args, **kwargs)
        timesteps = getattr(self.scheduler, "timesteps", None)
        ended = self.gen
        self.reset(len(timesteps) if timesteps is not None else None)
        self.clock.start(ended, self.gen)
        return result

    def _cache_context(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        name = args[0] if args else kwargs.get("name")

        @contextlib.contextmanager
        def named() -> Any:
            outer, self.context = self.context, name
            try:
                with original(*args, **kwargs):
                    yield
            finally:
                self.context = outer

        return named()

    # ---- model forward: which step / branch ---------------------------------------------
    def _model_forward(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        if self.call is not None:  # re-entrant call (a model calling itself): run it plainly
            return original(*args, **kwargs)
        t = self.clock.key(self.gen)  # no tensor read when the scheduler counts the steps
        if t is None:
            t = _timestep_value(_get_arg(args, kwargs, self._t_pos, self._t_name))
        if self.gen.starts_new_generation(t, self.context):
            self.reset(self.gen.num_steps)
        self.call = self.gen.begin_call(t, self.context)
        try:
            return original(*args, **kwargs)
        except BaseException:
            self.gen.failed = True
            raise
        finally:
            self.call = None

    # ---- block forward: compute or reuse --------------------------------------------------
    def _block_impl(self, i: int, binding: BlockBinding) -> Callable:
        seg = self.segment_of[i]
        start, end = self.segments[seg]

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.call
            if call is None:  # block called outside a model forward: not ours to cache
                return original(*args, **kwargs)
            if i == start:
                inputs = binding.streams(args, kwargs)
                reused = self._begin_segment(call, seg, inputs)
                if reused is not None:
                    return binding.build_output({**inputs, **reused})
            elif not call.seg_compute[seg]:
                return binding.build_output(binding.streams(args, kwargs))  # inside a reused range
            result = original(*args, **kwargs)
            call.computed[i] = True
            if i == end - 1:
                self._end_segment(call, seg, binding.parse_output(result))
            return result

        return impl

    def _decide_unit(self, call: Any, branch: Any, u: int) -> bool:
        """The leader asks the method (once per unit and step); followers copy its answer."""
        if call.leader:
            ctx = UnitContext(call.step, self.gen.num_steps, u, call.branch, True, {}, branch.scratch)
            compute = self.gen.decisions[u] = bool(self.method.decide(ctx))
            return compute
        return self.gen.decisions.get(u, True)

    def _unit_impl(self, u: int) -> Callable:
        """A sub-block unit: compute and cache its output, or return the cached output."""

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.call
            if call is None:
                return original(*args, **kwargs)
            branch = self.gen.branch(call.branch)
            pending = call.unit_decisions.pop(u, None)  # decided by an additive block's hook
            compute = self._decide_unit(call, branch, u) if pending is None else pending
            key = _shape_key(args, kwargs)
            cached = branch.residuals.get(u)
            if not compute and cached is not None and cached[0] == key:
                return self._reused_unit(call, branch, u)
            out = original(*args, **kwargs)
            branch.residuals[u] = (key, _detach(out))
            if branch.history.get(u) and branch.history[u][0][1][0] != key:
                branch.history[u] = []  # other input shapes: older outputs cannot forecast this one
            branch.remember(u, call.step, branch.residuals[u], self.depth)
            call.computed[u] = True
            self.method.observe(UnitContext(call.step, self.gen.num_steps, u, call.branch, call.leader, {},
                                            branch.scratch), out)
            return out

        return impl

    def _additive_block_impl(self, layer: int, members: tuple[int, ...], binding: BlockBinding) -> Callable:
        """A block whose output is its input plus its units' outputs (``ADDITIVE_BLOCKS``): when
        all its units are reused, add their cached outputs in the block's order and skip the block."""
        main = binding.io.streams[0]

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.call
            if call is None:
                return original(*args, **kwargs)
            branch = self.gen.branch(call.branch)
            decisions = [self._decide_unit(call, branch, u) for u in members]
            key = _shape_key(args, kwargs)
            if not any(decisions) and branch.block_keys.get(layer) == key:
                x = binding.streams(args, kwargs)[main]
                for u in members:
                    x = x + self._reused_unit(call, branch, u)
                return binding.build_output({main: x})
            call.unit_decisions.update(zip(members, decisions))
            try:
                result = original(*args, **kwargs)
            finally:
                for u in members:
                    call.unit_decisions.pop(u, None)
            # Every unit now holds an output made for inputs of this shape (computed or reused).
            branch.block_keys[layer] = key
            return result

        return impl

    def _reused_unit(self, call: Any, branch: Any, u: int) -> Any:
        """A unit's output on a reuse step: the cached output, or its forecast."""
        latest = branch.residuals[u][1]
        hist = branch.history.get(u, ())   # (step, (input-shape key, output)), newest first
        if not isinstance(latest, torch.Tensor) or not hist:
            return latest
        ctx = UnitContext(call.step, self.gen.num_steps, u, call.branch, call.leader, {}, branch.scratch)
        weights = self.method.reuse_weights(ctx, tuple(s for s, _ in hist))
        if tuple(weights) == (1.0,):
            return latest
        terms = [out for _, (_, out) in hist[:len(weights)]]
        # sum_i w_i H_i written as H_0 + (w_0 - 1) H_0 + sum_{i>0} w_i H_i: the fused reuse form
        return reuse(latest, terms, [weights[0] - 1.0, *weights[1:]])

    def _reuse_streams(self, ctx: UnitContext, branch: Any, seg: int, cached: dict, inputs: dict) -> dict:
        """Each stream's input plus its cached residual, or plus the forecast residual."""
        hist = _matching_history(branch.history.get(seg, ()), cached)
        weights = tuple(self.method.reuse_weights(ctx, tuple(st for st, _ in hist))) if hist else (1.0,)
        out = {}
        for s, r in cached.items():
            if r is None:
                out[s] = None
            elif weights == (1.0,):
                out[s] = add_residual(inputs[s], r)
            else:
                out[s] = reuse(inputs[s], [h[s] for _, h in hist[:len(weights)]], weights)
        return out

    def _begin_segment(self, call: Any, seg: int, inputs: dict) -> dict | None:
        """Decide for this segment; return the reused output streams, or None to compute."""
        branch = self.gen.branch(call.branch)
        ctx = UnitContext(call.step, self.gen.num_steps, seg, call.branch, call.leader, inputs,
                          branch.scratch)
        if call.leader:
            compute = bool(self.method.decide(ctx))
            self.gen.decisions[seg] = compute
        else:
            compute = self.gen.decisions.get(seg, True)
        cached = branch.residuals.get(seg)
        if not compute and _reusable(cached, inputs):
            call.seg_compute[seg] = False
            return self._reuse_streams(ctx, branch, seg, cached, inputs)
        call.seg_compute[seg] = True
        call.seg_inputs[seg] = inputs
        call.seg_ctx[seg] = ctx
        return None

    def _end_segment(self, call: Any, seg: int, outputs: dict) -> None:
        inputs = call.seg_inputs.pop(seg)
        res: dict[str, torch.Tensor | None] | None = {}
        for s, out in outputs.items():
            inp = inputs.get(s)
            if out is None:
                res[s] = None
            elif isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and out.shape == inp.shape:
                res[s] = residual(out.detach(), inp.detach())
            else:  # a stream created or reshaped inside the segment: nothing reusable
                res = None
                break
        branch = self.gen.branch(call.branch)
        branch.residuals[seg] = res
        branch.remember(seg, call.step, res, self.depth)
        self.method.observe(call.seg_ctx.pop(seg), outputs)


def _additive_layers(blocks: list[BlockRef], units: list) -> dict[int, tuple[int, ...]]:
    """Layer index -> its unit indices, for blocks that are their input plus their units' outputs."""
    from ..adapters.base import qualname
    from ..adapters.known import ADDITIVE_BLOCKS

    members: dict[int, list[int]] = {}
    for u, unit in enumerate(units):
        members.setdefault(unit.layer, []).append(u)
    out = {}
    for layer, ids in members.items():
        block = blocks[layer].module
        flag = ADDITIVE_BLOCKS.get(qualname(block))
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


def _matching_history(entries: Any, cached: dict) -> list:
    """The newest history entries whose streams match the newest cached residuals in shape and
    dtype (a resolution change in between leaves only the newest)."""
    out = []
    for step, payload in entries:
        if not payload or payload.keys() != cached.keys() or any(
                (a is None) != (b is None) or (a is not None and (a.shape != b.shape or a.dtype != b.dtype))
                for a, b in ((payload[s], cached[s]) for s in cached)):
            break
        out.append((step, payload))
    return out


def _reusable(cached: dict | None, inputs: dict) -> bool:
    if not cached:
        return False
    for s, r in cached.items():
        if r is None:
            continue
        x = inputs.get(s)
        if not isinstance(x, torch.Tensor) or x.shape != r.shape or x.dtype != r.dtype or x.device != r.device:
            return False
    return True


def _check_segments(segments: tuple, n: int) -> tuple:
    pos = 0
    for a, b in segments:
        if a != pos or b <= a:
            raise ValueError(f"method segments {segments} must tile blocks 0..{n} without gaps")
        pos = b
    if pos != n:
        raise ValueError(f"method segments {segments} must end at block {n}")
    return tuple(segments)


def _arg_position(forward: Callable, name: str | None) -> tuple[int | None, str | None]:
    if name is None:
        return None, None
    params = [p for p in inspect.signature(forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params]
    return (names.index(name) if name in names else None), name


def _get_arg(args: tuple, kwargs: dict, pos: int | None, name: str | None) -> Any:
    if name is None:
        return None
    if name in kwargs:
        return kwargs[name]
    if pos is not None and pos < len(args):
        return args[pos]
    return None
