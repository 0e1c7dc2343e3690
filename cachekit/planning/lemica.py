"""Global schedules measured on the final output (LeMiCa, arXiv 2511.00090).

Nodes are the steps 0..T-1 plus an end node T. An edge i -> j means "compute at i and at j, reuse
(hold or forecast) at every step between"; the edge i -> T reuses every step after i, so the last
step itself may be forecast (on the DDIM digits DiT that beat computing it). An edge's weight is the
mean absolute error of the *final output* of a generation in which only that segment is reused,
every other step computed, against the uncached output, averaged over the calibration runs. The
reuse mode is the one that will run (``template``: whole stack or sub-block units, held or forecast).

``lemica_edges`` measures the weights (the only part that runs the model); the planners are pure
functions of the table:

- ``minimax_path``: under a budget of B computed steps, the path whose edge weights, sorted largest
  first, are lexicographically smallest (LeMiCa's criterion: minimise the worst segment, then the
  next). The dynamic program is exact because the lexicographic order of sorted multisets is kept
  when the same weight is added to both (a prefix that is better stays better).
- ``minsum_path``: the smallest summed weight under the same budget (errors taken as adding up).
- ``cheapest_path``: the fewest computed steps with every edge weight <= a bound.

Prefixes are shared. The steps before an edge are the uncached trajectory. Their model outputs are
recorded once, in the uncached run, and replayed: the pipeline gets those tensors back instead of
running the model, and its scheduler sees exactly the uncached state. An edge i -> j therefore costs
T - i + k model calls instead of T. ``EdgeTable.model_calls`` reports what the calibration cost.

Forecasts depend on the computed steps before a reuse segment. In the final plan those are the
path's earlier nodes, which an edge weight cannot know. The edge run computes the k steps before i
on the uncached trajectory (k = the forecast's history depth - 1), so each edge is weighed with the
densest history it could have. The plan's error can differ from its edges' errors (``LeMiCaPlan``
keeps both: ``predicted`` is the largest edge weight; ``choose_lemica`` measures candidate plans
themselves on the calibration runs and keeps the best).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..methods.schedule import ScheduleConfig

__all__ = ["EdgeTable", "LeMiCaPlan", "lemica_edges", "plan_lemica", "choose_lemica", "minimax_path", "minsum_path",
           "cheapest_path", "path_errors", "uniform_path", "local_search"]


# ---- pure planners ------------------------------------------------------------------------------
def _merge(sorted_desc: tuple, w: float) -> tuple:
    """Insert w into a tuple sorted largest first."""
    out = list(sorted_desc)
    k = 0
    while k < len(out) and out[k] >= w:
        k += 1
    out.insert(k, w)
    return tuple(out)


def minimax_path(weights: np.ndarray, budget: int) -> list[int]:
    """Computed steps of the 0 -> T path with at most ``budget`` computed nodes whose edge weights,
    sorted largest first, are lexicographically smallest; ties go to fewer computed steps.

    ``weights`` is (T, T + 1): weights[i, j] for the edge i -> j (j = T: the end), inf where there
    is no edge. Raises ValueError when no path fits the budget (the edges are too short)."""
    W = np.asarray(weights, dtype=np.float64)
    T = W.shape[0]
    if W.shape != (T, T + 1):
        raise ValueError(f"minimax_path: weights must be (T, T + 1), got {W.shape}")
    if budget < 1:
        raise ValueError(f"minimax_path: budget must be >= 1, got {budget}")
    budget = min(budget, T)
    # best[c][j]: (sorted-desc weights, predecessor) of the best path 0 -> j through c computed nodes
    best: list[dict[int, tuple[tuple, int]]] = [dict() for _ in range(budget + 1)]
    best[0][0] = ((), -1)
    for c in range(budget):
        for i, (vec, _) in sorted(best[c].items()):
            if i >= T:
                continue
            for j in range(i + 1, T + 1):
                w = W[i, j]
                if not np.isfinite(w):
                    continue
                cand = _merge(vec, float(w))
                cur = best[c + 1].get(j)
                if cur is None or cand < cur[0]:
                    best[c + 1][j] = (cand, i)
    finals = [(best[c][T][0], c) for c in range(1, budget + 1) if T in best[c]]
    if not finals:
        raise ValueError(f"minimax_path: no path from step 0 to the end computes at most {budget} steps "
                         f"(longest edge too short: raise max_skip or the budget)")
    _, c = min(finals)
    path, j = [], T
    while c > 0:
        i = best[c][j][1]
        path.append(i)
        j, c = i, c - 1
    return sorted(path)


def minsum_path(weights: np.ndarray, budget: int) -> list[int]:
    """Computed steps of the 0 -> T path with at most ``budget`` computed nodes whose edge weights
    have the smallest sum (errors taken as adding up along the trajectory); ties: fewer steps."""
    W = np.asarray(weights, dtype=np.float64)
    T = W.shape[0]
    budget = min(max(1, budget), T)
    cost = np.full((budget + 1, T + 1), np.inf)
    prev = np.full((budget + 1, T + 1), -1, dtype=np.int64)
    cost[0, 0] = 0.0
    for c in range(budget):
        for i in range(T):
            if not np.isfinite(cost[c, i]):
                continue
            for j in range(i + 1, T + 1):
                v = cost[c, i] + W[i, j]
                if v < cost[c + 1, j]:
                    cost[c + 1, j], prev[c + 1, j] = v, i
    finite = [c for c in range(1, budget + 1) if np.isfinite(cost[c, T])]
    if not finite:
        raise ValueError(f"minsum_path: no path from step 0 to the end computes at most {budget} steps")
    c = min(finite, key=lambda k: (cost[k, T], k))
    path, j = [], T
    while c > 0:
        j = int(prev[c, j])
        path.append(j)
        c -= 1
    return sorted(path)


def cheapest_path(weights: np.ndarray, bound: float) -> list[int]:
    """Computed steps of the 0 -> T path with fewest computed nodes whose every edge weight is
    <= ``bound`` (ties: the smaller largest weight). ValueError when none exists."""
    W = np.asarray(weights, dtype=np.float64)
    T = W.shape[0]
    ok = np.where(W <= bound, W, np.inf)
    for budget in range(1, T + 1):
        try:
            path = minimax_path(ok, budget)
        except ValueError:
            continue
        return path
    raise ValueError(f"cheapest_path: no path keeps every edge <= {bound}")


def uniform_path(num_steps: int, budget: int) -> list[int]:
    """``budget`` computed steps spread evenly over 0 .. T-1 (first and last included): the
    calibration-free schedule a plan has to beat."""
    if num_steps < 1 or budget < 1:
        raise ValueError(f"uniform_path: num_steps and budget must be >= 1, got {num_steps}, {budget}")
    budget = min(budget, num_steps)
    if budget == 1:
        return [0]
    return sorted({int(round(v)) for v in np.linspace(0, num_steps - 1, budget)})


def local_search(computed: Sequence[int], num_steps: int, evaluate: Callable[[list[int]], float], *,
                 sweeps: int = 1, max_skip: int | None = None, start_error: float | None = None
                 ) -> tuple[list[int], float, int]:
    """Move one computed step at a time by +-1 (step 0 stays: the first step has nothing to reuse),
    keeping a move when ``evaluate`` (the plan's measured error) drops; ``sweeps`` passes over the
    steps, stopping early after a pass without a move. The number of computed steps never changes,
    nor does any gap exceed ``max_skip``. Returns (steps, error, evaluations run).

    Why: the edge weights price each segment alone, with the densest forecast history; a plan's own
    error also holds how its segments' errors combine. Measured plans correct that locally, one
    generation per calibration run and tried move."""
    best = sorted(int(c) for c in computed)
    err = float(evaluate(list(best))) if start_error is None else float(start_error)
    n_eval = 0 if start_error is not None else 1
    limit = max_skip if max_skip is not None else num_steps
    for _ in range(max(0, sweeps)):
        moved = False
        for k in range(1, len(best)):
            for d in (-1, 1):
                c = best[k] + d
                lo = best[k - 1]
                hi = best[k + 1] if k + 1 < len(best) else num_steps
                if not lo < c < hi or c >= num_steps:
                    continue
                cand = best[:k] + [c] + best[k + 1:]
                nodes = [*cand, num_steps]
                if max(b - a for a, b in zip(nodes, nodes[1:])) > limit:
                    continue
                e = float(evaluate(list(cand)))
                n_eval += 1
                if e < err:
                    best, err, moved = cand, e, True
                    break
        if not moved:
            break
    return best, err, n_eval


def path_errors(weights: np.ndarray, computed: Sequence[int]) -> list[float]:
    """Edge weights along a computed-step list (the end node appended)."""
    W = np.asarray(weights)
    nodes = [*sorted(computed), W.shape[0]]
    return [float(W[a, b]) for a, b in zip(nodes, nodes[1:])]


# ---- the measured table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeTable:
    """Final-output errors of every edge, and what measuring them cost.

    Attributes:
        weights: (T, T + 1) mean absolute error of the final output per edge i -> j; 0 for j = i + 1
            (nothing reused), inf beyond ``max_skip``.
        template: the reuse mode (a ``ScheduleConfig`` whose steps are filled in by the plan).
        model_calls: model forward calls run to measure the table (uncached runs included);
            ``full_calls`` is what the same table costs without replayed prefixes.
        fingerprint: the calibrated model's ``adapters.model_fingerprint``.
    """

    weights: np.ndarray
    num_steps: int
    max_skip: int
    template: ScheduleConfig
    runs: int
    model_calls: int
    full_calls: int
    fingerprint: str
    replayed: bool
    uncached_outputs: list = field(default_factory=list, repr=False, compare=False)


@dataclass
class LeMiCaPlan:
    """A global schedule and where it came from.

    Attributes:
        config: the ``ScheduleConfig`` to apply.
        computed: its computed steps.
        edge_errors: the table's weight of each edge along the path.
        predicted: the largest of them (the plan's error, were segments independent).
    """

    config: ScheduleConfig
    computed: list[int]
    edge_errors: list[float]
    predicted: float
    criterion: str = "minimax"
    checked: dict = field(default_factory=dict)   # candidate -> measured final error (choose_lemica)
    refine_calls: int = 0                         # model calls spent measuring candidates and moves


CRITERIA = ("minimax", "sum")


def plan_lemica(table: EdgeTable, *, budget: int | None = None, fraction: float | None = None,
                max_error: float | None = None, criterion: str = "minimax") -> LeMiCaPlan:
    """The minimax plan (``criterion="sum"``: the smallest summed edge error) for ``budget``
    computed steps (or ``fraction`` of the steps), or the cheapest plan whose every edge error is
    <= ``max_error``."""
    if criterion not in CRITERIA:
        raise ValueError(f"plan_lemica: criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if sum(x is not None for x in (budget, fraction, max_error)) != 1:
        raise ValueError("plan_lemica: give exactly one of budget, fraction and max_error")
    T = table.num_steps
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"plan_lemica: fraction must be in (0, 1], got {fraction}")
        budget = max(1, int(round(fraction * T)))
    if budget is not None:
        computed = (minimax_path if criterion == "minimax" else minsum_path)(table.weights, budget)
    else:
        computed = cheapest_path(table.weights, max_error)
    errs = path_errors(table.weights, computed)
    cfg = dataclasses.replace(table.template, compute_steps=tuple(computed), num_steps=T, model=table.fingerprint)
    return LeMiCaPlan(cfg, computed, errs, max(errs), criterion)


def choose_lemica(target: Any, runs: Sequence[Callable[[], torch.Tensor]], table: EdgeTable, *,
                  budget: int | None = None, fraction: float | None = None, refine: int = 0) -> LeMiCaPlan:
    """Plan with each criterion, run every plan and the evenly spaced schedule of the same budget
    on the calibration ``runs`` (those the table was measured on) and keep the one whose final
    output is closest to the uncached one there; then ``refine`` sweeps of ``local_search`` on the
    same runs (0: none).

    Why: an edge is weighed alone, with the densest forecast history, so the errors of a path's
    edges are neither independent nor measured with the history the plan will give them. On the
    digits DiT at 50 steps the minimax plan beat uniform spacing by 3-4 dB at fraction 0.36 but
    lost to it by 3 dB at 0.5, where many edges of similar weight accumulate. Checking the
    candidates costs one generation per candidate and run, a refinement sweep at most two per
    computed step and run, on calibration inputs only (``refine_calls`` counts the model calls)."""
    from .. import api
    from ..adapters import find_model

    if len(runs) != table.runs:
        raise ValueError(f"choose_lemica: the table was measured on {table.runs} runs, got {len(runs)}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"choose_lemica: refine must be an int >= 0 (sweeps), got {refine!r}")
    model, _ = find_model(target)
    plans = [plan_lemica(table, budget=budget, fraction=fraction, criterion=c) for c in CRITERIA]
    T = table.num_steps
    calls = 0

    def measure(computed: Sequence[int]) -> float:
        nonlocal calls
        cfg = dataclasses.replace(table.template, compute_steps=tuple(computed), num_steps=T, model=table.fingerprint)
        api.apply(target, cfg)
        try:
            with _Forward(model) as fw:
                err = float(np.mean([_error(run(), ref) for run, ref in zip(runs, table.uncached_outputs)]))
        finally:
            api.remove(target)
        calls += fw.calls
        return err

    n = len(plans[0].computed)
    uniform = uniform_path(T, n)
    nodes = [*uniform, T]
    candidates = [(p.criterion, p.computed) for p in plans]
    if max(b - a for a, b in zip(nodes, nodes[1:])) <= table.max_skip and len(uniform) == n:
        candidates.append(("uniform", uniform))
    checked = {name: measure(steps) for name, steps in candidates}
    name, steps = min(candidates, key=lambda c: (checked[c[0]], [k for k, _ in candidates].index(c[0])))
    if refine:
        steps, err, _ = local_search(steps, T, measure, sweeps=refine, max_skip=table.max_skip,
                                     start_error=checked[name])
        if err < checked[name]:
            name = f"{name}+refined"
            checked[name] = err
    best = next((p for p in plans if p.criterion == name), None)
    if best is None:
        errs = path_errors(table.weights, steps)
        cfg = dataclasses.replace(table.template, compute_steps=tuple(steps), num_steps=T, model=table.fingerprint)
        best = LeMiCaPlan(cfg, list(steps), errs, max(errs), name)
    best.checked = checked
    best.refine_calls = calls
    return best


# ---- measuring the edges --------------------------------------------------------------------------
def _clone(obj: Any) -> Any:
    """A model output with every tensor copied (BaseOutput, tuples, dicts, tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):   # diffusers' BaseOutput is an OrderedDict dataclass
        values = {k: _clone(v) for k, v in obj.items()}
        try:
            return type(obj)(**values)
        except TypeError:
            return values
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(v) for v in obj)
    return obj


class _Forward:
    """Wraps ``model.forward`` (over cachekit's hook) for one run: counts calls, records outputs,
    or hands back recorded ones for the first ``replay`` calls."""

    def __init__(self, model: torch.nn.Module, record: bool = False, replay: Sequence[Any] = ()) -> None:
        self.model, self.record, self.replay = model, record, list(replay)
        self.outputs: list[Any] = []
        self.calls = self.ran = 0

    def __enter__(self) -> "_Forward":
        self._saved = vars(self.model).get("forward")
        inner = self.model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            k = self.calls
            self.calls += 1
            if k < len(self.replay):
                return _clone(self.replay[k])
            self.ran += 1
            out = inner(*args, **kwargs)
            if self.record:
                self.outputs.append(_clone(out))
            return out

        self.model.forward = forward
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is None:
            del self.model.forward
        else:
            self.model.forward = self._saved


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def lemica_edges(target: Any, runs: Sequence[Callable[[], torch.Tensor]], *, template: ScheduleConfig | None = None,
                 max_skip: int = 6, replay: bool = True, progress: Any = None) -> EdgeTable:
    """Measure every edge's final-output error on ``runs`` (callables, each one generation returning
    its output tensor, e.g. ``Workload.runs``): one uncached run each, then one run per edge and run.

    Args:
        target: as for ``cachekit.apply`` (cachekit must not be applied).
        template: the reuse mode, e.g. ``ScheduleConfig(units=True, forecast="taylor")``.
        max_skip: the longest edge (an edge of length L reuses L - 1 steps).
        replay: share prefixes by replaying the uncached model outputs (pipelines whose scheduler
            cachekit follows); False runs every edge from step 0.
        progress: an object with ``update(n)`` and ``total`` (a tqdm bar), or None.
    """
    from .. import api
    from ..adapters import find_model, model_fingerprint
    from ..config import method_for
    from ..methods import FixedIntervalConfig

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
        api.apply(target, FixedIntervalConfig(interval=1))   # computes everything; tells each call's step
        try:
            with _Forward(model, record=replay) as fw:
                refs.append(run())
            s = api.stats(target)
        finally:
            api.remove(target)
        calls += fw.calls
        calls_of.append(fw.outputs)
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
    fingerprint = model_fingerprint(model)
    for i, j in edges:
        compute = tuple(s for s in range(T) if not i < s < j)
        cfg = dataclasses.replace(template, compute_steps=compute, num_steps=T, model="")
        start = max(0, i - (depth - 1))     # the forecast's history: computed on the uncached trajectory
        errs = []
        for r, run in enumerate(runs):
            n_replay = int(np.sum(steps_of[r] < start)) if replay else 0
            api.apply(target, cfg)
            try:
                session = vars(model)["_cachekit_session"]
                session.prefix_replayed = n_replay > 0
                with _Forward(model, replay=calls_of[r][:n_replay]) as fw:
                    out = run()
                got = api.stats(target).steps
            finally:
                api.remove(target)
            if n_replay and (len(got) == 0 or int(got[0]) != start):
                raise RuntimeError(f"lemica_edges: replayed prefixes did not line up (first computed step "
                                   f"{int(got[0]) if len(got) else None}, expected {start}); use replay=False")
            calls += fw.ran
            full += fw.calls
            errs.append(_error(out, refs[r]))
            if progress is not None:
                progress.update(1)
        W[i, j] = float(np.mean(errs))
    return EdgeTable(W, T, max_skip, template, len(runs), calls, full, fingerprint, replay, refs)
