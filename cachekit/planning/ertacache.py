"""ERTACache's offline plan (arXiv 2508.21091): a static reuse set and per-step fitted corrections,
as pure functions of recorded stack residuals (``cachekit.record(..., level="stack")``; the design is
documented in ``cachekit/methods/ertacache.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..methods.ertacache import ERTACacheConfig, anchors
from .bac import acs_schedule


def fit_linear(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of y ~ X (n x k, k small) from the normal equations in float64;
    the minimum-norm solution (pseudo-inverse) when X has dependent columns, as lstsq gives."""
    X = np.asarray(X, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return np.linalg.pinv(X.T @ X, rcond=1e-12) @ (X.T @ y)


def reuse_error_matrix(residuals: Sequence[np.ndarray]) -> np.ndarray:
    """err[a, t] = 1 - cos^2(R_a, R_t): relative squared error of the best scalar multiple of R_a as
    a stand-in for R_t, averaged over recordings. Each recording is (T, n_features)."""
    errs = []
    for R in residuals:
        R = np.asarray(R, dtype=np.float64)
        norm = np.linalg.norm(R, axis=1)
        unit = R / np.where(norm == 0, 1.0, norm)[:, None]
        cos = unit @ unit.T
        errs.append(1.0 - cos ** 2)
    return np.mean(errs, axis=0)


def compute_steps(err: np.ndarray, computes: int, warmup: int = 0) -> list[int]:
    """The ``computes`` steps to compute (the first ``warmup`` steps, step 0 and the last step always
    among them) that minimise the summed reuse error of the steps in between. The profile weighs
    every step alike, but an error made early is carried through every later step (on the digits
    DiT the unweighted plan reused steps 1-6 and lost 1.2 dB to BAC at fraction 0.36): the
    warm-up keeps the first steps computed, as every runtime method here does."""
    T = err.shape[0]
    if computes >= T:
        return list(range(T))
    err = np.array(err, dtype=np.float64)
    err[:, :min(warmup, T)] = 1e9   # reusing a warm-up step costs more than any plan that computes it
    np.fill_diagonal(err, 0.0)
    return acs_schedule(-err, max(computes, 2 if T > 1 else 1, min(warmup, T - 1) + 1), force_last=True)


def fit_corrections(residuals: Sequence[np.ndarray], computed: Sequence[int],
                    linear: bool = True) -> dict[int, tuple[float, float, float]]:
    """Per reuse step t: (gamma_t, beta_t, relative squared error left after the fit), fitting
    R_t ~ gamma R_a + beta (R_a - R_a') over every recording's elements."""
    T = residuals[0].shape[0]
    out = {}
    for t in range(T):
        if t in computed:
            continue
        a, b = anchors(computed, t)
        cols = [np.concatenate([R[a] for R in residuals])]
        if linear and b is not None:
            cols.append(np.concatenate([R[a] - R[b] for R in residuals]))
        X, y = np.stack(cols, axis=1), np.concatenate([R[t] for R in residuals])
        coef = fit_linear(X, y)
        left = float(np.sum((y - X @ coef) ** 2) / max(np.sum(y ** 2), 1e-30))
        out[t] = (float(coef[0]), float(coef[1]) if len(coef) > 1 else 0.0, left)
    return out


@dataclass
class ERTAPlan:
    """An ERTACache plan and what it was fitted from."""

    config: ERTACacheConfig
    computed: list[int]
    fit_error: dict[int, float]        # reuse step -> relative squared error left after the fit
    recordings: int


def plan_erta(recordings: list[np.ndarray], fingerprint: str = "", *, fraction: float | None = None,
              max_error: float | None = None, correction: str = "linear", warmup: int = 2) -> ERTAPlan:
    """Static reuse set for a computed ``fraction`` of steps, or the cheapest one whose worst reuse
    step keeps a fitted relative squared error <= ``max_error``; then the per-step fit. The first
    ``warmup`` steps are always computed."""
    if (fraction is None) == (max_error is None):
        raise ValueError("plan_erta: give exactly one of fraction and max_error")
    T = recordings[0].shape[0]
    err = reuse_error_matrix(recordings)
    linear = correction == "linear"
    if fraction is not None:
        budgets = [max(2, min(T, int(round(fraction * T))))]
    else:
        budgets = list(range(2, T + 1))
    for k in budgets:
        computed = compute_steps(err, k, warmup)
        fits = fit_corrections(recordings, computed, linear=linear) if correction != "none" else {
            t: (1.0, 0.0, float(err[anchors(computed, t)[0], t])) for t in range(T) if t not in computed}
        if max_error is None or not fits or max(f[2] for f in fits.values()) <= max_error:
            break
    cfg = ERTACacheConfig(reuse_steps=tuple(sorted(fits)), num_steps=T, model=fingerprint, correction=correction,
                          coefficients=tuple((t, g, b) for t, (g, b, _) in sorted(fits.items())))
    return ERTAPlan(cfg, computed, {t: f[2] for t, f in fits.items()}, len(recordings))
