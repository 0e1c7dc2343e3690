"""Fixed-interval reuse of the whole block-stack residual (FORA / Delta-DiT style baseline).

Recompute at steps warmup, warmup+interval, ...; always in the first ``warmup`` and last
``final_steps`` steps; in between, add the residual (stack output - stack input) cached at the last
computed step to the current stack input.

``guard`` (sub-block units with a forecast): at each computed step the forecast is checked against
what was computed, on a probe (the last unit's output, 4096 evenly spaced elements): when the
forecast for this step would have missed by more than ``guard`` (relative L2 error), the next step
is computed too, and the interval counts from the last computed step. One device-to-host read per
computed step (global under context parallelism); nothing changes while forecasts hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import CacheConfig, ConfigError, register_method, spec
from .base import CacheMethod, StepContext
from .forecast import forecast_weights, history_depth

PROBE_ELEMENTS = 4096


def fixed_interval_compute(step: int, num_steps: int | None, interval: int, warmup: int,
                           final_steps: int) -> bool:
    """Pure decision rule: recompute at this step?"""
    if step < warmup:
        return True
    if num_steps is not None and step >= num_steps - final_steps:
        return True
    return (step - warmup) % interval == 0


def guarded_compute(step: int, num_steps: int | None, interval: int, warmup: int, final_steps: int,
                    last: int | None, missed: bool) -> bool:
    """Pure decision rule with the forecast guard: recompute at this step? ``last``: the last
    computed step (None: none yet); ``missed``: the forecast checked there missed by more than the
    guard."""
    if step <= warmup or last is None or missed:   # step == warmup: where the grid starts
        return True
    if num_steps is not None and step >= num_steps - final_steps:
        return True
    return step - last >= interval


def relative_error(forecast: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """[mean (f - a)^2, mean a^2] in fp32 on the device: the squared relative L2 error is their
    ratio (kept as means so ranks can combine them)."""
    f, a = forecast.float(), actual.float()
    return torch.stack([(f - a).pow(2).mean(), a.pow(2).mean()])


@dataclass(frozen=True)
class FixedIntervalConfig(CacheConfig):
    """Recompute every ``interval``-th step; reuse the cached stack residual in between.

    Args:
        interval: recompute every this many steps after warm-up; 1 = never reuse (bit-exact no-op).
        warmup: the first steps, always recomputed (early steps move the latent most).
        final_steps: the last steps, always recomputed (they set fine detail); needs the number of
            steps, known from a diffusers pipeline or ``cachekit.reset(module, num_steps=...)``.
        units: cache sub-block units (attention / FFN outputs, see docs/methods.md, "Sub-block units")
            instead of the block-stack residual: the blocks' norms, AdaLN modulation and gates
            still run every step on the current input, so a reused (or forecast) unit output is
            re-modulated for the current timestep. With ``forecast="taylor"`` this is TaylorSeer's
            scheme (arXiv 2503.06923).
        guard: with ``units`` and a forecast: the relative L2 error of the forecast, checked at each
            computed step on a probe, above which the next step is computed too (module doc); 0 =
            off (the fixed grid).

    Example:
        >>> import cachekit
        >>> cachekit.FixedIntervalConfig(interval=3, units=True, forecast="taylor").interval
        3
        >>> cachekit.FixedIntervalConfig(interval=0)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: FixedIntervalConfig.interval must be int >= 1, got 0
    """

    method = "fixed_interval"
    interval: int = spec(2, lo=1, help="recompute every N-th step")
    warmup: int = spec(1, lo=0, help="first steps always recomputed")
    final_steps: int = spec(1, lo=0, help="last steps always recomputed")
    units: bool = spec(False, help="cache sub-block units instead of the block-stack residual")
    guard: float = spec(0.0, lo=0.0, help="compute the next step when the forecast missed by more than this "
                                          "(relative L2 on a probe); 0 = off")

    def to_dict(self) -> dict:
        """As written in recipes; ``guard`` only when on (recipes written before it stay as they were)."""
        d = super().to_dict()
        if not self.guard:
            d["settings"].pop("guard")
        return d


@register_method(FixedIntervalConfig)
class FixedInterval(CacheMethod):
    def __init__(self, config: FixedIntervalConfig) -> None:
        super().__init__(config)
        self.granularity = "unit" if config.units else "block"
        if config.guard > 0 and (not config.units or config.forecast == "none"):
            raise ConfigError("FixedIntervalConfig.guard checks a forecast of sub-block units: it needs units=True "
                              "and forecast='taylor' or 'foca'")
        self.probe = -1

    def bind(self, model: object, columns: tuple[str, ...]) -> None:
        self.probe = len(columns) - 1   # the last unit: errors of earlier reuses reach it

    def decide(self, ctx: StepContext) -> bool:
        c = self.config
        if c.guard <= 0:
            return fixed_interval_compute(ctx.step, ctx.num_steps, c.interval, c.warmup, c.final_steps)
        s = ctx.state
        if s.get("decided", (None,))[0] != ctx.step:   # once per step: every unit follows it
            missed = False
            err = s.pop("error", None)
            if err is not None:   # the check of the last computed step, read now (one read per computed step)
                sq, ref = ctx.read(err, s.pop("error_n"))
                missed = ref > 0 and sq / ref > c.guard ** 2
            s["decided"] = (ctx.step, guarded_compute(ctx.step, ctx.num_steps, c.interval, c.warmup, c.final_steps,
                                                      s.get("last"), missed))
        return s["decided"][1]

    def observe_unit(self, ctx: StepContext, output: object) -> None:
        if self.config.guard <= 0 or not ctx.leader:
            return
        s = ctx.state
        s["last"] = ctx.step
        if ctx.index != self.probe:
            return
        out = output[0] if isinstance(output, (tuple, list)) else output
        flat = out.detach().reshape(-1)
        probe = flat[:: max(1, flat.numel() // PROBE_ELEMENTS)][:PROBE_ELEMENTS].float().clone()
        history = s.setdefault("probe", [])   # (step, sample), newest first
        c = self.config
        if history and ctx.step >= c.warmup and history[0][1].shape == probe.shape:
            steps = tuple(t for t, _ in history)
            w = forecast_weights(c.forecast, c.forecast_order, steps, ctx.step)
            forecast = sum(wi * h for wi, (_, h) in zip(w, history))
            s["error"], s["error_n"] = relative_error(forecast, probe), probe.numel()
        history.insert(0, (ctx.step, probe))
        del history[history_depth(c.forecast, c.forecast_order):]
