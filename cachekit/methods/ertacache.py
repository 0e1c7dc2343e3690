"""ERTACache (arXiv 2508.21091; no public code, so the parameterisation here is ours).

Offline, ``cachekit calibrate --method ertacache`` runs the model uncached on calibration inputs and
records the block stack's residual R_t (stack output - stack input) at every step and CFG branch.
From that recording, pure functions in ``cachekit.planning.ertacache``:

1. *Residual profiling -> one static reuse set.* Reusing the residual cached at step a for step t
   leaves, after the best scalar rescaling, the relative squared error 1 - cos^2(R_a, R_t) (averaged
   over runs and branches). A dynamic program (BAC's scheduler, ``acs_schedule``, on the negated
   errors) picks the K computed steps that minimise the summed error; every other step is reused.
   K comes from a budget (computed fraction) or is the smallest K whose fitted error stays under a
   bound.
2. *Trajectory-aware timestep adjustment.* A per-step coefficient gamma_t multiplies the reused
   residual. The paper rescales the sampler's step on reuse steps; for a first-order Euler sampler
   on a velocity (flow matching: x <- x + (sigma_next - sigma) v) scaling the reused model output by
   gamma is exactly stepping gamma times as far. Here gamma scales the reused *stack residual*
   (what cachekit caches), which equals scaling the model output only when the output layer is
   linear and the stack input's share of the output is small; for DDIM / DDPM on epsilon the
   update is not linear in the interval, so gamma is a fitted correction, not a rescaled interval.
3. *Residual linearisation.* The reuse error e_t = R_t - gamma_t R_a is modelled as linear in the
   cached residuals, beta_t (R_a - R_a'), with a' the computed step before a. gamma_t and beta_t
   are fitted together by closed-form least squares over all recorded elements (``fit_linear``,
   equal to ``numpy.linalg.lstsq``).

At run time a reuse step t puts ``(gamma_t + beta_t) R_a - beta_t R_a'`` in place of the stack's
blocks: one fused pass (``cachekit.kernels.reuse``). The plan is static: no host sync at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..config import CacheConfig, ConfigError, register_method, spec
from .base import CacheMethod, StepContext


# ---- the runtime rule ---------------------------------------------------------------------------
def anchors(computed: Sequence[int], t: int) -> tuple[int, int | None]:
    """The last computed step before t and the one before it (None when there is none)."""
    before = [s for s in computed if s < t]
    return before[-1], (before[-2] if len(before) > 1 else None)


# ---- config and method ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ERTACacheConfig(CacheConfig):
    """Apply a calibrated ERTACache plan: a static reuse set with fitted per-step corrections.

    Args:
        reuse_steps: steps at which the whole block stack is reused; empty = never reuse
            (bit-exact no-op).
        coefficients: per reuse step, (step, gamma, beta): the reused residual is
            gamma R_a + beta (R_a - R_a') with a, a' the last two computed steps.
        correction: "linear" uses gamma and beta; "scale" uses gamma only (timestep adjustment
            alone); "none" reuses R_a as it is (then ``forecast`` applies, as for other methods).
        num_steps: the number of denoising steps the plan was calibrated for.
        model: fingerprint of the calibrated model (empty to skip the check).

    Example:
        >>> import cachekit
        >>> cfg = cachekit.ERTACacheConfig(reuse_steps=(2, 3), coefficients=((2, 1.0, 0.5), (3, 0.9, 1.0)),
        ...                                num_steps=5)
        >>> cfg.computed_fraction
        0.6
        >>> settings = cfg.to_dict()["settings"]     # as a recipe writes it
        >>> settings["coefficients"]                # step -> (gamma, beta)
        {2: [1.0, 0.5], 3: [0.9, 1.0]}
    """

    method = "ertacache"
    reuse_steps: tuple = spec((), help="steps reusing the cached stack residual")
    coefficients: tuple = spec((), help="(step, gamma, beta) per reuse step")
    correction: str = spec("linear", choices=("linear", "scale", "none"), help="fitted terms used")
    num_steps: int = spec(1, lo=1, help="steps the plan was made for")
    model: str = spec("", help="model fingerprint")

    def check(self) -> None:
        steps = self.reuse_steps
        if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
            raise ConfigError(f"ERTACacheConfig.reuse_steps must be a list of step indices, got {steps!r}")
        steps = tuple(sorted(set(steps)))
        if steps and (steps[0] < 1 or steps[-1] >= self.num_steps):
            raise ConfigError(f"ERTACacheConfig.reuse_steps must lie in 1..{self.num_steps - 1} (step 0 is always "
                              f"computed), got {list(steps)}")
        coefs = []
        raw = self.coefficients.items() if isinstance(self.coefficients, dict) else self.coefficients
        for entry in raw:
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], (list, tuple)):
                entry = (entry[0], *entry[1])   # YAML mapping form {step: [gamma, beta]}
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], int)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry[1:])):
                raise ConfigError(f"ERTACacheConfig.coefficients entries must be (step, gamma, beta), got {entry!r}")
            if entry[0] not in steps:
                raise ConfigError(f"ERTACacheConfig.coefficients: step {entry[0]} is not a reuse step")
            coefs.append((int(entry[0]), float(entry[1]), float(entry[2])))
        object.__setattr__(self, "reuse_steps", steps)
        object.__setattr__(self, "coefficients", tuple(sorted(coefs)))

    @property
    def computed_fraction(self) -> float:
        return 1.0 - len(self.reuse_steps) / self.num_steps

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "settings": {
            "reuse_steps": list(self.reuse_steps),
            "coefficients": {s: [g, b] for s, g, b in self.coefficients},
            "correction": self.correction, "num_steps": self.num_steps, "model": self.model,
            **self.forecast_settings()}}


@register_method(ERTACacheConfig)
class ERTACache(CacheMethod):
    def __init__(self, config: ERTACacheConfig) -> None:
        super().__init__(config)
        # an empty plan reuses nothing and fits any step count (ERTACacheConfig() is a no-op)
        self.num_steps = config.num_steps if config.reuse_steps else None
        self._reuse = frozenset(config.reuse_steps)
        computed = [s for s in range(config.num_steps) if s not in self._reuse]
        self._coef = {s: (g, b, anchors(computed, s)) for s, g, b in config.coefficients}

    @property
    def history_depth(self) -> int:
        return 2 if self.config.correction == "linear" else (1 if self.config.correction == "scale"
                                                             else super().history_depth)

    def bind(self, model: Any, unit_names: tuple[str, ...]) -> None:
        from ..adapters import model_fingerprint

        if self.config.model and model_fingerprint(model) != self.config.model:
            raise ConfigError(f"ERTACache plan was calibrated on {self.config.model}, this model is "
                              f"{model_fingerprint(model)}; calibrate it anew (cachekit calibrate --method ertacache)")

    def check_num_steps(self, num_steps: int | None) -> None:
        if num_steps is not None and self.num_steps is not None and num_steps != self.num_steps:
            raise ConfigError(f"ERTACache plan was calibrated for {self.num_steps} steps; this generation has "
                              f"{num_steps}: calibrate for {num_steps} steps")

    def decide(self, ctx: StepContext) -> bool:
        return ctx.step not in self._reuse

    def reuse_weights(self, ctx: StepContext, steps: tuple[int, ...]) -> tuple[float, ...]:
        if self.config.correction == "none":
            return super().reuse_weights(ctx, steps)
        entry = self._coef.get(ctx.step)
        if entry is None:
            return (1.0,)
        gamma, beta, (a, b) = entry
        if not steps or steps[0] != a:
            return (1.0,)  # the runtime computed another step than planned (e.g. a shape change)
        if self.config.correction == "scale" or b is None or beta == 0.0 or len(steps) < 2 or steps[1] != b:
            return (gamma,)
        return (gamma + beta, -beta)
