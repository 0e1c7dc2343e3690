"""ERTACache's offline plan (arXiv 2508.21091): a static reuse set and per-step fitted corrections,
as pure functions of recorded stack residuals (``cachekit.record(..., level="stack")``; the design is
documented in ``cachekit/methods/ertacache.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..methods.ertacache import ERTACacheConfig, anchors
from ..recording import Recording
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


def prior_coefficients(computed: Sequence[int], t: int, prior: str) -> tuple[float, float]:
    """The calibration-free (gamma, beta) a fit is pulled toward: "hold" reuses R_a as it is
    (1, 0); "taylor" is the first-order forecast through a' and a evaluated at t,
    R_a + (t - a) / (a - a') (R_a - R_a'), i.e. (1, (t - a) / (a - a')); without a' it is hold."""
    if prior == "hold":
        return 1.0, 0.0
    if prior != "taylor":
        raise ValueError(f"prior must be 'hold' or 'taylor', got {prior!r}")
    a, b = anchors(computed, t)
    return (1.0, 0.0) if b is None else (1.0, (t - a) / (a - b))


def fit_ridge(X: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """argmin ||y - X c||^2 + lam * s * ||c - prior||^2 with s = trace(X^T X) / k (so lam is
    dimensionless): lam 0 is ``fit_linear``, lam inf is the prior."""
    prior = np.asarray(prior, dtype=np.float64)
    if np.isinf(lam):
        return prior.copy()
    if lam == 0:
        return fit_linear(X, y)
    X = np.asarray(X, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    G = X.T @ X
    s = max(float(np.trace(G)) / G.shape[0], 1e-30)
    return np.linalg.solve(G + lam * s * np.eye(G.shape[0]), X.T @ y + lam * s * prior)


#: Ridge strengths tried by cross-validation; inf is the calibration-free forecast itself, so the
#: chosen fit is never worse than it on the held-out folds.
LAMBDAS = (0.0, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, float("inf"))


def _design(residuals: Sequence[np.ndarray], computed: Sequence[int], t: int, linear: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = anchors(computed, t)
    cols = [np.concatenate([R[a] for R in residuals])]
    if linear and b is not None:
        cols.append(np.concatenate([R[a] - R[b] for R in residuals]))
    return np.stack(cols, axis=1), np.concatenate([R[t] for R in residuals])


def _rel(y: np.ndarray, X: np.ndarray, coef: np.ndarray) -> float:
    return float(np.sum((y - X @ coef) ** 2) / max(np.sum(y ** 2), 1e-30))


def fit_corrections(residuals: Sequence[np.ndarray], computed: Sequence[int], linear: bool = True,
                    lam: float = 0.0, prior: str = "taylor") -> dict[int, tuple[float, float, float]]:
    """Per reuse step t: (gamma_t, beta_t, relative squared error left after the fit), fitting
    R_t ~ gamma R_a + beta (R_a - R_a') over every recording's elements, ridge-pulled toward the
    ``prior`` forecast with strength ``lam`` (0: plain least squares)."""
    T = residuals[0].shape[0]
    out = {}
    for t in range(T):
        if t in computed:
            continue
        X, y = _design(residuals, computed, t, linear)
        p = np.array(prior_coefficients(computed, t, prior)[:X.shape[1]])
        coef = fit_ridge(X, y, p, lam)
        out[t] = (float(coef[0]), float(coef[1]) if len(coef) > 1 else 0.0, _rel(y, X, coef))
    return out


def cross_validate(residuals: Sequence[np.ndarray], computed: Sequence[int], groups: Sequence[int],
                   linear: bool = True, prior: str = "taylor", lambdas: Sequence[float] = LAMBDAS) -> dict:
    """Leave-one-group-out error of the fits for each ridge strength (one strength for all steps):
    a group is one calibration run (its CFG branches share the noise, so they are held out
    together). Returns {"lam": chosen, "cv": {lam: error}, "train": error at the chosen lam}, errors
    as relative squared errors summed over reuse steps / summed target energy. With one group
    there is nothing to hold out: the prior (lam = inf) is chosen."""
    groups = list(groups)
    ids = sorted(set(groups))
    T = residuals[0].shape[0]
    reuse = [t for t in range(T) if t not in computed]
    if len(ids) < 2 or not reuse:
        return {"lam": float("inf"), "cv": {}, "train": None, "folds": len(ids)}
    cv = {}
    for lam in lambdas:
        num = den = 0.0
        for g in ids:
            train = [R for R, k in zip(residuals, groups) if k != g]
            test = [R for R, k in zip(residuals, groups) if k == g]
            for t in reuse:
                X, y = _design(train, computed, t, linear)
                p = np.array(prior_coefficients(computed, t, prior)[:X.shape[1]])
                coef = fit_ridge(X, y, p, lam)
                Xh, yh = _design(test, computed, t, linear)
                num += float(np.sum((yh - Xh @ coef) ** 2))
                den += float(np.sum(yh ** 2))
        cv[lam] = num / max(den, 1e-30)
    lam = min(cv, key=lambda k: (cv[k], -k))   # ties: the stronger pull (closer to the prior)
    return {"lam": lam, "cv": cv, "folds": len(ids)}


@dataclass
class ERTAPlan:
    """An ERTACache plan and what it was fitted from.

    Attributes:
        config: the ``ERTACacheConfig`` to apply.
        computed: the computed steps.
        fit_error: reuse step -> relative squared error left after the fit on all calibration runs.
        recordings: how many (generation, branch) arrays it was fitted on.
        validation: the ridge strength chosen by leave-one-run-out cross-validation and the held-out
            error of every strength tried (``cross_validate``); the prior's own held-out error is
            the entry at inf.

    Example:
        >>> import numpy as np
        >>> from cachekit.planning import plan_erta
        >>> R = np.random.default_rng(0).standard_normal((6, 64)).cumsum(axis=0)   # (steps, features) residuals
        >>> p = plan_erta([R], fraction=0.5)
        >>> p.computed, p.config.reuse_steps, p.recordings
        ([0, 1, 5], (2, 3, 4), 1)
        >>> p.config.coefficients     # one run, nothing to validate a fit on: the Taylor prior (gamma, beta)
        ((2, 1.0, 1.0), (3, 1.0, 2.0), (4, 1.0, 3.0))
        >>> sorted(p.fit_error)
        [2, 3, 4]
    """

    config: ERTACacheConfig
    computed: list[int]
    fit_error: dict[int, float]
    recordings: int
    validation: dict = field(default_factory=dict)


def plan_erta(recordings: Recording | list[np.ndarray], fingerprint: str = "", *, fraction: float | None = None,
              max_error: float | None = None, correction: str = "linear", warmup: int = 2,
              groups: Sequence[int] | None = None, prior: str = "taylor", ridge: float | None = None) -> ERTAPlan:
    """``recordings``: a stack recording (``cachekit.record(..., level="stack")``), taken whole as
    ``plan_bac`` takes its unit recording (its arrays, fingerprint and run of each generation), or
    the per-generation (T, features) arrays themselves (``Recording.arrays()``).

    Static reuse set for a computed ``fraction`` of steps, or the cheapest one whose worst reuse
    step keeps a fitted relative squared error <= ``max_error``; then the per-step fit. The first
    ``warmup`` steps are always computed.

    The fit is pulled toward the calibration-free ``prior`` forecast ("taylor" or "hold") with a
    ridge strength chosen by leave-one-run-out cross-validation over ``groups`` (the calibration
    run of each recording, ``Recording.run_ids()``; default: every recording its own run), among
    strengths that include the prior itself, so the fit never does worse than the prior on the
    held-out runs. One run: the prior is used (nothing to validate a fit on). ``ridge`` fixes the
    strength instead (0: plain least squares, the unregularised fit).

    Args:
        recordings: a stack ``Recording``, or the per-generation (T, features) arrays.
        fingerprint: the model fingerprint the config checks (default: the recording's).
        fraction: the computed fraction of steps (rounded; never fewer than 2 steps, nor than the
            warm-up steps and the last).
        max_error: instead, the largest fitted relative squared error any reuse step may keep (the
            cheapest such plan).
        correction: "linear" (gamma and beta), "scale" (gamma only) or "none" (no fit).
        warmup: the first steps, always computed.
        groups: the calibration run of each array (default: a recording's ``run_ids()``, else every
            array its own run).
        prior: the forecast the fit is pulled toward: "taylor" or "hold".
        ridge: a fixed ridge strength (0: plain least squares) instead of the cross-validated one.

    Example:
        >>> import numpy as np
        >>> from cachekit.planning import plan_erta
        >>> runs = list(np.random.default_rng(0).standard_normal((2, 6, 64)).cumsum(axis=1))  # 2 runs x 6 steps
        >>> p = plan_erta(runs, fraction=0.5)
        >>> p.config.reuse_steps, p.config.computed_fraction
        ((2, 3, 4), 0.5)
        >>> p.validation["folds"], p.validation["heldout_error"] <= p.validation["prior_heldout_error"]
        (2, True)
    """
    if isinstance(recordings, Recording):
        if recordings.level != "stack":
            raise ValueError(f"plan_erta needs a recording of the block stack (level='stack'), "
                             f"got level={recordings.level!r}")
        fingerprint = fingerprint or recordings.fingerprint
        groups = recordings.run_ids() if groups is None else groups
        recordings = recordings.arrays()
    if (fraction is None) == (max_error is None):
        raise ValueError("plan_erta: give exactly one of fraction and max_error")
    T = recordings[0].shape[0]
    groups = list(range(len(recordings))) if groups is None else list(groups)
    if len(groups) != len(recordings):
        raise ValueError(f"plan_erta: {len(groups)} groups for {len(recordings)} recordings")
    err = reuse_error_matrix(recordings)
    linear = correction == "linear"
    if fraction is not None:
        budgets = [max(2, min(T, int(round(fraction * T))))]
    else:
        budgets = list(range(2, T + 1))
    validation: dict = {}
    for k in budgets:
        computed = compute_steps(err, k, warmup)
        if correction == "none":
            fits = {t: (1.0, 0.0, float(err[anchors(computed, t)[0], t])) for t in range(T) if t not in computed}
        else:
            validation = ({"lam": float(ridge), "cv": {}, "folds": len(set(groups))} if ridge is not None
                          else cross_validate(recordings, computed, groups, linear, prior))
            fits = fit_corrections(recordings, computed, linear=linear, lam=validation["lam"], prior=prior)
        if max_error is None or not fits or max(f[2] for f in fits.values()) <= max_error:
            break
    cfg = ERTACacheConfig(reuse_steps=tuple(sorted(fits)), num_steps=T, model=fingerprint, correction=correction,
                          coefficients=tuple((t, g, b) for t, (g, b, _) in sorted(fits.items())))
    if validation:
        validation = {**validation, "prior": prior,
                      "train_error": float(np.mean([f[2] for f in fits.values()])) if fits else 0.0,
                      "heldout_error": validation["cv"].get(validation["lam"]),
                      "prior_heldout_error": validation["cv"].get(float("inf"))}
    return ERTAPlan(cfg, computed, {t: f[2] for t, f in fits.items()}, len(recordings), validation)
