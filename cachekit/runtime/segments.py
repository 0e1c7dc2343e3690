"""The segment path: block ranges whose residual (output - input, per stream) is cached and reused.

Every block's ``forward`` is hooked. The first block of a segment asks the method (the leader
branch; followers copy the decision); on reuse it returns the segment's output built from its
inputs and the cached residuals (or their forecast), the later blocks of the reused segment pass
their inputs through, and nothing in between runs. In a computed segment the blocks run as they
are and the last one stores the residual, with the drift statistics the method asked for computed
in the same pass (``kernels.residual_with_stats``).

Whatever the model's forward adds between two blocks of a segment (ControlNet residuals on Flux /
SD3 / QwenImage, Wan VACE hints) is not the blocks' own work: it is seen as a next block's input
that is not the previous block's output object, and is taken out of the cached residual. On a
reuse step the model adds the current injections itself (the reused range's blocks pass their
inputs through), so they are counted once, as they are now. Without injections no tensor is
compared or copied (the next block receives the very output object), and results are unchanged
bit for bit. An in-place add (``h += c``) keeps the object and cannot be seen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..adapters import Block
from ..adapters.base import BlockBinding
from ..kernels import add_residual, residual, residual_with_stats, reuse
from ..methods.base import CacheMethod, Segments, SegmentContext, SegmentOutput, read_local
from .paths import Current, Hook
from .state import BranchState, Call


@dataclass
class _SegmentCall:
    """Per model call: which segments compute, and the inputs and context of those in progress."""

    compute: dict[int, bool] = field(default_factory=dict)
    inputs: dict[int, dict] = field(default_factory=dict)
    ctx: dict[int, SegmentContext] = field(default_factory=dict)
    last_out: dict[int, dict] = field(default_factory=dict)       # previous block's output streams
    injected: dict[int, dict] = field(default_factory=dict)       # stream -> sum of what the model added
    broken: set[int] = field(default_factory=set)                 # a stream changed shape between blocks


class SegmentPath:
    def __init__(self, method: CacheMethod, blocks: list[Block], depth: int, current: Current,
                 reader: Callable[[torch.Tensor, int], list[float]] | None = None) -> None:
        self.method, self.blocks, self.depth, self.current = method, blocks, depth, current
        self.reader = reader or read_local
        self.columns = tuple(b.name for b in blocks)
        self.segments = check_segments(method.segments(len(blocks)), len(blocks))
        self.warned = False
        self.segment_of = [next(k for k, (a, b) in enumerate(self.segments) if a <= i < b)
                           for i in range(len(blocks))]

    def call_state(self) -> _SegmentCall:
        return _SegmentCall()

    def hooks(self) -> list[Hook]:
        return [Hook(ref.module, "forward", self._block_impl(i, BlockBinding(ref.module.forward, ref.io, ref.name)))
                for i, ref in enumerate(self.blocks)]

    def _block_impl(self, i: int, binding: BlockBinding) -> Callable:
        seg = self.segment_of[i]
        start, end = self.segments[seg]

        def impl(original: Callable, args: tuple, kwargs: dict) -> Any:
            call = self.current()
            if call is None:  # block called outside a model forward: not ours to cache
                return original(*args, **kwargs)
            local: _SegmentCall = call.local
            if i == start:
                inputs = binding.streams(args, kwargs)
                reused = self._begin(call, local, seg, inputs)
                if reused is not None:
                    call.reused[start:end] = True
                    return binding.build_output({**inputs, **reused})
            elif not local.compute[seg]:
                return binding.build_output(binding.streams(args, kwargs))  # inside a reused range
            else:
                _note_injection(local, seg, binding.streams(args, kwargs))
            result = original(*args, **kwargs)
            call.computed[i] = True
            if i == end - 1:
                self._end(call, local, seg, binding.parse_output(result))
            else:
                local.last_out[seg] = binding.parse_output(result)
            return result

        return impl

    def _begin(self, call: Call, local: _SegmentCall, seg: int, inputs: dict) -> dict | None:
        """Decide for this segment; return the reused output streams, or None to compute."""
        ctx = SegmentContext(call.method_step, call.method_num_steps, seg, call.branch, call.leader, call.state.scratch, inputs,
                             self.reader)
        compute = call.decide(seg, lambda: self.method.decide(ctx))
        cached = call.state.latest(seg)
        if not compute and _reusable(cached, inputs):
            local.compute[seg] = False
            return self._reuse(ctx, call.state, seg, cached, inputs)
        local.compute[seg] = True
        local.inputs[seg], local.ctx[seg] = inputs, ctx
        return None

    def _reuse(self, ctx: SegmentContext, branch: BranchState, seg: int, cached: dict, inputs: dict) -> dict:
        """Each stream's input plus its cached residual, or plus the forecast residual."""
        hist = _matching_history(branch.history.get(seg, ()), cached)
        weights = tuple(self.method.reuse_weights(ctx, tuple(st for st, _ in hist))) if hist else (1.0,)
        out = {}
        for s, r in cached.items():
            fix = self.method.reuse_correction(ctx, r) if s == ctx.main_stream and r is not None else None
            if fix is not None:   # scale * (the reused or forecast residual) + shift, per channel
                parts = [h[s] for _, h in hist[:len(weights)]] if hist else [r]
                forecast = sum(w * p for w, p in zip(weights, parts))
                out[s] = inputs[s] + torch.addcmul(fix[1], forecast, fix[0])
            elif r is None:
                out[s] = None
            elif weights == (1.0,):
                out[s] = add_residual(inputs[s], r)
            else:
                out[s] = reuse(inputs[s], [h[s] for _, h in hist[:len(weights)]], weights)
        return out

    def _shape_changed(self, call: Call, seg: int, outputs: dict, inputs: dict) -> None:
        """Counted in ``stats().shape_changes``; the range computes at its next step (nothing was
        kept to reuse); said once per apply."""
        gen = call.generation
        if gen is not None:
            gen.shape_changes += 1
        if not self.warned:
            self.warned = True
            a, b = self.segments[seg]
            warnings.warn(f"cachekit: a stream changed shape inside the cached block range {self.columns[a]}.."
                          f"{self.columns[b - 1]} at step {call.step} (in: {_shapes(inputs)}; out: {_shapes(outputs)}); "
                          f"that range keeps nothing to reuse and is recomputed until its shapes hold "
                          f"(counted in cachekit.stats(...).shape_changes)", stacklevel=2)

    def _end(self, call: Call, local: _SegmentCall, seg: int, outputs: dict) -> None:
        inputs, ctx = local.inputs.pop(seg), local.ctx.pop(seg)
        injected = local.injected.pop(seg, {})
        local.last_out.pop(seg, None)
        ref = self.method.residual_reference(ctx)
        drift = None
        res: dict[str, torch.Tensor | None] | None = {} if seg not in local.broken else None
        for s, out in outputs.items() if res is not None else ():
            inp = inputs.get(s)
            if out is None:
                res[s] = None
            elif isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and out.shape == inp.shape:
                if s in injected:   # the blocks' own work: what the model added in between comes out
                    res[s] = residual(out.detach(), inp.detach()) - injected[s]
                elif s == ctx.main_stream and _same_layout(ref, out):
                    res[s], drift = residual_with_stats(out.detach(), inp.detach(), ref)
                else:
                    res[s] = residual(out.detach(), inp.detach())
            else:  # a stream created or reshaped inside the segment: nothing reusable
                res = None
                break
        if res is None:
            self._shape_changed(call, seg, outputs, inputs)
        call.state.remember(seg, call.method_step, res, self.depth)
        self.method.observe(ctx, SegmentOutput(outputs, res, drift))


def _shapes(streams: dict) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in streams.items() if isinstance(v, torch.Tensor))


def _note_injection(local: _SegmentCall, seg: int, inputs: dict) -> None:
    """A block inside a computed segment: add up what the model put on each stream since the
    previous block returned (nothing when the stream is the very tensor that block returned)."""
    prev = local.last_out.get(seg)
    if not prev:
        return
    for s, x in inputs.items():
        p = prev.get(s)
        if x is p or not isinstance(x, torch.Tensor) or not isinstance(p, torch.Tensor):
            continue
        if x.shape != p.shape:
            local.broken.add(seg)
            return
        d = x.detach() - p.detach()
        acc = local.injected.setdefault(seg, {})
        acc[s] = d if s not in acc else acc[s] + d


def _same_layout(ref: Any, out: torch.Tensor) -> bool:
    return isinstance(ref, torch.Tensor) and ref.shape == out.shape and ref.device == out.device


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


def check_segments(segments: Segments, n: int) -> Segments:
    pos = 0
    for a, b in segments:
        if a != pos or b <= a:
            raise ValueError(f"method segments {segments} must tile blocks 0..{n} without gaps")
        pos = b
    if pos != n:
        raise ValueError(f"method segments {segments} must end at block {n}")
    return tuple(segments)
