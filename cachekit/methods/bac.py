"""BAC (arXiv 2506.13456): a static per-unit recompute plan, calibrated offline.

Units are sub-blocks (self-attention, cross-attention, FFN); on a reuse step a unit returns the
output it produced at its last update step, and the block adds it to the residual stream as usual.
The plan comes from ``cachekit calibrate`` (``cachekit.record`` then ``cachekit.planning.plan_bac``):
the Adaptive Caching Scheduler per unit plus Bubbling Union. A plan holds for the model
and the number of steps it was calibrated on; anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import CacheConfig, ConfigError, register_method, spec
from .base import CacheMethod, StepContext


@dataclass(frozen=True)
class BACConfig(CacheConfig):
    """Apply a calibrated BAC plan.

    Args:
        plan: for each unit name (e.g. "decoder.layers.0.ffn"), the steps at which it is
            recomputed; a mapping in YAML, stored as a tuple of (name, steps) pairs.
        num_steps: the number of denoising steps the plan was calibrated for.
        model: fingerprint of the calibrated model (class name and architecture hash); empty to
            skip the check.

    Example:
        >>> import cachekit
        >>> cfg = cachekit.BACConfig(plan={"blocks.0.attn": [3, 0], "blocks.0.ffn": [0, 2, 3]}, num_steps=4)
        >>> cfg.plan      # (unit, steps) pairs, steps sorted
        (('blocks.0.attn', (0, 3)), ('blocks.0.ffn', (0, 2, 3)))
        >>> cachekit.BACConfig(plan={"blocks.0.attn": [1, 2]}, num_steps=4)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: BACConfig.plan['blocks.0.attn'] must start at step 0 and stay below num_steps=4, got [1, 2]
    """

    method = "bac"
    plan: tuple = spec((), help="unit name -> recompute steps")
    num_steps: int = spec(1, lo=1, help="steps the plan was made for")
    model: str = spec("", help="model fingerprint")

    def check(self) -> None:
        raw = self.plan
        items = list(raw.items()) if isinstance(raw, dict) else list(raw)
        if not items:
            raise ConfigError("BACConfig.plan must map unit names to recompute steps; it is empty")
        out = []
        for entry in items:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise ConfigError(f"BACConfig.plan entries must be (unit name, steps), got {entry!r}")
            name, steps = entry
            if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
                raise ConfigError(f"BACConfig.plan[{name!r}] must be a list of step indices, got {steps!r}")
            steps = tuple(sorted(set(steps)))
            if not steps or steps[0] != 0 or steps[-1] >= self.num_steps:
                raise ConfigError(f"BACConfig.plan[{name!r}] must start at step 0 and stay below num_steps="
                                  f"{self.num_steps}, got {list(steps)}")
            out.append((name, steps))
        object.__setattr__(self, "plan", tuple(out))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": {"plan": {n: list(s) for n, s in self.plan},
                                                    "num_steps": self.num_steps, "model": self.model, **self.forecast_settings()}}


@register_method(BACConfig)
class BAC(CacheMethod):
    granularity = "unit"

    def __init__(self, config: BACConfig) -> None:
        super().__init__(config)
        self.num_steps = config.num_steps
        self._steps: list[frozenset[int]] = []

    def bind(self, model: Any, unit_names: tuple[str, ...]) -> None:
        from ..adapters import model_fingerprint

        c = self.config
        if c.model and model_fingerprint(model) != c.model:
            raise ConfigError(f"BAC plan was calibrated on {c.model}, this model is {model_fingerprint(model)}; "
                              f"calibrate it anew (cachekit calibrate)")
        plan = dict(c.plan)
        missing, extra = [u for u in unit_names if u not in plan], [u for u in plan if u not in unit_names]
        if missing or extra:
            raise ConfigError(f"BAC plan units do not match the model: missing {missing[:3]}, unknown {extra[:3]}")
        self._steps = [frozenset(plan[u]) for u in unit_names]

    def check_num_steps(self, num_steps: int | None) -> None:
        if num_steps is not None and num_steps != self.num_steps:
            raise ConfigError(f"BAC plan was calibrated for {self.num_steps} steps; this generation has "
                              f"{num_steps}: calibrate for {num_steps} steps")

    def decide(self, ctx: StepContext) -> bool:
        return ctx.step in self._steps[ctx.index]
