"""CacheQuant (arXiv 2503.01323): a calibrated schedule with a per-channel correction of reuse steps.

Made by ``cachekit.planning.plan_cachequant`` from stack recordings of the quantized model and of
the full-precision one (what is the paper's and what is ours: that module's docstring). At run time
the block stack computes at ``compute_steps``; on every other step it reuses the last computed
residual (or its forecast) r and puts ``scale * r + shift`` in its place, one scale and shift per
channel (last dimension) of the main stream, fitted for that step. Static: no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import CacheConfig, ConfigError, register_method, spec
from .base import CacheMethod, StepContext
from .schedule import checked_steps, schedule_compute


@dataclass(frozen=True)
class CacheQuantConfig(CacheConfig):
    """Apply a CacheQuant plan: computed steps and a per-channel correction per reuse step.

    Args:
        compute_steps: steps computed in full; must include step 0.
        num_steps: the number of steps the plan was made for (other lengths are refused: the
            correction is per step).
        correction: per reuse step, (step, scales, shifts): one scale and shift per channel of the
            main stream; empty = plain reuse (or the forecast) on reuse steps.
        units: cache sub-block units on the same schedule instead of the stack's residual (the
            correction is fitted on the stack's residual, so it must then be empty).
        model: fingerprint of the calibrated model (empty to skip the check).

    Example:
        >>> import cachekit
        >>> c = cachekit.CacheQuantConfig(compute_steps=(0, 2, 3), num_steps=4, correction=((1, (1.0, 0.9), (0.0, 0.1)),))
        >>> step, scales, shifts = c.correction[0]      # one entry per reuse step
        >>> c.computed_fraction, step, scales
        (0.75, 1, (1.0, 0.9))
    """

    method = "cachequant"
    compute_steps: tuple = spec((0,), help="steps computed in full")
    num_steps: int = spec(1, lo=1, help="steps the plan was made for")
    correction: tuple = spec((), help="(step, scales, shifts) per reuse step")
    units: bool = spec(False, help="cache sub-block units (then without a correction)")
    model: str = spec("", help="model fingerprint")

    def check(self) -> None:
        steps = checked_steps("CacheQuantConfig", self.compute_steps, self.num_steps)
        entries, width = [], None
        raw = self.correction.items() if isinstance(self.correction, dict) else self.correction
        for entry in raw:
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], (list, tuple)):
                entry = (entry[0], *entry[1])   # YAML mapping form {step: [scales, shifts]}
            ok = (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], int)
                  and all(isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                  for x in v) for v in entry[1:])
                  and len(entry[1]) == len(entry[2]))
            if not ok:
                raise ConfigError(f"CacheQuantConfig.correction entries must be (step, scales, shifts) with one scale and "
                                  f"shift per channel, got {str(entry)[:80]}")
            if entry[0] in steps or not 0 < entry[0] < self.num_steps:
                raise ConfigError(f"CacheQuantConfig.correction: step {entry[0]} is not a reuse step")
            if width is not None and len(entry[1]) != width:
                raise ConfigError(f"CacheQuantConfig.correction: step {entry[0]} has {len(entry[1])} channels, others {width}")
            width = len(entry[1])
            entries.append((int(entry[0]), tuple(float(x) for x in entry[1]), tuple(float(x) for x in entry[2])))
        if entries and self.units:
            raise ConfigError("CacheQuantConfig.correction is fitted on the stack's residual: it needs units=False")
        object.__setattr__(self, "compute_steps", steps)
        object.__setattr__(self, "correction", tuple(sorted(entries)))

    @property
    def computed_fraction(self) -> float:
        return len(self.compute_steps) / self.num_steps

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": {
            "compute_steps": list(self.compute_steps), "num_steps": self.num_steps,
            "correction": {s: [list(a), list(b)] for s, a, b in self.correction}, "units": self.units,
            "model": self.model,
            **self.forecast_settings()}}


@register_method(CacheQuantConfig)
class CacheQuant(CacheMethod):
    def __init__(self, config: CacheQuantConfig) -> None:
        super().__init__(config)
        self.granularity = "unit" if config.units else "block"
        # a plan computing every step (CacheQuantConfig() among them) is a no-op for any length
        self._all = len(config.compute_steps) == config.num_steps
        self.num_steps = None if self._all else config.num_steps
        self._computed = frozenset(config.compute_steps)
        self._correction = {s: (torch.tensor(a), torch.tensor(b)) for s, a, b in config.correction}
        self._on: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}   # per (step, device, dtype)

    def bind(self, model: Any, columns: tuple[str, ...]) -> None:
        from ..adapters import model_fingerprint

        if self.config.model and model_fingerprint(model) != self.config.model:
            raise ConfigError(f"CacheQuant plan was calibrated on {self.config.model}, this model is "
                              f"{model_fingerprint(model)}; calibrate it anew (cachekit.calibrate(..., 'cachequant'))")

    def check_num_steps(self, num_steps: int | None) -> None:
        if num_steps is not None and self.num_steps is not None and num_steps != self.num_steps:
            raise ConfigError(f"CacheQuant plan was calibrated for {self.num_steps} steps; this generation has "
                              f"{num_steps}: calibrate for {num_steps} steps")

    def decide(self, ctx: StepContext) -> bool:
        return self._all or schedule_compute(ctx.step, self._computed)

    def reuse_correction(self, ctx: StepContext, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self._correction.get(ctx.step)
        if entry is None:
            return None
        if like.shape[-1] != entry[0].numel():
            raise ConfigError(f"CacheQuant correction has {entry[0].numel()} channels, this model's stack residual "
                              f"{like.shape[-1]}: calibrate it anew on this model")
        key = (ctx.step, like.device, like.dtype)
        if key not in self._on:
            self._on[key] = (entry[0].to(like.device, like.dtype), entry[1].to(like.device, like.dtype))
        return self._on[key]
