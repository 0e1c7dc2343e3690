"""``cachekit.stats``: what a generation did, read off its books."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .state import Generation


@dataclass(frozen=True)
class CacheStats:
    """What the last generation did.

    Attributes:
        computed_fraction: block evaluations run / block evaluations of an uncached run; its
            inverse is the ideal speedup of the block stack.
        plan: bool array (model calls x blocks), True where a block was computed.
        steps: denoising step of each model call.
        branches: CFG branch of each model call.
        num_steps: steps of the generation when known.
        block_names: dotted name of each block, the plan's columns.
        host_reads: device-to-host reads of statistics that decisions took (EasyCache: one per
            step after warm-up; step-indexed methods: none).
        collectives: all-reduces issued for them: one per read under context parallelism, else 0.
        cached_bytes: memory held at the end of the generation by its cache (with forecasting:
            every cached step kept), all CFG branches, and the method's own tensors; for a
            generation whose cache was released when it ended, what it held then.
        skipped: (call, block or unit) pairs the model itself did not run (WanAnimate2 skips a
            block in its unconditional call): neither computed nor reused, left out of the fraction.
        shape_changes: block ranges recomputed because a stream changed shape inside them while
            their cache was being filled (nothing reusable was kept; warned once per apply).
    """

    computed_fraction: float
    plan: np.ndarray
    steps: np.ndarray
    branches: tuple
    num_steps: int | None
    block_names: tuple[str, ...]
    cached_bytes: int = 0
    host_reads: int = 0
    collectives: int = 0
    skipped: int = 0
    shape_changes: int = 0

    @property
    def num_calls(self) -> int:
        return int(self.plan.shape[0])

    @classmethod
    def from_generation(cls, gen: Generation | None, block_names: tuple[str, ...]) -> "CacheStats":
        calls = gen.calls if gen is not None else []
        plan = (np.stack([c.computed for c in calls]) if calls
                else np.zeros((0, len(block_names)), dtype=bool))
        reused = (np.stack([c.reused if c.reused is not None else ~c.computed for c in calls]) if calls
                  else np.zeros_like(plan))
        ran = plan | reused   # a column the model skipped in a call (neither) is not counted
        return cls(
            computed_fraction=float(plan.sum() / ran.sum()) if ran.any() else 1.0,
            plan=plan,
            steps=np.array([c.step for c in calls], dtype=np.int64),
            branches=tuple(c.branch for c in calls),
            num_steps=gen.num_steps if gen is not None else None,
            block_names=block_names,
            cached_bytes=gen.cached_bytes() if gen is not None else 0,
            host_reads=gen.host_reads if gen is not None else 0,
            collectives=gen.collectives if gen is not None else 0,
            skipped=int((~ran).sum()),
            shape_changes=gen.shape_changes if gen is not None else 0,
        )
