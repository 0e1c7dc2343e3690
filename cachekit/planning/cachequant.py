"""CacheQuant's schedule and error correction, as pure functions of stack recordings.

CacheQuant (Liu, Li, Gu, CVPR 2025, arXiv 2503.01323) caches and quantizes together. Two parts, as
its code (github.com/BienLuky/CacheQuant) does them on a UNet's deep feature:

- *Dynamic Programming Schedule (DPS)*: split the T steps into K groups; a group computes at its
  first step and reuses that feature for the rest; choose the group starts that minimise the summed
  L1 distance between the reused feature and the true one (recorded on the full-precision model).
- *Decoupled Error Correction (DEC)*: per step and channel, a least-squares line from the reused
  feature to the true one (a, b = Cov(x, y) / Var(x), mean(y) - a mean(x)); a second such line
  corrects the quantized layer that reads the cached feature, folded into its weights.

What is ours, for DiTs whose reused tensor is the block stack's residual (``level="stack"``):

- the schedule's cost compares the *quantized* model's residual at the computed step with the
  *full-precision* model's at the reused step (``reference=``, a recording of the model before it
  was quantized, on the same inputs), so the quantization error is in the objective; the paper's
  features are full-precision only. Without a reference the quantized model's own steps are used.
- one per-channel correction of the combined (cache + quantization) error on reuse steps, applied
  to the reused residual (or its Taylor forecast) at run time, instead of two: the stack's output
  layer is not ours to fold into;
- the correction is pulled toward none (scale 1, shift 0) by a ridge chosen by leave-one-run-out
  validation, and dropped when no ridge beats no correction on held-out runs; the schedule falls
  back to evenly spaced steps when the DP's does not beat them on held-out runs (the issue's warning:
  calibrated plans lost to evenly spaced Taylor forecasts on a Wan model trained elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..methods.cachequant import CacheQuantConfig
from ..methods.forecast import forecast_weights
from ..recording import Recording
from .bac import acs_schedule

__all__ = ["CacheQuantPlan", "plan_cachequant", "evenly_spaced", "reuse_costs", "fit_channels"]

#: ridges tried for the correction (a multiple of the channel's variance); inf = no correction
RIDGES = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, float("inf"))


@dataclass(frozen=True)
class CacheQuantPlan:
    """What ``plan_cachequant`` chose and why.

    Attributes:
        config: the ``CacheQuantConfig`` to apply.
        computed: the computed steps.
        schedule: "dps" or "even" (the DP's schedule did not beat evenly spaced steps held out).
        ridge: the correction's ridge (inf: no correction).
        validation: held-out mean L1 of the DP and the even schedule, and held-out mean squared
            error on reuse steps without and with the correction, per leave-one-run-out fold.

    Example:
        >>> import numpy as np
        >>> from cachekit.recording import Recording
        >>> steps = {t: np.full(16, float(t)) for t in range(6)}   # residuals growing by 1 a step
        >>> rec = Recording("stack", ("stack",), (), (), [{0: {0: steps}}] * 2, [0, 0], "", channels={0: np.arange(16) % 4})
        >>> p = plan_cachequant(rec, fraction=0.5, forecast="none")
        >>> p.computed, p.schedule, p.config.computed_fraction   # a tie with even steps keeps them
        ((0, 2, 5), 'even', 0.5)
    """

    config: CacheQuantConfig
    computed: tuple[int, ...]
    schedule: str
    ridge: float
    validation: dict[str, Any] = field(default_factory=dict)


def evenly_spaced(num_steps: int, computes: int) -> tuple[int, ...]:
    """``computes`` steps spread evenly over 0..num_steps-1, first and last included."""
    return tuple(sorted({int(round(x)) for x in np.linspace(0, num_steps - 1, max(min(computes, num_steps), 1))}))


def reuse_costs(quant: list[np.ndarray], ref: list[np.ndarray]) -> np.ndarray:
    """cost[a, t]: mean |X_q(a) - X_ref(t)| averaged over the given runs: the error of reusing the
    (quantized) residual computed at step a for step t; the diagonal is the quantization error."""
    import torch

    # torch.cdist, as bac.similarity_matrix: a (T, T, D) broadcast would hold 328 MB per run at
    # T=50, D=16384 (the stack's default recording)
    total = np.zeros((quant[0].shape[0], ref[0].shape[0]))
    for q, r in zip(quant, ref):
        q64, r64 = torch.from_numpy(np.asarray(q, np.float64)), torch.from_numpy(np.asarray(r, np.float64))
        total += (torch.cdist(q64, r64, p=1.0) / max(q64.shape[1], 1)).numpy()
    return total / len(quant)


def _schedule_cost(cost: np.ndarray, steps: Sequence[int]) -> float:
    T = cost.shape[0]
    anchor = [max(s for s in steps if s <= t) for t in range(T)]
    return float(np.mean([cost[anchor[t], t] for t in range(T)]))


def fit_channels(x: np.ndarray, y: np.ndarray, channel: np.ndarray, channels: int,
                 ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, y ~ scale * x + shift by least squares, pulled toward (1, 0) by ``ridge`` (a
    multiple of the channel's variance of x): scale = (Cov/Var + ridge) / (1 + ridge), shift =
    (mean y - scale mean x) / (1 + ridge). x, y: (samples, features); channel: (features,)."""
    scale, shift = np.ones(channels), np.zeros(channels)
    if ridge == float("inf"):
        return scale, shift
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    for c in range(channels):
        m = channel == c
        if not m.any():
            continue
        xc, yc = xs[:, m].ravel(), ys[:, m].ravel()
        mx, my = xc.mean(), yc.mean()
        var = ((xc - mx) ** 2).mean()
        cov = ((xc - mx) * (yc - my)).mean()
        a = (cov / var + ridge) / (1.0 + ridge) if var > 0 else 1.0
        scale[c], shift[c] = a, (my - a * mx) / (1.0 + ridge)
    return scale, shift


def _forecast(q: np.ndarray, computed: Sequence[int], t: int, forecast: str, order: int) -> np.ndarray:
    """What the runtime reuses at step t: the cached residuals of the last computed steps, combined
    by the forecast's weights (plain reuse: the newest)."""
    before = [s for s in computed if s < t][::-1]
    w = forecast_weights(forecast, order, before, t)
    return sum(wi * q[s] for wi, s in zip(w, before))


def _pairs(quant: list[np.ndarray], ref: list[np.ndarray], computed: Sequence[int], forecast: str,
           order: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Reuse step -> (reused, true) stacked over runs."""
    T = quant[0].shape[0]
    out = {}
    for t in range(T):
        if t in computed:
            continue
        xs = [_forecast(q, computed, t, forecast, order) for q in quant]
        out[t] = (np.stack(xs), np.stack([r[t] for r in ref]))
    return out


def _corrected_error(pairs: dict, fits: dict, channel: np.ndarray) -> float:
    errs = []
    for t, (x, y) in pairs.items():
        scale, shift = fits.get(t, (None, None))
        z = x if scale is None else x * scale[channel] + shift[channel]
        errs.append(float(((z - y) ** 2).mean()))
    return float(np.mean(errs)) if errs else 0.0


def plan_cachequant(recording: Recording, *, fraction: float, reference: Recording | None = None,
                    forecast: str = "taylor", forecast_order: int = 1, correct: bool = True,
                    ridges: Sequence[float] = RIDGES) -> CacheQuantPlan:
    """CacheQuant's schedule and correction for ``recording`` (``cachekit.record(..., level="stack")``
    of the quantized model), against ``reference`` (the same runs recorded before quantizing; None:
    the recording itself, i.e. the cache error alone).

    Args:
        recording: stack recording of the model that will run (quantized).
        fraction: computed fraction of steps (K = round(fraction x steps), at least 2).
        reference: stack recording of the full-precision model on the same inputs and seeds.
        forecast, forecast_order: what reuse steps put in place of the residual (as the runtime).
        correct: fit the per-channel correction (else schedule only).
        ridges: the correction's candidate ridges; inf (no correction) should stay among them.

    Example:
        >>> import numpy as np
        >>> from cachekit.recording import Recording
        >>> rng = np.random.default_rng(0)
        >>> runs = [{0: {0: {t: rng.normal(size=64) + t for t in range(8)}}} for _ in range(3)]
        >>> rec = Recording("stack", ("stack",), (), (), runs, [0, 0, 0], "", channels={0: np.arange(64) % 8})
        >>> p = plan_cachequant(rec, fraction=0.5)
        >>> len(p.computed), p.schedule in ("dps", "even"), p.config.num_steps
        (4, True, 8)
    """
    if recording.level != "stack" or (reference is not None and reference.level != "stack"):
        raise ValueError("plan_cachequant: recordings must be level='stack' (cachekit.record(..., level='stack'))")
    if not 0 < fraction <= 1:
        raise ValueError(f"plan_cachequant: fraction must be in (0, 1], got {fraction!r}")
    ref = reference if reference is not None else recording
    quant, truth = recording.arrays(), ref.arrays()
    if len(quant) != len(truth) or any(q.shape != r.shape for q, r in zip(quant, truth)):
        raise ValueError("plan_cachequant: the reference recording must hold the same runs, branches, steps and "
                         "elements (record both with the same runs, seed and max_features)")
    channel = recording.channels.get(0)
    if correct and channel is None:
        raise ValueError("plan_cachequant: this recording has no channel index (record it with this cachekit)")
    T = recording.num_steps
    K = max(2, min(T, int(round(fraction * T))))
    groups = np.asarray(recording.run_ids())
    folds = sorted(set(groups.tolist()))
    if len(folds) < 2:
        raise ValueError("plan_cachequant: needs at least two calibration generations (held-out validation)")

    def dps(idx: Sequence[int]) -> tuple[int, ...]:
        cost = reuse_costs([quant[i] for i in idx], [truth[i] for i in idx])
        return tuple(acs_schedule(-cost, K, force_last=True))

    even = evenly_spaced(T, K)
    held: dict[str, list[float]] = {"dps": [], "even": []}
    for f in folds:
        train, test = np.flatnonzero(groups != f), np.flatnonzero(groups == f)
        cost = reuse_costs([quant[i] for i in test], [truth[i] for i in test])
        held["dps"].append(_schedule_cost(cost, dps(train)))
        held["even"].append(_schedule_cost(cost, even))
    schedule = "dps" if np.mean(held["dps"]) < np.mean(held["even"]) else "even"
    computed = dps(range(len(quant))) if schedule == "dps" else even

    channels = int(channel.max()) + 1 if channel is not None else 0
    ridge, correction, scores = float("inf"), (), {}
    if correct:
        split = []   # (train, test) reuse pairs per fold: the same for every ridge
        for f in folds:
            train, test = np.flatnonzero(groups != f), np.flatnonzero(groups == f)
            split.append(tuple(_pairs([quant[i] for i in idx], [truth[i] for i in idx], computed, forecast,
                                      forecast_order) for idx in (train, test)))
        for lam in ridges:
            errs = []
            for p_train, p_test in split:
                fits = {t: fit_channels(x, y, channel, channels, lam) for t, (x, y) in p_train.items()}
                errs.append(_corrected_error(p_test, fits, channel))
            scores[lam] = float(np.mean(errs))
        ridge = min(scores, key=lambda k: (scores[k], k == float("inf")))   # ties keep a correction out
        ridge = float("inf") if scores[ridge] >= scores[float("inf")] else ridge
        if ridge != float("inf"):
            pairs = _pairs(quant, truth, computed, forecast, forecast_order)
            correction = tuple((t, tuple(float(v) for v in s), tuple(float(v) for v in b))
                               for t, (x, y) in pairs.items() for s, b in [fit_channels(x, y, channel, channels, ridge)])
    config = CacheQuantConfig(compute_steps=tuple(int(s) for s in computed), num_steps=T, correction=correction,
                              forecast=forecast, forecast_order=forecast_order, model=recording.fingerprint)
    validation = {"schedule_l1_heldout": {k: float(np.mean(v)) for k, v in held.items()},
                  "correction_mse_heldout": {("none" if k == float("inf") else k): v for k, v in scores.items()},
                  "folds": len(folds)}
    return CacheQuantPlan(config, config.compute_steps, schedule, ridge, validation)
