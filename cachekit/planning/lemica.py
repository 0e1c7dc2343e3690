"""Global schedules measured on the final output (LeMiCa, arXiv 2511.00090).

Nodes are the steps 0..T-1 plus an end node T. An edge i -> j means "compute at i and at j, reuse
(hold or forecast) at every step between"; the edge i -> T reuses every step after i, so the last
step itself may be forecast (on the DDIM digits DiT that beat computing it). An edge's weight is the
mean absolute error of the *final output* of a generation in which only that segment is reused,
every other step computed, against the uncached output, averaged over the calibration runs. The
reuse mode is the one that will run (``template``: whole stack or sub-block units, held or forecast).

``cachekit.calibration.lemica_edges`` measures the weights (running the model); the planners here
are pure functions of the table:

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
themselves on the calibration runs and keeps the best; the measured part is in
``cachekit.calibration``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ..methods.schedule import ScheduleConfig

__all__ = ["EdgeTable", "LeMiCaPlan", "plan_lemica", "plan_for", "candidate_paths", "minimax_path", "minsum_path",
           "cheapest_path", "path_errors", "uniform_path", "local_search", "CRITERIA"]


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
        num_steps: T, the steps of every calibration run.
        max_skip: the longest edge, in steps.
        runs: the number of calibration runs the weights are averaged over.
        model_calls: model forward calls run to measure the table (uncached runs included);
            ``full_calls`` is what the same table costs without replayed prefixes.
        fingerprint: the calibrated model's ``adapters.model_fingerprint``.
        replayed: whether prefixes were replayed from the uncached runs.
        uncached_outputs: the uncached final output of each calibration run.

    Example:
        >>> import numpy as np
        >>> from cachekit import ScheduleConfig
        >>> from cachekit.planning import EdgeTable, plan_lemica
        >>> T, skip = 6, 3      # edge i -> j reuses the steps between; longer and earlier skips cost more here
        >>> i, j = np.indices((T, T + 1))
        >>> W = np.where((i < j) & (j <= i + skip), (j - i - 1) / (i + 1), np.inf)
        >>> table = EdgeTable(W, T, skip, ScheduleConfig(), runs=1, model_calls=0, full_calls=0, fingerprint="",
        ...                   replayed=False)
        >>> table.weights[1].tolist()       # edges 1 -> j: none back, none beyond max_skip
        [inf, inf, 0.0, 0.5, 1.0, inf, inf]
        >>> plan_lemica(table, budget=3).computed
        [0, 1, 3]
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
        criterion: how the path was chosen: "minimax", "sum", "uniform", or a candidate of
            ``choose_lemica`` ("+refined" when local search moved it).
        checked: candidate -> measured final error (``choose_lemica``; empty otherwise).
        refine_calls: model calls spent measuring candidates and moves (``choose_lemica``).

    Example:
        >>> import numpy as np
        >>> from cachekit import ScheduleConfig
        >>> from cachekit.planning import EdgeTable, plan_lemica
        >>> T, skip = 6, 3      # edge i -> j reuses the steps between; longer and earlier skips cost more here
        >>> i, j = np.indices((T, T + 1))
        >>> W = np.where((i < j) & (j <= i + skip), (j - i - 1) / (i + 1), np.inf)
        >>> table = EdgeTable(W, T, skip, ScheduleConfig(), runs=1, model_calls=0, full_calls=0, fingerprint="",
        ...                   replayed=False)
        >>> p = plan_lemica(table, budget=3)
        >>> p.computed, p.edge_errors, p.predicted     # edges 0 -> 1, 1 -> 3, 3 -> end
        ([0, 1, 3], [0.0, 0.5, 0.5], 0.5)
        >>> p.config.compute_steps, p.config.num_steps
        ((0, 1, 3), 6)
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
    <= ``max_error``.

    Args:
        table: the measured edge errors (``cachekit.calibration.lemica_edges``).
        budget: the number of computed steps (at most; ties go to fewer).
        fraction: instead, the computed fraction of the steps (rounded to a budget, at least 1).
        max_error: instead, the largest edge error the plan may hold; the fewest computed steps.
        criterion: "minimax" (the worst edge first) or "sum" (the summed edge errors).

    Example:
        >>> import numpy as np
        >>> from cachekit import ScheduleConfig
        >>> from cachekit.planning import EdgeTable, plan_lemica
        >>> T, skip = 6, 3      # edge i -> j reuses the steps between; longer and earlier skips cost more here
        >>> i, j = np.indices((T, T + 1))
        >>> W = np.where((i < j) & (j <= i + skip), (j - i - 1) / (i + 1), np.inf)
        >>> table = EdgeTable(W, T, skip, ScheduleConfig(), runs=1, model_calls=0, full_calls=0, fingerprint="",
        ...                   replayed=False)
        >>> plan_lemica(table, budget=3).computed
        [0, 1, 3]
        >>> plan_lemica(table, max_error=0.25).computed     # every edge <= 0.25: more steps computed
        [0, 1, 2, 3, 4]
    """
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


def plan_for(table: EdgeTable, computed: Sequence[int], criterion: str) -> LeMiCaPlan:
    """The plan that computes ``computed`` (a candidate chosen by measuring it, or a refined one).

    Args:
        table: the measured edge errors.
        computed: the computed steps (including step 0; sorted here).
        criterion: the name the plan is kept under (e.g. "uniform").

    Example:
        >>> import numpy as np
        >>> from cachekit import ScheduleConfig
        >>> from cachekit.planning import EdgeTable, plan_for
        >>> T, skip = 6, 3      # edge i -> j reuses the steps between; longer and earlier skips cost more here
        >>> i, j = np.indices((T, T + 1))
        >>> W = np.where((i < j) & (j <= i + skip), (j - i - 1) / (i + 1), np.inf)
        >>> table = EdgeTable(W, T, skip, ScheduleConfig(), runs=1, model_calls=0, full_calls=0, fingerprint="",
        ...                   replayed=False)
        >>> p = plan_for(table, [0, 2, 5], "uniform")
        >>> p.edge_errors, p.predicted      # this table's minimax plan [0, 1, 3] predicts 0.5
        ([1.0, 0.6666666666666666, 0.0], 1.0)
    """
    steps = sorted(int(c) for c in computed)
    errs = path_errors(table.weights, steps)
    cfg = dataclasses.replace(table.template, compute_steps=tuple(steps), num_steps=table.num_steps,
                              model=table.fingerprint)
    return LeMiCaPlan(cfg, steps, errs, max(errs), criterion)


def candidate_paths(table: EdgeTable, *, budget: int | None = None, fraction: float | None = None
                    ) -> list[tuple[str, list[int]]]:
    """The plans worth measuring for one budget, in order of preference on ties: the minimax and the
    min-sum paths, and the evenly spaced schedule of the same size when its gaps fit ``max_skip``.

    Why: an edge is weighed alone, with the densest forecast history, so the errors of a path's
    edges are neither independent nor measured with the history the plan will give them. On the
    digits DiT at 50 steps the minimax plan beat uniform spacing by 3-4 dB at fraction 0.36 but
    lost to it by 3 dB at 0.5, where many edges of similar weight accumulate: the calibration
    measures every candidate (``cachekit.calibration.choose_lemica``).

    Args:
        table: the measured edge errors.
        budget: the number of computed steps, as for ``plan_lemica``.
        fraction: instead, the computed fraction, as for ``plan_lemica``.

    Example:
        >>> import numpy as np
        >>> from cachekit import ScheduleConfig
        >>> from cachekit.planning import EdgeTable, candidate_paths
        >>> T, skip = 6, 3      # edge i -> j reuses the steps between; longer and earlier skips cost more here
        >>> i, j = np.indices((T, T + 1))
        >>> W = np.where((i < j) & (j <= i + skip), (j - i - 1) / (i + 1), np.inf)
        >>> table = EdgeTable(W, T, skip, ScheduleConfig(), runs=1, model_calls=0, full_calls=0, fingerprint="",
        ...                   replayed=False)
        >>> candidate_paths(table, budget=3)
        [('minimax', [0, 1, 3]), ('sum', [0, 1, 3]), ('uniform', [0, 2, 5])]
    """
    plans = [plan_lemica(table, budget=budget, fraction=fraction, criterion=c) for c in CRITERIA]
    out = [(p.criterion, p.computed) for p in plans]
    n = len(plans[0].computed)
    uniform = uniform_path(table.num_steps, n)
    nodes = [*uniform, table.num_steps]
    if max(b - a for a, b in zip(nodes, nodes[1:])) <= table.max_skip and len(uniform) == n:
        out.append(("uniform", uniform))
    return out
