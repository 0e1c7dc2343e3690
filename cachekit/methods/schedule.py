"""A fixed list of computed steps: the plans of ``cachekit.planning.lemica`` (or any hand-written
list, e.g. LeMiCa's published Wan2.1 one), with every other step reused (held, forecast, whole
stack or sub-block units, as the config says).

A plan is made for ``num_steps`` steps. A generation of another length (another
``num_inference_steps``, or img2img starting later in the schedule) gets the plan resampled on the
normalised time axis: the computed steps' positions ``c / (T - 1)`` are interpolated to as many
computed steps as keep the plan's computed fraction, with a warning naming both lengths
(``on_length_mismatch="resample"``, the default), or the generation is refused with a one-line
error (``"refuse"``). Never silently misaligned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..config import CacheConfig, ConfigError, register_method, spec
from .base import CacheMethod, StepContext


# ---- pure rules ---------------------------------------------------------------------------------
def resample_steps(steps: Sequence[int], num_steps: int, new_steps: int, *, last: bool | None = None) -> tuple[int, ...]:
    """The computed steps of a ``num_steps``-step plan for a ``new_steps``-step generation.

    Positions on the normalised axis ``s / (num_steps - 1)`` are interpolated (piecewise linearly,
    in the order of the computed steps) at ``round(len(steps) * new_steps / num_steps)`` evenly
    spaced ranks, so the plan keeps its shape (dense early, sparse late) and its computed fraction.
    Step 0 is always computed; the last step is computed when the plan computes its last step
    (``last``, default: taken from the plan).
    """
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] != 0:
        raise ValueError(f"resample_steps: a plan computes step 0, got {steps}")
    if new_steps < 1:
        raise ValueError(f"resample_steps: new_steps must be >= 1, got {new_steps}")
    if new_steps == num_steps:
        return tuple(steps)
    if last is None:
        last = steps[-1] == num_steps - 1
    if new_steps == 1 or num_steps == 1:
        return (0,)
    pos = np.array(steps, dtype=np.float64) / (num_steps - 1)
    k = max(1 + int(last), min(new_steps, int(round(len(steps) * new_steps / num_steps))))
    ranks = np.linspace(0.0, len(steps) - 1, k)
    new_pos = np.interp(ranks, np.arange(len(steps)), pos)
    out = sorted(set(int(round(p * (new_steps - 1))) for p in new_pos) | {0})
    if last:
        out = sorted(set(out) | {new_steps - 1})
    elif out[-1] == new_steps - 1 and new_steps > 1:
        out = out[:-1] or [0]
    return tuple(out)


def schedule_compute(step: int, computed: frozenset) -> bool:
    """Pure decision rule: compute at this step?"""
    return step in computed


def checked_steps(owner: str, steps: Any, num_steps: int) -> tuple[int, ...]:
    """A config's computed steps, sorted and unique; ConfigError unless they include step 0 and lie
    in 0..num_steps-1 (ScheduleConfig, CacheQuantConfig)."""
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ConfigError(f"{owner}.compute_steps must be a list of step indices, got {steps!r}")
    steps = tuple(sorted(set(steps)))
    if not steps or steps[0] != 0 or steps[-1] >= num_steps:
        raise ConfigError(f"{owner}.compute_steps must include step 0 and lie in 0..{num_steps - 1}, got {list(steps)}")
    return steps


# ---- config and method ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleConfig(CacheConfig):
    """Compute the listed steps; reuse (or forecast) the cached tensors at every other step.

    Args:
        compute_steps: steps computed in full; must include step 0.
        num_steps: the number of denoising steps the list was made for.
        units: cache sub-block units (re-modulated each step) instead of the block-stack residual.
        on_length_mismatch: "resample" (with a warning) or "refuse" a generation of another length.
        model: fingerprint of the model the plan was made on (empty: no check).

    Example:
        >>> import cachekit
        >>> cachekit.ScheduleConfig(compute_steps=(0, 2, 4), num_steps=6).compute_steps
        (0, 2, 4)
    """

    method = "schedule"
    compute_steps: tuple = spec((0,), help="steps computed in full")
    num_steps: int = spec(1, lo=1, help="steps the plan was made for")
    units: bool = spec(False, help="cache sub-block units instead of the block-stack residual")
    on_length_mismatch: str = spec("resample", choices=("resample", "refuse"),
                                   help="another number of steps: resample (warn) or refuse")
    model: str = spec("", help="model fingerprint")

    def check(self) -> None:
        steps = checked_steps("ScheduleConfig", self.compute_steps, self.num_steps)
        object.__setattr__(self, "compute_steps", steps)

    @property
    def computed_fraction(self) -> float:
        return len(self.compute_steps) / self.num_steps

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": {
            "compute_steps": list(self.compute_steps), "num_steps": self.num_steps, "units": self.units,
            "on_length_mismatch": self.on_length_mismatch, "model": self.model, **self.forecast_settings()}}


@register_method(ScheduleConfig)
class Schedule(CacheMethod):
    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        self.granularity = "unit" if config.units else "block"
        self.num_steps = config.num_steps
        self._plans: dict[int, frozenset] = {config.num_steps: frozenset(config.compute_steps)}

    def bind(self, model: Any, columns: tuple[str, ...]) -> None:
        from ..adapters import model_fingerprint

        if self.config.model and model_fingerprint(model) != self.config.model:
            raise ConfigError(f"schedule was planned on {self.config.model}, this model is {model_fingerprint(model)}; "
                              f"plan it anew (cachekit calibrate --method lemica) or set model: '' to use it anyway")

    def plan_for(self, num_steps: int | None) -> frozenset:
        """The computed steps for a generation of ``num_steps`` steps (resampled, warned once per length)."""
        if num_steps is None:
            num_steps = self.config.num_steps
        plan = self._plans.get(num_steps)
        if plan is None:
            c = self.config
            if c.on_length_mismatch == "refuse":
                raise ConfigError(f"schedule was made for {c.num_steps} steps; this generation has {num_steps} "
                                  f"(on_length_mismatch='refuse'): plan it for {num_steps} steps")
            plan = self._plans[num_steps] = frozenset(resample_steps(c.compute_steps, c.num_steps, num_steps))
            warnings.warn(f"cachekit: schedule made for {c.num_steps} steps resampled to {num_steps} steps "
                          f"({len(plan)} computed: {sorted(plan)})", stacklevel=2)
        return plan

    def check_num_steps(self, num_steps: int | None) -> None:
        self.plan_for(num_steps)

    def decide(self, ctx: StepContext) -> bool:
        return schedule_compute(ctx.step, self.plan_for(ctx.num_steps))
