"""Forecasting the cached tensor of a reuse step instead of holding it constant.

Every method can take ``forecast="taylor"`` or ``forecast="foca"``. On a reuse step at step t the
runtime replaces the newest cached tensor H_0 (a block range's residual, or a sub-block unit's
output) by a weighted sum of the tensors cached at the last computed steps s_0 > s_1 > ...:
``sum_i w_i * H_i``; the weights come from this file (pure functions of step indices). The
runtime evaluates that sum in one fused pass with the reuse itself (``cachekit.kernels.reuse``).

- ``"taylor"`` of order k: the degree-k polynomial through the last k+1 computed points,
  evaluated at t (Lagrange weights, in step index like TaylorSeer, arXiv 2503.06923). For k = 1
  it equals TaylorSeer's first-order finite-difference Taylor step; for k >= 2 TaylorSeer divides
  the k-th difference by k! N^k and multiplies by (t - s_0)^k, which is exact only on uniformly
  spaced points; the Lagrange form is exact for any spacing (runtime plans are rarely uniform).
- ``"foca"``: a second-order predictor-corrector of the kind FoCa uses (arXiv 2508.16211 treats
  cached features as the solution of an ODE in the step index): predict with the BDF2 derivative
  (the slope at s_0 of the parabola through s_0, s_1, s_2), then correct Heun-style by averaging
  that slope with the slope from s_1 to the prediction. It is exact on linear sequences and, unlike
  the quadratic extrapolation, its weights grow only linearly with the skipped distance, which is
  what keeps long skips stable. With two cached points it is the Heun-averaged linear step.

Order 0 (and any forecast with one cached point) gives the weight (1.0,): plain reuse, bit for bit.
Memory: a forecast of depth d keeps d cached tensors per unit and CFG branch (``history_depth``).
"""

from __future__ import annotations

from typing import Sequence

from ..config import FORECASTS


def history_depth(kind: str, order: int) -> int:
    """Cached tensors kept per unit: 1 for plain reuse, order + 1 for Taylor, 3 for FoCa."""
    if kind == "none":
        return 1
    if kind == "taylor":
        return order + 1
    if kind == "foca":
        return 3
    raise ValueError(f"unknown forecast {kind!r}; known: {', '.join(FORECASTS)}")


def lagrange_weights(points: Sequence[float], t: float) -> tuple[float, ...]:
    """Weights w_i with p(t) = sum_i w_i p(points[i]) for every polynomial p of degree
    < len(points). Points must be distinct."""
    if len(set(points)) != len(points):
        raise ValueError(f"forecast points must be distinct, got {list(points)}")
    out = []
    for i, si in enumerate(points):
        w = 1.0
        for j, sj in enumerate(points):
            if j != i:
                w *= (t - sj) / (si - sj)
        out.append(w)
    return tuple(out)


def foca_weights(points: Sequence[float], t: float) -> tuple[float, ...]:
    """BDF2 predictor + Heun corrector over the newest-first points (s_0, s_1[, s_2]) at t > s_0.

    Slopes are linear in the cached values, so the result is a weight per point:
      d0 = slope at s_0 of the interpolating polynomial (BDF2 when three points, else the chord),
      P  = H_0 + h d0 with h = t - s_0                     (prediction)
      d1 = (P - H_1) / (t - s_1)                            (slope seen from s_1 to the prediction)
      F  = H_0 + h/2 (d0 + d1)                               (Heun-style average of the two slopes)
    """
    n = len(points)
    if n == 1:
        return (1.0,)
    s = [float(p) for p in points]
    h = t - s[0]
    d0 = _slope_at_newest(s)                       # weights of d0 over the points
    pred = [h * w for w in d0]
    pred[0] += 1.0
    d1 = [w / (t - s[1]) for w in pred]
    d1[1] -= 1.0 / (t - s[1])
    out = [0.5 * h * (a + b) for a, b in zip(d0, d1)]
    out[0] += 1.0
    return tuple(out)


def _slope_at_newest(s: Sequence[float]) -> list[float]:
    """Weights of p'(s_0) for the polynomial p through the points s (newest first)."""
    if len(s) == 2:
        return [1.0 / (s[0] - s[1]), -1.0 / (s[0] - s[1])]
    s0, s1, s2 = s[:3]
    # derivative of the Lagrange basis polynomials at s0
    return [1.0 / (s0 - s1) + 1.0 / (s0 - s2),
            (s0 - s2) / ((s1 - s0) * (s1 - s2)),
            (s0 - s1) / ((s2 - s0) * (s2 - s1))]


def forecast_weights(kind: str, order: int, steps: Sequence[int], t: int) -> tuple[float, ...]:
    """Weights for the cached tensors at ``steps`` (newest first) to stand in for step ``t``.
    Uses as many of the newest points as the forecast needs and the history holds."""
    if not steps:
        raise ValueError("forecast_weights: nothing cached")
    n = min(history_depth(kind, order), len(steps))
    if n == 1:
        return (1.0,)
    pts = [float(s) for s in steps[:n]]
    if kind == "taylor":
        return lagrange_weights(pts, float(t))
    return foca_weights(pts, float(t))
