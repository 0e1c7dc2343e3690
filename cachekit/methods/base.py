"""What a cache method sees and must answer.

The runtime (``cachekit.runtime``) owns the hooks, the step/branch bookkeeping and the cached
residuals; a method only answers *when*: for each segment of blocks at each model call, compute or
reuse. Methods never touch modules, so they are tested with plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import torch

Segments = tuple[tuple[int, int], ...]  # half-open block ranges [start, end) covering all blocks


@dataclass
class UnitContext:
    """One decision point: a segment of blocks in one model call.

    Attributes:
        step: denoising step of this generation, 0 = first (noisiest).
        num_steps: steps in this generation when the pipeline or ``cachekit.reset`` told us, else None.
        segment: index into ``CacheMethod.segments(...)``.
        branch: CFG branch key ("cond"/"uncond" from diffusers' ``cache_context``, else the call's
            position within the step: 0, 1, ...).
        leader: True for the first model call of the step; followers copy its decision.
        inputs: the segment's input streams, e.g. {"hidden_states": x, "encoder_hidden_states": c}.
        state: scratch dict of this method for this branch, emptied at every new generation.
    """

    step: int
    num_steps: int | None
    segment: int
    branch: Hashable
    leader: bool
    inputs: dict[str, torch.Tensor | None]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def main_stream(self) -> str:
        """Name of the first (main) stream: "hidden_states" in diffusers, "tgt" in torch layers."""
        return next(iter(self.inputs))

    @property
    def is_last_step(self) -> bool:
        return self.num_steps is not None and self.step >= self.num_steps - 1


class CacheMethod:
    """Base class. Subclasses override ``decide`` and, when they learn from computed steps,
    ``observe``. The default segmentation is the whole block stack as one unit.

    Class attributes:
        granularity: "block" (segments of whole blocks, residuals cached) or "unit" (sub-block
            units such as self-attention / cross-attention / FFN, outputs cached; ``decide`` is then
            asked per unit with ``ctx.segment`` = unit index).
    """

    granularity = "block"
    num_steps: int | None = None  # a method made for a fixed number of steps (calibrated plans)

    def __init__(self, config: Any) -> None:
        self.config = config

    def bind(self, model: Any, unit_names: tuple[str, ...]) -> None:
        """Called once by ``apply`` before any hook is installed; raise to refuse the model."""

    def check_num_steps(self, num_steps: int | None) -> None:
        """Raise when a generation of ``num_steps`` steps cannot be served (calibrated plans)."""

    def segments(self, num_blocks: int) -> Segments:
        return ((0, num_blocks),)

    def decide(self, ctx: UnitContext) -> bool:
        """True = recompute the segment, False = reuse its cached residual. Called by the leader
        branch only; the runtime forces a compute when nothing reusable is cached."""
        raise NotImplementedError

    @property
    def history_depth(self) -> int:
        """Cached tensors kept per segment/unit and branch (1 = plain reuse)."""
        from .forecast import history_depth

        return history_depth(getattr(self.config, "forecast", "none"), getattr(self.config, "forecast_order", 0))

    def reuse_weights(self, ctx: UnitContext, steps: tuple[int, ...]) -> tuple[float, ...]:
        """Weights of the cached tensors computed at ``steps`` (newest first) on a reuse step:
        the reused tensor is ``sum_i w_i * cached_i``. Default: the config's forecast; (1.0,) is
        plain reuse. Methods with fitted corrections (ERTACache) override this."""
        from .forecast import forecast_weights

        c = self.config
        return forecast_weights(getattr(c, "forecast", "none"), getattr(c, "forecast_order", 0), steps, ctx.step)

    def observe(self, ctx: UnitContext, outputs: Any) -> None:
        """Called after a segment was computed, with its output streams (a dict), or after a
        sub-block unit was computed, with its output (any branch)."""
