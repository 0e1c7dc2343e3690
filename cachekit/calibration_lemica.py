"""LeMiCa's measurements for ``cachekit.calibration``: the edge table (``lemica_edges``: the
final-output error of every edge of the step graph, one run per edge and calibration run, prefixes
replayed through the runtime's ``ForwardTap``) and the choice among candidate plans for a budget,
made by measuring them on the same runs (``choose_lemica``). Importable from ``cachekit.calibration``
as before."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import api
from .adapters import find_model, model_fingerprint
from .config import method_for
from .methods import FixedIntervalConfig
from .methods.schedule import ScheduleConfig
from .planning.lemica import EdgeTable, LeMiCaPlan, candidate_paths, local_search, plan_for
from .runtime.tap import ForwardTap

Runs = Sequence[Callable[[], Any]]

__all__ = ["lemica_edges", "choose_lemica"]


# ---- LeMiCa: the edge table and the choice among candidate plans --------------------------------
def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def choose_lemica(target: Any, runs: Runs, table: EdgeTable, *, budget: int | None = None,
                  fraction: float | None = None, refine: int = 0) -> LeMiCaPlan:
    """Run every candidate plan of the budget (``planning.lemica.candidate_paths``: minimax,
    min-sum, evenly spaced) on the calibration ``runs`` (those the table was measured on) and keep
    the one whose final output is closest to the uncached one there; then ``refine`` sweeps of
    ``local_search`` on the same runs (0: none). Costs one generation per candidate and run, a
    refinement sweep at most two per computed step and run (``refine_calls`` counts model calls).

    Args:
        target: what the table was measured on.
        runs: the table's calibration runs.
        table: ``lemica_edges``'s result.
        budget: the plan's number of computed steps (or give ``fraction``).
        fraction: the plan's computed fraction (or give ``budget``).
        refine: local-search sweeps.

    Example:
        >>> from cachekit.calibration import choose_lemica
        >>> choose_lemica(None, [], None, fraction=0.4, refine=-1)
        Traceback (most recent call last):
        ...
        ValueError: choose_lemica: refine must be an int >= 0 (sweeps), got -1
    """
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"choose_lemica: refine must be an int >= 0 (sweeps), got {refine!r}")
    if len(runs) != table.runs:
        raise ValueError(f"choose_lemica: the table was measured on {table.runs} runs, got {len(runs)}")
    calls = 0

    def measure_plan(computed: Sequence[int]) -> float:
        nonlocal calls
        cfg = dataclasses.replace(table.template, compute_steps=tuple(computed), num_steps=table.num_steps,
                                  model=table.fingerprint)
        tap = ForwardTap()
        api.apply(target, cfg, tap=tap)
        try:
            err = float(np.mean([_error(run(), ref) for run, ref in zip(runs, table.uncached_outputs)]))
        finally:
            api.remove(target)
        calls += tap.calls
        return err

    candidates = candidate_paths(table, budget=budget, fraction=fraction)
    names = [name for name, _ in candidates]
    checked = {name: measure_plan(steps) for name, steps in candidates}
    name, steps = min(candidates, key=lambda c: (checked[c[0]], names.index(c[0])))
    if refine:
        steps, err, _ = local_search(steps, table.num_steps, measure_plan, sweeps=refine, max_skip=table.max_skip,
                                     start_error=checked[name])
        if err < checked[name]:
            name = f"{name}+refined"
            checked[name] = err
    best = plan_for(table, steps, name)
    best.checked = checked
    best.refine_calls = calls
    return best


def lemica_edges(target: Any, runs: Runs, *, template: ScheduleConfig | None = None, max_skip: int = 6,
                 replay: bool = True, progress: Any = None) -> EdgeTable:
    """Measure every edge's final-output error on ``runs`` (callables, each one generation returning
    its output tensor, e.g. ``Workload.runs``): one uncached run each, then one run per edge and run.

    Args:
        target: as for ``cachekit.apply`` (cachekit must not be applied).
        runs: callables, each one generation returning its output.
        template: the reuse mode, e.g. ``ScheduleConfig(units=True, forecast="taylor")``.
        max_skip: the longest edge (an edge of length L reuses L - 1 steps).
        replay: share prefixes by replaying the uncached model outputs (pipelines whose scheduler
            cachekit follows); False runs every edge from step 0.
        progress: an object with ``update(n)`` and ``total`` (a tqdm bar), or None.

    Example:
        >>> from cachekit.calibration import lemica_edges
        >>> lemica_edges(None, [], max_skip=1)
        Traceback (most recent call last):
        ...
        ValueError: lemica_edges: max_skip must be an int >= 2 (1 reuses nothing), got 1
    """
    template = template or ScheduleConfig()
    if not isinstance(template, ScheduleConfig):
        raise TypeError(f"lemica_edges: template must be a ScheduleConfig, got {type(template).__name__}")
    if isinstance(max_skip, bool) or not isinstance(max_skip, int) or max_skip < 2:
        raise ValueError(f"lemica_edges: max_skip must be an int >= 2 (1 reuses nothing), got {max_skip!r}")
    runs = list(runs)
    if not runs:
        raise ValueError("lemica_edges: no runs")
    model, _ = find_model(target)
    depth = method_for(template).history_depth
    # 1. uncached runs: outputs, the model's outputs per call, the step of each call
    refs, calls_of, steps_of, calls = [], [], [], 0
    for run in runs:
        tap = ForwardTap(record=replay)
        api.apply(target, FixedIntervalConfig(interval=1), tap=tap)   # computes everything; tells each call's step
        try:
            refs.append(run())
            s = api.stats(target)
        finally:
            api.remove(target)
        calls += tap.calls
        calls_of.append(tap.outputs)
        steps_of.append(np.asarray(s.steps))
        if s.num_steps is None or len(set(s.steps.tolist())) != s.num_steps:
            raise ValueError("lemica_edges: each run must be one generation whose number of steps cachekit knows "
                             "(a pipeline call, or cachekit.reset(module, num_steps=...) inside the run)")
    T = int(steps_of[0].max()) + 1
    if any(int(st.max()) + 1 != T for st in steps_of):
        raise ValueError("lemica_edges: the runs have different numbers of steps; use one step count")
    edges = [(i, j) for i in range(T) for j in range(i + 2, min(i + max_skip, T) + 1)]
    if progress is not None and getattr(progress, "total", None) is None:
        progress.total = len(edges) * len(runs)
    W = np.full((T, T + 1), np.inf)
    for i in range(T):
        W[i, i + 1] = 0.0
    full = calls
    for i, j in edges:
        compute = tuple(s for s in range(T) if not i < s < j)
        cfg = dataclasses.replace(template, compute_steps=compute, num_steps=T, model="")
        start = max(0, i - (depth - 1))     # the forecast's history: computed on the uncached trajectory
        errs = []
        for r, run in enumerate(runs):
            n_replay = int(np.sum(steps_of[r] < start)) if replay else 0
            tap = ForwardTap(replay=calls_of[r][:n_replay])
            api.apply(target, cfg, tap=tap)
            try:
                out = run()
                got = api.stats(target).steps
            finally:
                api.remove(target)
            if n_replay and (len(got) == 0 or int(got[0]) != start):
                raise RuntimeError(f"lemica_edges: replayed prefixes did not line up (first computed step "
                                   f"{int(got[0]) if len(got) else None}, expected {start}); use replay=False")
            calls += tap.ran
            full += tap.calls
            errs.append(_error(out, refs[r]))
            if progress is not None:
                progress.update(1)
        W[i, j] = float(np.mean(errs))
    return EdgeTable(W, T, max_skip, template, len(runs), calls, full, model_fingerprint(model), replay, refs)
