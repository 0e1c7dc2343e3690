"""Offline calibration: record every unit's output at every step of full-compute runs, then plan.

Used by ``cachekit calibrate`` for BAC: per unit a similarity matrix over steps (averaged over the
calibration runs), the Adaptive Caching Scheduler for ``updates`` recompute steps, and Bubbling
Union for the ``top_n`` most volatile units. Memory stays small: each unit output is reduced to a
fixed random subset of at most ``max_features`` elements (the same subset at every step), so a
100-step run of the policy model keeps 100 x 4096 floats per unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import api
from .adapters import model_fingerprint
from .config import CacheConfig, register_method, spec
from .methods.bac import BACConfig
from .methods.bac_schedule import (acs_schedule, bubbling_union, similarity_matrix, top_volatile, volatility)
from .methods.base import CacheMethod, UnitContext


@dataclass(frozen=True)
class _RecordConfig(CacheConfig):
    """Internal: compute every unit and record its output (calibration only).

    Args:
        max_features: elements kept per unit output (a fixed random subset).
        seed: seed of that subset.
    """

    method = "_record"
    max_features: int = spec(4096, lo=1)
    seed: int = spec(0, lo=0)


@register_method(_RecordConfig)
class _Recorder(CacheMethod):
    granularity = "unit"

    def __init__(self, config: _RecordConfig) -> None:
        super().__init__(config)
        self.runs: list[dict[int, dict[int, np.ndarray]]] = []  # run -> unit -> step -> features
        self._index: dict[int, torch.Tensor] = {}

    def decide(self, ctx: UnitContext) -> bool:
        return True

    def observe(self, ctx: UnitContext, out: Any) -> None:
        if not ctx.leader:
            return  # one branch is enough to see how a unit's output drifts
        x = out[0] if isinstance(out, tuple) else out
        feats = _subsample(x, self._index, ctx.segment, self.config.seed + ctx.segment, self.config.max_features)
        if ctx.step == 0 and ctx.segment == 0:
            self.runs.append({})
        self.runs[-1].setdefault(ctx.segment, {})[ctx.step] = feats


def _subsample(x: torch.Tensor, index: dict, key: Any, seed: int, max_features: int) -> np.ndarray:
    """A fixed random subset of at most ``max_features`` elements of x (the same subset for the same
    key at every step), as float32 numpy."""
    flat = x.detach().reshape(-1)
    idx = index.get(key)
    if idx is None or idx.numel() > flat.numel() or int(idx.max()) >= flat.numel():
        g = torch.Generator().manual_seed(seed)
        n = min(max_features, flat.numel())
        idx = index[key] = torch.randperm(flat.numel(), generator=g)[:n].to(flat.device)
    return flat[idx].float().cpu().numpy()


@dataclass
class Calibration:
    """A calibrated plan and what it was made from."""

    config: BACConfig
    volatility: dict[str, float]
    selected: list[str]
    updates: int
    top_n: int
    metric: str
    runs: int


@dataclass
class Recording:
    """Unit outputs (subsampled) at every step of each calibration run."""

    units: list
    runs: list[dict[int, dict[int, np.ndarray]]]
    fingerprint: str
    _statistics: dict = field(default_factory=dict, repr=False, compare=False)

    def statistics(self, metric: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per unit name: the similarity matrix averaged over runs, and the volatility. Computed
        once per metric (plans for several budgets M share them)."""
        cache = self._statistics
        if metric not in cache:
            T = self.num_steps
            sims, vols = {}, {}
            for k, unit in enumerate(self.units):
                feats = [np.stack([r[k][t] for t in range(T)]) for r in self.runs]
                sims[unit.name] = np.mean([similarity_matrix(f, metric) for f in feats], axis=0)
                vols[unit.name] = float(np.mean([volatility(f) for f in feats]))
            cache[metric] = (sims, vols)
        return cache[metric]

    @property
    def num_steps(self) -> int:
        n_steps = {len(r[0]) for r in self.runs}
        if len(n_steps) != 1:
            raise ValueError(f"calibration runs have different step counts {sorted(n_steps)}; use one --steps")
        return n_steps.pop()


def record_units(target: Any, runs: Iterable[Callable[[], Any]], *, max_features: int = 4096,
                 progress: Any = None) -> Recording:
    """Run each callable (one generation each) with full compute, recording every unit's output.
    ``target`` must not have cachekit applied."""
    session = _record(target, _RecordConfig(max_features=max_features), runs, progress)
    return Recording(session.units, session.method.runs, model_fingerprint(session.root))


def _record(target: Any, config: CacheConfig, runs: Iterable[Callable[[], Any]], progress: Any) -> Any:
    """Apply a recorder, run every callable, remove it; the session (its method holds the runs)."""
    api.apply(target, config)
    session = api._session(api.find_model(target)[0])
    try:
        for run in runs:
            run()
            if progress is not None:
                progress.update(1)
    finally:
        api.remove(target)
    if not session.method.runs:
        raise ValueError("calibration recorded nothing: the runs never called the model")
    return session


def plan_bac(rec: Recording, *, updates: int, top_n: int = 4, metric: str = "cosine",
             force_last: bool = True) -> Calibration:
    """The BAC plan for a recording: ACS per unit, Bubbling Union for the top-n volatile units."""
    T = rec.num_steps
    names = [u.name for u in rec.units]
    sims, vols = rec.statistics(metric)
    plans = {n: acs_schedule(sims[n], updates, force_last=force_last) for n in names}
    selected = top_volatile(vols, top_n)
    plans = bubbling_union(plans, {u.name: u.layer for u in rec.units},
                           {u.name: u.kind == "ffn" for u in rec.units}, selected)
    cfg = BACConfig(plan=plans, num_steps=T, model=rec.fingerprint)
    return Calibration(cfg, vols, selected, updates, top_n, metric, len(rec.runs))


def calibrate_bac(target: Any, runs: Iterable[Callable[[], Any]], *, updates: int, top_n: int = 4,
                  metric: str = "cosine", max_features: int = 4096, force_last: bool = True,
                  progress: Any = None) -> Calibration:
    """``record_units`` then ``plan_bac``."""
    rec = record_units(target, runs, max_features=max_features, progress=progress)
    return plan_bac(rec, updates=updates, top_n=top_n, metric=metric, force_last=force_last)


# ---- ERTACache: the block stack's residual per step, then a static reuse set with corrections ----
@dataclass(frozen=True)
class _RecordStackConfig(_RecordConfig):
    """Internal: compute every step and record the block stack's residual (calibration only);
    fields as ``_RecordConfig``, with more elements kept (one tensor per step, not one per unit)."""

    method = "_record_stack"
    max_features: int = spec(16384, lo=1)


@register_method(_RecordStackConfig)
class _StackRecorder(_Recorder):
    """``runs``: run -> CFG branch -> step -> features of the stack residual."""

    granularity = "block"

    def observe(self, ctx: UnitContext, outputs: Any) -> None:
        main = ctx.main_stream
        feats = _subsample(outputs[main] - ctx.inputs[main], self._index, 0, self.config.seed, self.config.max_features)
        if ctx.step == 0 and ctx.leader:
            self.runs.append({})
        self.runs[-1].setdefault(ctx.branch, {})[ctx.step] = feats


@dataclass
class ERTACalibration:
    """An ERTACache plan and what it was fitted from."""

    config: Any
    computed: list[int]
    fit_error: dict[int, float]        # reuse step -> relative squared error left after the fit
    recordings: int


def record_stack(target: Any, runs: Iterable[Callable[[], Any]], *, max_features: int = 16384,
                 progress: Any = None) -> tuple[list[np.ndarray], str]:
    """Full-compute runs recording the stack residual: one (T, features) array per run and branch."""
    session = _record(target, _RecordStackConfig(max_features=max_features), runs, progress)
    recs = [np.stack([steps[t] for t in sorted(steps)]) for run in session.method.runs for steps in run.values()]
    if len({r.shape[0] for r in recs}) != 1:
        raise ValueError(f"calibration runs have different step counts {sorted({r.shape[0] for r in recs})}; "
                         f"use one --steps")
    return recs, model_fingerprint(session.root)


def plan_erta(recordings: list[np.ndarray], fingerprint: str = "", *, fraction: float | None = None,
              max_error: float | None = None, correction: str = "linear", warmup: int = 2) -> ERTACalibration:
    """Static reuse set for a computed ``fraction`` of steps, or the cheapest one whose worst reuse
    step keeps a fitted relative squared error <= ``max_error``; then the per-step fit. The first
    ``warmup`` steps are always computed."""
    from .methods.ertacache import ERTACacheConfig, anchors, compute_steps, fit_corrections, reuse_error_matrix

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
    return ERTACalibration(cfg, computed, {t: f[2] for t, f in fits.items()}, len(recordings))
