"""BAC's offline plans (arXiv 2506.13456): scheduling rules as pure functions of recorded statistics.

Adaptive Caching Scheduler: for one unit, choose M update steps that maximise the summed
similarity between each step's true output and the output cached at the last update, by dynamic
programming over segments. Bubbling Union: upstream reuse errors pass almost linearly through later
FFNs (Pearson r ~ 0.99 in the paper), so the most volatile units also update whenever a later FFN
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from ..methods.bac import BACConfig
from ..recording import Recording


def similarity_matrix(features: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """S[a, t] between a unit's output at steps a and t; features shaped (T, D).

    cosine: higher is more similar. "l1" / "mse": the negated mean distance, so that every metric
    is maximised (the paper minimises distances; negating is the same problem).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (steps, dims), got shape {f.shape}")
    if metric == "cosine":
        n = np.linalg.norm(f, axis=1, keepdims=True)
        g = f / np.where(n == 0, 1.0, n)
        return g @ g.T
    if metric == "l1":
        # torch.cdist instead of a (T, T, D) broadcast: for T=100, D=4096 the broadcast allocates
        # 328 MB and took ~1 s per unit and run on this machine; cdist needs no such buffer.
        import torch

        t = torch.from_numpy(f)
        return -(torch.cdist(t, t, p=1.0) / max(f.shape[1], 1)).numpy()
    if metric == "mse":
        sq = (f * f).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (f @ f.T), 0.0)
        np.fill_diagonal(d2, 0.0)
        return -d2 / max(f.shape[1], 1)
    raise ValueError(f"metric must be cosine, l1 or mse, got {metric!r}")


def segment_costs(sim: np.ndarray) -> np.ndarray:
    """cost[a, b] = sum_{t=a..b} S[a, t]: compute at a, reuse a's output through b (b >= a)."""
    s = np.asarray(sim, dtype=np.float64)
    upper = np.triu(s)
    return np.triu(np.cumsum(upper, axis=1))


def acs_schedule(sim: np.ndarray, updates: int, force_last: bool = True) -> list[int]:
    """Update steps (sorted, always starting at 0) for a budget of ``updates`` computed steps.

    dp[1][i] = cost[0][i]; dp[k][i] = max_{j<i} dp[k-1][j] + cost[j+1][i]; backtrack from
    dp[M][T-1]. With ``force_last`` the final step is always computed (as the official code does):
    the first T-1 steps get M-1 updates and step T-1 is added. O(M T^2).
    """
    T = int(np.asarray(sim).shape[0])
    if updates < 1:
        raise ValueError(f"updates must be >= 1, got {updates}")
    if force_last and T > 1:
        if updates == 1:
            raise ValueError("updates must be >= 2 when the final step is forced")
        return acs_schedule(np.asarray(sim)[:T - 1, :T - 1], updates - 1, force_last=False) + [T - 1]
    m = min(updates, T)
    cost = segment_costs(sim)
    dp = np.full((m + 1, T), -np.inf)
    arg = np.zeros((m + 1, T), dtype=np.int64)
    dp[1] = cost[0]
    for k in range(2, m + 1):
        for i in range(k - 1, T):
            j = np.arange(k - 2, i)               # last segment is [j+1, i]
            cand = dp[k - 1, j] + cost[j + 1, i]
            best = int(np.argmax(cand))
            dp[k, i], arg[k, i] = cand[best], j[best]
    steps, i = [], T - 1
    for k in range(m, 1, -1):
        j = int(arg[k, i])
        steps.append(j + 1)
        i = j
    return [0] + sorted(steps)


def schedule_value(sim: np.ndarray, steps: Sequence[int]) -> float:
    """The objective ``acs_schedule`` maximises, for any sorted update set starting at 0."""
    cost = segment_costs(sim)
    T = cost.shape[0]
    bounds = list(steps) + [T]
    return float(sum(cost[a, b - 1] for a, b in zip(bounds[:-1], bounds[1:])))


def volatility(features: np.ndarray) -> float:
    """Mean over step pairs a < b of mean|X(a) - X(b)|; features shaped (T, D)."""
    f = np.asarray(features, dtype=np.float64)
    T = f.shape[0]
    if T < 2:
        return 0.0
    d = -similarity_matrix(f, "l1")
    return float(d[np.triu_indices(T, 1)].mean())


def bubbling_union(plans: Mapping[Hashable, Sequence[int]], layer: Mapping[Hashable, int],
                   is_ffn: Mapping[Hashable, bool], selected: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """For each selected unit, add the update steps of every FFN unit in its own and later layers."""
    out = {u: sorted(set(p)) for u, p in plans.items()}
    for u in selected:
        extra = set(out[u])
        for v, p in plans.items():
            if is_ffn[v] and layer[v] >= layer[u]:
                extra |= set(p)
        out[u] = sorted(extra)
    return out


def top_volatile(vol: Mapping[Hashable, float], n: int) -> list[Hashable]:
    """The n most volatile units (ties broken by unit order)."""
    order = sorted(vol, key=lambda u: -vol[u])
    return order[:max(0, n)]


# ---- a plan from a recording ------------------------------------------------------------------
@dataclass
class BACPlan:
    """A calibrated BAC plan and what it was made from.

    Attributes:
        config: the ``BACConfig`` to apply.
        volatility: per unit name, the mean absolute difference between its outputs at two steps,
            over all pairs of steps (averaged over the generations).
        selected: the ``top_n`` most volatile units, which Bubbling Union updated.
        updates, top_n, metric: the options the plan was made with (``plan_bac``).
        runs: the recorded generations it was made from.

    Example:
        >>> import numpy as np
        >>> from cachekit import Recording
        >>> from cachekit.planning import plan_bac
        >>> angle = {0: [0, .1, .2, 2.0, 2.1], 1: [0, .3, .6, .9, 1.2]}    # unit -> its output's direction per step
        >>> units = {k: {t: np.array([np.cos(a), np.sin(a)]) for t, a in enumerate(v)} for k, v in angle.items()}
        >>> rec = Recording("units", ("0.attn", "0.ffn"), ("self_attn", "ffn"), (0, 0), [{0: units}], [0], "")
        >>> p = plan_bac(rec, updates=3, top_n=1)
        >>> p.selected, p.volatility["0.attn"] > p.volatility["0.ffn"], p.runs
        (['0.attn'], True, 1)
    """

    config: BACConfig
    volatility: dict[str, float]
    selected: list[str]
    updates: int
    top_n: int
    metric: str
    runs: int


def unit_statistics(rec: Recording, metric: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per unit name: the similarity matrix over steps averaged over the recorded generations (each
    generation's leader branch), and the volatility. Kept in ``rec.memo`` per metric, so plans for
    several budgets share them."""
    key = ("bac", metric)
    if key not in rec.memo:
        sims, vols = {}, {}
        for k, name in enumerate(rec.columns):
            feats = [rec.features(k, r) for r in range(len(rec.runs))]
            sims[name] = np.mean([similarity_matrix(f, metric) for f in feats], axis=0)
            vols[name] = float(np.mean([volatility(f) for f in feats]))
        rec.memo[key] = (sims, vols)
    return rec.memo[key]


def plan_bac(rec: Recording, *, updates: int, top_n: int = 4, metric: str = "cosine",
             force_last: bool = True) -> BACPlan:
    """The BAC plan for a unit recording (``cachekit.record(..., level="units")``): the Adaptive
    Caching Scheduler per unit, then Bubbling Union for the ``top_n`` most volatile units.

    Args:
        rec: a recording of sub-block units; every generation's leader branch is used.
        updates: computed steps per unit before Bubbling Union (step 0 always among them).
        top_n: how many of the most volatile units also update whenever an FFN unit of their own
            or a later layer does.
        metric: similarity of a unit's outputs at two steps: "cosine", "l1" or "mse".
        force_last: always compute the last step (one of the ``updates``).

    Example:
        >>> import numpy as np
        >>> from cachekit import Recording
        >>> from cachekit.planning import plan_bac
        >>> angle = {0: [0, .1, .2, 2.0, 2.1], 1: [0, .3, .6, .9, 1.2]}    # unit -> its output's direction per step
        >>> units = {k: {t: np.array([np.cos(a), np.sin(a)]) for t, a in enumerate(v)} for k, v in angle.items()}
        >>> rec = Recording("units", ("0.attn", "0.ffn"), ("self_attn", "ffn"), (0, 0), [{0: units}], [0], "")
        >>> plan_bac(rec, updates=3, top_n=0).config.plan     # the attention turns at step 3
        (('0.attn', (0, 3, 4)), ('0.ffn', (0, 2, 4)))
        >>> plan_bac(rec, updates=3, top_n=1).config.plan     # and, most volatile, follows the FFN's steps
        (('0.attn', (0, 2, 3, 4)), ('0.ffn', (0, 2, 4)))
    """
    if rec.level != "units":
        raise ValueError(f"plan_bac needs a recording of sub-block units (level='units'), got level={rec.level!r}")
    T = rec.num_steps
    sims, vols = unit_statistics(rec, metric)
    plans = {n: acs_schedule(sims[n], updates, force_last=force_last) for n in rec.columns}
    selected = top_volatile(vols, top_n)
    plans = bubbling_union(plans, dict(zip(rec.columns, rec.layers)),
                           {n: kind == "ffn" for n, kind in zip(rec.columns, rec.kinds)}, selected)
    cfg = BACConfig(plan=plans, num_steps=T, model=rec.fingerprint)
    return BACPlan(cfg, vols, selected, updates, top_n, metric, len(rec.runs))
