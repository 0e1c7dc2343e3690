"""What a cache method sees and must answer.

The runtime (``cachekit.runtime``) owns the hooks, the step/branch bookkeeping and the cached
tensors; a method only answers *when*: at each decision point of a model call, compute or reuse.
Methods never touch modules, so they are tested with plain tensors.

Two granularities, one decision interface:
- ``granularity = "block"``: the block stack is cut into segments (``segments``); the first block of
  a segment asks ``decide(ctx)`` with a ``SegmentContext`` (its input streams included); after a
  computed segment the method may learn from it in ``observe``.
- ``granularity = "unit"``: each sub-block unit (self-attention, cross-attention, FFN) asks
  ``decide(ctx)`` with a ``StepContext``; after a computed unit, ``observe_unit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch

Segments = tuple[tuple[int, int], ...]  # half-open block ranges [start, end) covering all blocks


@dataclass
class StepContext:
    """One decision point: a segment of blocks, or a sub-block unit, in one model call.

    Attributes:
        step: denoising step of this generation, 0 = first (noisiest).
        num_steps: steps in this generation when the pipeline or ``cachekit.reset`` told us, else None.
        index: the segment (index into ``CacheMethod.segments(...)``) or the unit (index into the
            plan's columns) being decided.
        branch: CFG branch key ("cond"/"uncond" from diffusers' ``cache_context``, else the call's
            position within the step: 0, 1, ...).
        leader: True for the first model call of the step; followers copy its decision.
        state: scratch dict of this method for this branch, emptied at every new generation.
    """

    step: int
    num_steps: int | None
    index: int
    branch: Hashable
    leader: bool
    state: dict[str, Any]

    @property
    def is_last_step(self) -> bool:
        return self.num_steps is not None and self.step >= self.num_steps - 1


def read_local(means: torch.Tensor, n: int) -> list[float]:
    return means.tolist()


@dataclass
class UnitContext(StepContext):
    """A decision point of the unit path: a ``StepContext`` plus the runtime's reader.

    Attributes:
        reader: what ``read`` does (global under context parallelism, as for segments).
    """

    reader: Callable[[torch.Tensor, int], list[float]] = read_local

    def read(self, means: torch.Tensor, n: int) -> list[float]:
        """The one device-to-host read of a decision: ``means`` over ``n`` elements of this rank's
        data, global under context parallelism. Call it at the same decision on every rank."""
        return self.reader(means, n)


@dataclass
class SegmentContext(StepContext):
    """A decision point of the segment path: a ``StepContext`` plus the segment's input streams.

    Attributes:
        inputs: the segment's input streams, e.g. {"hidden_states": x, "encoder_hidden_states": c}.
        reader: what ``read`` does (the runtime's: global under context parallelism).
    """

    inputs: dict[str, torch.Tensor | None]
    reader: Callable[[torch.Tensor, int], list[float]] = read_local

    @property
    def main_stream(self) -> str:
        """Name of the first (main) stream: "hidden_states" in diffusers, "tgt" in torch layers."""
        return next(iter(self.inputs))

    def read(self, means: torch.Tensor) -> list[float]:
        """The one device-to-host read of a decision: ``means`` (any shape) are means over tensors
        the size of this rank's main stream; under context parallelism they come back global (one
        packed all-reduce; ``runtime/parallel.py``). Call it at the same decision on every rank."""
        x = self.inputs.get(self.main_stream)
        return self.reader(means, x.numel() if isinstance(x, torch.Tensor) else 1)


@dataclass(frozen=True)
class SegmentOutput:
    """What a computed segment produced, as ``observe`` receives it.

    Attributes:
        outputs: the segment's output streams.
        residuals: output - input per stream, as cached (None for a stream that is None); None as a
            whole when a stream was created or reshaped inside the segment (nothing reusable).
        drift: ``[mean|r - ref|, mean|ref|]`` (fp32, on the device) of the main stream's residual r
            against the tensor ``residual_reference(ctx)`` returned, computed in the same pass as r;
            None when the method asked for none or the shapes differ.
    """

    outputs: dict[str, torch.Tensor | None]
    residuals: dict[str, torch.Tensor | None] | None
    drift: torch.Tensor | None = None


@dataclass(frozen=True)
class ScratchTensors:
    """Tensors the size of one main-stream tensor that a method keeps in its own per-branch state.

    Args:
        what: what they are, as ``cachekit.estimate_cache_bytes`` prints them.
        count: how many.
        held_at_end: still held after a generation whose last step computed (a tensor kept only
            for the next step's decision is dropped then).
    """

    what: str
    count: int
    held_at_end: bool = True


@dataclass(frozen=True)
class MemoryNeeds:
    """What a method makes the runtime cache, per CFG branch: the contract ``cachekit.memory`` reads
    (it never looks at a method's name or config).

    Args:
        granularity: "block": one residual per segment and stream its last block returns; "unit":
            one output per sub-block unit.
        history_depth: cached entries kept per segment / unit and branch (1 = plain reuse; a
            forecast keeps its older entries too).
        segments: the block path's segments of the stack (``CacheMethod.segments``); () for units.
        scratch: the method's own main-stream tensors, kept in the deciding branch (the first of a
            step) only, since followers copy its decisions.
    """

    granularity: str
    history_depth: int
    segments: Segments = ()
    scratch: tuple[ScratchTensors, ...] = ()


class CacheMethod:
    """Base class. Subclasses override ``decide`` and, when they learn from computed steps,
    ``observe`` (segments) or ``observe_unit`` (units). The default segmentation is the whole
    block stack as one segment.

    Class attributes:
        granularity: "block" (segments of whole blocks, residuals cached) or "unit" (sub-block
            units such as self-attention / cross-attention / FFN, outputs cached).
        num_steps: the number of steps a calibrated plan was made for; None for runtime rules.
    """

    granularity = "block"
    num_steps: int | None = None

    def __init__(self, config: Any) -> None:
        self.config = config

    def bind(self, model: Any, columns: tuple[str, ...]) -> None:
        """Called once by ``apply`` before any hook is installed, with the plan's columns (block or
        unit names); raise to refuse the model."""

    def check_num_steps(self, num_steps: int | None) -> None:
        """Raise when a generation of ``num_steps`` steps cannot be served (calibrated plans)."""

    def segments(self, num_blocks: int) -> Segments:
        return ((0, num_blocks),)

    def decide(self, ctx: StepContext) -> bool:
        """True = recompute the segment / unit, False = reuse what is cached. Called by the leader
        branch only; the runtime forces a compute when nothing reusable is cached."""
        raise NotImplementedError

    @property
    def history_depth(self) -> int:
        """Cached tensors kept per segment/unit and branch (1 = plain reuse)."""
        from .forecast import history_depth

        return history_depth(getattr(self.config, "forecast", "none"), getattr(self.config, "forecast_order", 0))

    def scratch_tensors(self) -> tuple[ScratchTensors, ...]:
        """Main-stream-sized tensors this method keeps in its per-branch state (default: none)."""
        return ()

    def memory_needs(self, num_blocks: int) -> MemoryNeeds:
        """What this method makes the runtime cache on a stack of ``num_blocks`` blocks."""
        block = self.granularity == "block"
        return MemoryNeeds(self.granularity, self.history_depth, self.segments(num_blocks) if block else (),
                           self.scratch_tensors())

    def reuse_weights(self, ctx: StepContext, steps: tuple[int, ...]) -> tuple[float, ...]:
        """Weights of the cached tensors computed at ``steps`` (newest first) on a reuse step:
        the reused tensor is ``sum_i w_i * cached_i``. Default: the config's forecast; (1.0,) is
        plain reuse. Methods with fitted corrections (ERTACache) override this."""
        from .forecast import forecast_weights

        c = self.config
        return forecast_weights(getattr(c, "forecast", "none"), getattr(c, "forecast_order", 0), steps, ctx.step)

    def reuse_correction(self, ctx: StepContext, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Segment path, reuse steps: (scale, shift) per channel (last dimension) of the main stream,
        on ``like``'s device and dtype; the reused residual r (or its forecast) becomes
        ``scale * r + shift``. None (default): no correction (CacheQuant's fitted one overrides)."""
        return None

    def residual_reference(self, ctx: SegmentContext) -> torch.Tensor | None:
        """A tensor to measure the coming residual of this segment against (segment path, computed
        segments only): the runtime then computes the residual and its drift statistics in one
        pass (``SegmentOutput.drift``). None (default): no statistics."""
        return None

    def observe(self, ctx: SegmentContext, computed: SegmentOutput) -> None:
        """Segment path: called after a segment was computed (any branch)."""

    def observe_unit(self, ctx: StepContext, output: Any) -> None:
        """Unit path: called after a sub-block unit was computed (any branch), with its output."""
