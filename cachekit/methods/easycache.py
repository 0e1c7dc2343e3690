"""EasyCache (arXiv 2507.02860): runtime-adaptive reuse, no calibration.

The paper caches the whole-model transformation v - x. cachekit applies the same rule to the block
stack (x = stack input, v = stack output), so models whose output has another shape than their input
(DiT/PixArt predict a variance channel too) are covered, and the cheap embedding and output layers
still run every step.

At a computed step i (previous computed step i'): k = mean|v_i - v_i'| / mean|x_i - x_i'|.
At a later step t: eps_t = k * mean|x_t - x_{t-1}| / mean|v_i|; E += eps_t; reuse while E < tau,
else recompute and set E = 0. The first ``warmup`` steps and the last step are always computed; k
needs two computed steps. The decision is taken on the first (conditional) call of a step and the
other CFG branch follows it, each branch keeping its own cached residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import CacheConfig, register_method, spec
from ..kernels import drift_stats
from .base import CacheMethod, ScratchTensors, SegmentContext, SegmentOutput


def transformation_rate(output_change: float, input_change: float) -> float:
    """k = mean|v_i - v_i'| / mean|x_i - x_i'|; inf when the input did not move (any later input
    change then forces a recompute)."""
    if input_change == 0.0:
        return math.inf if output_change > 0.0 else 0.0
    return output_change / input_change


def easycache_compute(step: int, num_steps: int | None, *, threshold: float, warmup: int,
                      rate: float | None, accumulated: float, input_change: float,
                      output_scale: float) -> tuple[bool, float]:
    """Pure decision rule. Returns (recompute?, new accumulated error E).

    Args:
        rate: transformation rate k, None until two steps were computed.
        accumulated: E before this step.
        input_change: mean|x_t - x_{t-1}|.
        output_scale: mean|v_i| at the last computed step.
    """
    if step < warmup or rate is None or (num_steps is not None and step >= num_steps - 1):
        return True, 0.0
    if input_change == 0.0:
        eps = 0.0
    elif output_scale == 0.0 or math.isinf(rate):
        eps = math.inf
    else:
        eps = rate * input_change / output_scale
    total = accumulated + eps
    if total < threshold:
        return False, total
    return True, 0.0


@dataclass(frozen=True)
class EasyCacheConfig(CacheConfig):
    """EasyCache: reuse while the predicted accumulated change stays under ``threshold``.

    Args:
        threshold: tau, the accumulated relative change allowed before a recompute; 0 = never reuse
            (bit-exact no-op). Official defaults: Wan2.1 0.05, HunyuanVideo 0.025.
        warmup: R, the first steps always computed (official: 10 of 50 on Wan2.1, 5 of 50 on
            HunyuanVideo); at least 2 are needed to know the transformation rate.

    Example:
        >>> import cachekit
        >>> cachekit.EasyCacheConfig(threshold=0.05, forecast="taylor").threshold
        0.05
        >>> cachekit.EasyCacheConfig(threshold=-1)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: EasyCacheConfig.threshold must be float >= 0.0, got -1
    """

    method = "easycache"
    threshold: float = spec(0.05, lo=0.0, help="accumulated change allowed before recompute")
    warmup: int = spec(3, lo=0, help="first steps always recomputed")


@register_method(EasyCacheConfig)
class EasyCache(CacheMethod):
    """The rule above, with its statistics kept on the device: ``observe`` leaves them as one small
    tensor and ``decide`` reads it back together with the input change in one ``.tolist()``, so a
    step costs at most one device-to-host sync (none in warm-up and at the last step, where the rule
    never reuses). Read eagerly, the same rule took four syncs per computed step."""

    def scratch_tensors(self) -> tuple[ScratchTensors, ...]:
        # x_last / v_last stay after the last (computed) step; prev_x only serves the next decision
        return (ScratchTensors("EasyCache: last computed stack input and output", 2),
                ScratchTensors("EasyCache: newest stack input", 1, held_at_end=False))

    def decide(self, ctx: SegmentContext) -> bool:  # type: ignore[override]  # block path: always a SegmentContext
        st, x = ctx.state, ctx.inputs[ctx.main_stream]
        prev = st.get("prev_x")
        st["prev_x"] = x
        c = self.config
        if ctx.step < c.warmup or ctx.is_last_step:  # computed whatever the statistics say
            return True
        change = drift_stats(x, prev)[:1] if prev is not None and prev.shape == x.shape else None
        input_change = self._read(ctx, st, change)  # sets k and v_scale: read before they are used
        compute, st["E"] = easycache_compute(
            ctx.step, ctx.num_steps, threshold=c.threshold, warmup=c.warmup, rate=st.get("k"),
            accumulated=st.get("E", 0.0), input_change=input_change, output_scale=st.get("v_scale", 0.0))
        return compute

    def observe(self, ctx: SegmentContext, computed: SegmentOutput) -> None:
        if not ctx.leader:
            return  # followers reuse the leader's decisions; they need no rate of their own
        st, x, v = ctx.state, ctx.inputs[ctx.main_stream], computed.outputs[ctx.main_stream]
        if st.get("x_last") is not None and st["x_last"].shape == x.shape:
            # [mean|v' - v|, mean|v|, mean|x - x'|]: output change, output scale, input change
            st["pending"] = torch.cat([drift_stats(st["v_last"], v), drift_stats(x, st["x_last"])[:1]])
        else:
            st["pending"] = drift_stats(v, v)[1:]  # [mean|v|]
        st["x_last"], st["v_last"], st["E"] = x, v, 0.0

    @staticmethod
    def _read(ctx: SegmentContext, st: dict, change: torch.Tensor | None) -> float:
        """The one device-to-host read of a step: the input change mean|x_t - x_{t-1}| (returned)
        and the statistics ``observe`` left on the device, which set ``v_scale`` and the rate ``k``."""
        pending = st.pop("pending", None)
        parts = [p for p in (change, pending) if p is not None]
        values = ctx.read(torch.cat(parts)) if parts else []   # global under context parallelism
        input_change = values.pop(0) if change is not None else 0.0
        if len(values) == 3:
            output_change, st["v_scale"], last_input_change = values
            st["k"] = transformation_rate(output_change, last_input_change)
        elif values:
            st["v_scale"] = values[0]
        return input_change
