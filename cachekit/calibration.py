"""Calibration: run the model on calibration inputs, plan offline, hand back a config (and a recipe).

One route for every planner, used by ``cachekit calibrate``, ``cachekit tune``, the eval scripts
and user code::

    measured = measure(target, runs, "ertacache")              # runs the model (full compute)
    cal = plan(measured, fraction=0.4)                          # pure: cachekit.planning
    cal = calibrate(target, runs, "lemica", fraction=0.4)       # both at once
    save(cal, "my_recipe.yaml", model_class="WanTransformer3DModel")

What is measured per method:

- ``"bac"`` and ``"ertacache"``: a recording of full-compute runs (``cachekit.record``: every
  sub-block unit's output, or the stack's residual); their planners are pure functions of it.
- ``"lemica"``: the final-output error of every edge of the step graph (``lemica_edges``: one run
  per edge and calibration run, prefixes replayed through the runtime's ``ForwardTap``); the plan
  for a budget is then chosen by measuring its candidates on the same runs (``choose_lemica``).

- ``"cachequant"``: a recording of the stack's residual, as for ertacache; pass ``reference=`` (the
  same runs recorded before the model was quantized) to put the quantization error in the plan.

This module (with ``calibration_lemica.py``, its LeMiCa measurements) is the only one above ``api``
that runs the model for a plan; ``cachekit.planning`` imports neither ``api`` nor ``adapters``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import api
from .calibration_lemica import _error, choose_lemica, lemica_edges  # noqa: F401 - importable from here as before
from .config import CacheConfig
from .errors import ConfigError
from .methods.cachequant import CacheQuantConfig
from .methods.schedule import ScheduleConfig
from .planning import plan_bac, plan_cachequant, plan_erta
from .planning.lemica import EdgeTable, plan_lemica
from .recording import Recording

__all__ = ["METHODS", "Calibration", "measure", "plan", "calibrate", "save", "lemica_edges", "choose_lemica"]

METHODS = ("bac", "ertacache", "lemica", "cachequant")
Runs = Sequence[Callable[[], Any]]

#: what the recipe says the plan is, per method
NOTES = {
    "bac": "BAC plan: Adaptive Caching Scheduler per unit + Bubbling Union (arXiv 2506.13456)",
    "ertacache": "ERTACache: static reuse set from per-step residual profiling, per-step gamma (timestep "
                 "adjustment) and beta (residual linearisation) fitted by least squares (cachekit.methods.ertacache)",
    "lemica": "LeMiCa-style global schedule: edges weighted by the final output's mean absolute error, "
              "lexicographic minimax path (cachekit.planning.lemica)",
    "cachequant": "CacheQuant-style (arXiv 2503.01323): DP schedule on the L1 error of reused stack residuals "
                  "against the full-precision model, per-channel correction of reuse steps (cachekit.planning.cachequant)",
}


@dataclass(frozen=True)
class Measured:
    """What ``measure`` ran: a ``Recording`` (bac, ertacache) or an ``EdgeTable`` (lemica), and, for
    LeMiCa, the target and runs its plans are checked on."""

    method: str
    data: Recording | EdgeTable
    target: Any = field(default=None, repr=False)
    runs: tuple = field(default=(), repr=False)


@dataclass(frozen=True)
class Calibration:
    """A calibrated plan.

    Attributes:
        method: "bac", "ertacache", "lemica" or "cachequant".
        config: the config to apply (``cachekit.apply(pipe, cal.config)``).
        plan: the planner's full result (``BACPlan``, ``ERTAPlan``, ``LeMiCaPlan``, ``CacheQuantPlan``).
        details: what the calibration was and cost, as the recipe records it under ``measured``.
        summary: one line for a terminal.

    Example:
        >>> import cachekit
        >>> from cachekit.reference.digits import load_digits_pipeline
        >>> pipe = load_digits_pipeline()
        >>> runs = [lambda: pipe([3, 7], num_inference_steps=6, output_type="pt")]
        >>> cal = cachekit.calibrate(pipe, runs, "ertacache", fraction=0.5)
        >>> cal.method, cal.config.reuse_steps, cal.plan.computed
        ('ertacache', (2, 3, 4), [0, 1, 5])
        >>> cal.summary
        'computed fraction 0.500 (3 of 6 steps), fitted error mean ...'
        >>> pipe = cachekit.apply(pipe, cal.config)    # then generate with num_inference_steps=6
    """

    method: str
    config: CacheConfig
    plan: Any = field(repr=False)
    details: dict = field(default_factory=dict, repr=False)
    summary: str = ""


def measure(target: Any, runs: Runs, method: str, *, progress: Any = None, template: ScheduleConfig | None = None,
            max_skip: int = 6, replay: bool = True, max_features: int | None = None) -> Measured:
    """Run ``runs`` (callables, each one generation) for ``method``'s planner.

    Args:
        target: as for ``cachekit.apply``; it must not have cachekit applied.
        runs: callables, each running one generation on calibration inputs (``Workload.runs``).
        method: one of ``METHODS`` (bac, ertacache, lemica, cachequant).
        progress: a tqdm-like bar (``update(n)``).
        template: lemica: the reuse mode (default: sub-block units with a Taylor forecast).
        max_skip: lemica: the longest edge, in steps.
        replay: lemica: share prefixes by replaying recorded model outputs.
        max_features: bac / ertacache: elements recorded per unit (``cachekit.record``).

    Example:
        >>> import torch, cachekit
        >>> from cachekit.calibration import measure
        >>> model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(4, 4)]))
        >>> measure(model, [], "sgd")
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: cachekit.calibration: method must be one of bac, ertacache, lemica, cachequant, got 'sgd'
    """
    _check_method(method)
    runs = list(runs)
    if method == "lemica":
        table = lemica_edges(target, runs, template=template or ScheduleConfig(units=True, forecast="taylor"),
                             max_skip=max_skip, replay=replay, progress=progress)
        return Measured(method, table, target, tuple(runs))
    level = "units" if method == "bac" else "stack"   # ertacache, cachequant
    rec = api.record(target, runs, level=level, progress=progress, max_features=max_features)
    return Measured(method, rec, *((target, tuple(runs)) if method == "cachequant" else ()))


def plan(measured: Measured, *, fraction: float | None = None, max_error: float | None = None,
         **options: Any) -> Calibration:
    """The plan for one budget from what ``measure`` ran (pure for bac and ertacache; lemica runs
    its candidate plans on the calibration runs to choose among them).

    Args:
        measured: ``measure``'s result; several budgets may be planned from one measurement.
        fraction: ertacache / lemica: the computed fraction of steps.
        max_error: ertacache / lemica: instead, the cheapest plan whose worst fitted (ertacache) or
            edge (lemica) error stays under this.
        options: the planner's own: bac ``updates`` (required), ``top_n``, ``metric``; ertacache
            ``correction``, ``warmup``, ``prior``, ``ridge``; lemica ``refine`` (local-search sweeps);
            cachequant ``reference`` (a stack ``Recording`` of the full-precision model on the same
            runs), ``forecast``, ``forecast_order``, ``correct``.

    Example:
        >>> from cachekit.calibration import Measured, plan
        >>> plan(Measured("ertacache", None), fraction=0.4, max_error=0.1)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: cachekit.calibration: give exactly one of fraction and max_error for ertacache
    """
    m = measured.method
    _check_request(m, fraction, max_error)
    if m == "bac":
        if "updates" not in options:
            raise ConfigError("cachekit.calibration: bac needs updates= (computed steps per unit)")
        p = plan_bac(measured.data, **options)
        frac = float(np.mean([len(s) for _, s in p.config.plan])) / p.config.num_steps
        details = {"updates": p.updates, "top_n": p.top_n, "metric": p.metric, "runs": p.runs,
                   "bubbled_units": p.selected}
        return Calibration(m, p.config, p, details,
                           f"{len(p.config.plan)} units, {p.config.num_steps} steps, mean recompute fraction "
                           f"{frac:.3f}; bubbled: {', '.join(p.selected)}")
    if m == "ertacache":
        p = plan_erta(measured.data, fraction=fraction, max_error=max_error, **options)
        errs = list(p.fit_error.values())
        details = {"fraction": fraction, "max_error": max_error, "correction": p.config.correction,
                   "warmup": options.get("warmup", 2), "recordings": p.recordings, "computed_steps": p.computed,
                   "fit_error_mean": float(np.mean(errs)) if errs else 0.0,
                   "fit_error_max": float(np.max(errs)) if errs else 0.0,
                   # train vs held-out: leave-one-run-out error of the fit, and of the
                   # calibration-free forecast it is pulled toward (ridge inf)
                   "validation": {k: p.validation.get(k) for k in
                                  ("prior", "lam", "folds", "train_error", "heldout_error", "prior_heldout_error")}}
        return Calibration(m, p.config, p, details,
                           f"computed fraction {p.config.computed_fraction:.3f} ({len(p.computed)} of "
                           f"{p.config.num_steps} steps), fitted error mean {details['fit_error_mean']:.4f}")
    if m == "cachequant":   # options: reference (a stack Recording of the full-precision model), forecast, correct
        p = plan_cachequant(measured.data, fraction=fraction, **options)
        config, checked = choose_cachequant(measured, p.config, options.get("reference"))
        details = {"fraction": fraction, "computed_steps": list(p.computed), "schedule": p.schedule,
                   "ridge": None if p.ridge == float("inf") else p.ridge, "reference": "reference" in options,
                   "validation": p.validation, "checked_final_error": checked,
                   "chosen": "units" if config.units else "stack + correction" if config.correction else "stack"}
        return Calibration(m, config, p, details,
                           f"{len(p.computed)} of {p.config.num_steps} steps computed ({p.schedule} schedule), "
                           f"{details['chosen']}; correction fitted: {'none' if p.ridge == float('inf') else f'ridge {p.ridge:g}'}")
    table: EdgeTable = measured.data
    p = (plan_lemica(table, max_error=max_error) if max_error is not None
         else choose_lemica(measured.target, measured.runs, table, fraction=fraction, **options))
    details = {"fraction": fraction, "max_error": max_error, "max_skip": table.max_skip, "runs": table.runs,
               "model_calls": table.model_calls, "model_calls_without_shared_prefixes": table.full_calls,
               "edge_errors": [round(e, 6) for e in p.edge_errors], "predicted_max_edge_error": p.predicted,
               "criterion": p.criterion, "checked_final_error": p.checked, "refine_sweeps": options.get("refine", 0),
               "model_calls_to_choose": p.refine_calls}
    return Calibration(m, p.config, p, details,
                       f"{len(p.computed)} of {table.num_steps} steps computed {p.computed}; {table.model_calls} "
                       f"model calls ({table.full_calls} without shared prefixes)")


def calibrate(target: Any, runs: Runs, method: str, *, fraction: float | None = None, max_error: float | None = None,
              progress: Any = None, template: ScheduleConfig | None = None, max_skip: int = 6,
              **options: Any) -> Calibration:
    """``measure`` then ``plan``: the calibrated config for ``method`` on ``target``.

    Args:
        target: a pipeline or model, as for ``cachekit.apply`` (without cachekit applied).
        runs: callables, each one generation on calibration inputs (never the judged ones).
        method: "bac", "ertacache", "lemica" or "cachequant".
        fraction: the computed fraction to plan for (ERTACache, LeMiCa), as for ``plan``.
        max_error: the error bound to plan for instead of ``fraction``, as for ``plan``.
        progress: a tqdm-like bar, as for ``measure``.
        template: LeMiCa's reuse mode, as for ``measure``.
        max_skip: LeMiCa's longest edge, as for ``measure``.
        **options: the planner's own options, as for ``plan``.

    Example:
        >>> from cachekit.calibration import calibrate
        >>> calibrate(None, [], "lemica", fraction=0.4, max_error=0.1)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: cachekit.calibration: give exactly one of fraction and max_error for lemica
    """
    _check_request(method, fraction, max_error)   # before the runs, not after them
    measured = measure(target, runs, method, progress=progress, template=template, max_skip=max_skip)
    return plan(measured, fraction=fraction, max_error=max_error, **options)


def save(cal: Calibration, path: str | Path, *, model_class: str, source: str = "", **measured: Any) -> Path:
    """Write ``cal.config`` as a recipe YAML; ``measured`` (steps, model, device, inputs, seeds, ...)
    goes into its ``measured`` block beside the calibration's own details.

    Args:
        cal: what ``calibrate`` or ``plan`` returned.
        path: the YAML file to write.
        model_class: the transformer class the recipe is for (its ``models`` entry).
        source: where the recipe came from (a command line), kept in the file.
        **measured: what the calibration was measured on, kept in the ``measured`` block.

    Example:
        >>> import tempfile, cachekit
        >>> from cachekit.calibration import Calibration, save
        >>> cal = Calibration("lemica", cachekit.ScheduleConfig(compute_steps=(0, 1, 3), num_steps=4), None)
        >>> path = save(cal, tempfile.mkdtemp() + "/mine.yaml", model_class="MyTransformer", steps=4)
        >>> cachekit.load_recipe(path).config.compute_steps
        (0, 1, 3)
    """
    from .recipe import save_recipe

    block = {"calibration": {**cal.details, **measured.pop("calibration", {})}, **measured}
    return save_recipe(cal.config, path, models=(model_class,), measured=block, source=source, notes=NOTES[cal.method])


def choose_cachequant(measured: Measured, config: CacheQuantConfig,
                      reference: Recording | None) -> tuple[CacheQuantConfig, dict[str, float]]:
    """The best of the plan's variants on the calibration runs' final outputs, against the reference
    recording's outputs (else the recorded model's own): the stack with the correction, without it,
    and sub-block units with a Taylor forecast on the same schedule. A correction fitted on the
    uncached trajectory can lose once reuse steers the generation off it (digits DiT, 28 steps:
    -0.45 dB, eval/bench_quant.py); this keeps it only when it wins where it runs."""
    truth = (reference if reference is not None else measured.data).outputs
    runs = measured.runs
    if measured.target is None or not runs or len(truth) != len(runs) or any(t is None for t in truth):
        warnings.warn("cachekit.calibrate: cachequant's variants were not compared on final outputs (the runs "
                      "return no tensors to compare; return e.g. pipe(..., output_type='pt').images): the "
                      "fitted plan is kept unchecked", stacklevel=3)
        return config, {}
    variants = {"stack": dataclasses.replace(config, correction=()),
                "units": dataclasses.replace(config, correction=(), units=True, forecast="taylor", forecast_order=1)}
    if config.correction:
        variants["stack + correction"] = config
    checked = {}
    for name, cfg in variants.items():
        api.apply(measured.target, cfg)
        try:
            checked[name] = float(np.mean([_error(run(), t) for run, t in zip(runs, truth)]))
        finally:
            api.remove(measured.target)
    best = min(checked, key=lambda k: checked[k])
    return variants[best], checked


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"cachekit.calibration: method must be one of {', '.join(METHODS)}, got {method!r}")


def _check_request(method: str, fraction: float | None, max_error: float | None) -> None:
    """What ``plan`` refuses, checked by ``calibrate`` too before it runs the model."""
    _check_method(method)
    if method != "bac" and (fraction is None) == (max_error is None):
        raise ConfigError(f"cachekit.calibration: give exactly one of fraction and max_error for {method}")
    if method == "cachequant" and fraction is None:
        raise ConfigError("cachekit.calibration: cachequant plans for a fraction= (max_error is not supported)")
