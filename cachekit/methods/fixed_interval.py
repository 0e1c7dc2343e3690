"""Fixed-interval reuse of the whole block-stack residual (FORA / Delta-DiT style baseline).

Recompute at steps warmup, warmup+interval, ...; always in the first ``warmup`` and last
``final_steps`` steps; in between, add the residual (stack output - stack input) cached at the last
computed step to the current stack input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import CacheConfig, register_method, spec
from .base import CacheMethod, StepContext


def fixed_interval_compute(step: int, num_steps: int | None, interval: int, warmup: int,
                           final_steps: int) -> bool:
    """Pure decision rule: recompute at this step?"""
    if step < warmup:
        return True
    if num_steps is not None and step >= num_steps - final_steps:
        return True
    return (step - warmup) % interval == 0


@dataclass(frozen=True)
class FixedIntervalConfig(CacheConfig):
    """Recompute every ``interval``-th step; reuse the cached stack residual in between.

    Args:
        interval: recompute every this many steps after warm-up; 1 = never reuse (bit-exact no-op).
        warmup: the first steps, always recomputed (early steps move the latent most).
        final_steps: the last steps, always recomputed (they set fine detail); needs the number of
            steps, known from a diffusers pipeline or ``cachekit.reset(module, num_steps=...)``.
        units: cache sub-block units (attention / FFN outputs, see README "Sub-block units")
            instead of the block-stack residual: the blocks' norms, AdaLN modulation and gates
            still run every step on the current input, so a reused (or forecast) unit output is
            re-modulated for the current timestep. With ``forecast="taylor"`` this is TaylorSeer's
            scheme (arXiv 2503.06923).
    """

    method = "fixed_interval"
    interval: int = spec(2, lo=1, help="recompute every N-th step")
    warmup: int = spec(1, lo=0, help="first steps always recomputed")
    final_steps: int = spec(1, lo=0, help="last steps always recomputed")
    units: bool = spec(False, help="cache sub-block units instead of the block-stack residual")


@register_method(FixedIntervalConfig)
class FixedInterval(CacheMethod):
    def __init__(self, config: FixedIntervalConfig) -> None:
        super().__init__(config)
        self.granularity = "unit" if config.units else "block"

    def decide(self, ctx: StepContext) -> bool:
        c = self.config
        return fixed_interval_compute(ctx.step, ctx.num_steps, c.interval, c.warmup, c.final_steps)
