"""BAC's scheduling rules against brute force and their stated properties (no model)."""

import itertools

import numpy as np
import pytest

from cachekit.planning.bac import (acs_schedule, bubbling_union, schedule_value, segment_costs,
                                           similarity_matrix, top_volatile, volatility)


def brute_force(sim, updates, force_last):
    T = sim.shape[0]
    best, best_steps = -np.inf, None
    inner = range(1, T - 1) if force_last else range(1, T)
    k = updates - 2 if force_last else updates - 1
    for rest in itertools.combinations(inner, k):
        steps = [0, *rest] + ([T - 1] if force_last else [])
        v = schedule_value(sim, steps)
        if v > best + 1e-12:
            best, best_steps = v, steps
    return best, best_steps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("force_last", [True, False])
def test_dp_matches_brute_force(seed, force_last):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(4, 9))
    feats = np.cumsum(rng.normal(size=(T, 5)), axis=0)   # a drifting trajectory, like unit outputs
    sim = similarity_matrix(feats, "cosine" if seed % 2 else "l1")
    for updates in range(2, T + 1):
        steps = acs_schedule(sim, updates, force_last)
        best, _ = brute_force(sim, updates, force_last)
        assert schedule_value(sim, steps) == pytest.approx(best, abs=1e-9)
        assert steps[0] == 0 and steps == sorted(set(steps)) and len(steps) == updates
        assert (steps[-1] == T - 1) or not force_last


def test_budget_of_all_steps_updates_everywhere():
    sim = similarity_matrix(np.random.default_rng(0).normal(size=(6, 3)))
    assert acs_schedule(sim, 6) == list(range(6))
    assert acs_schedule(sim, 1, force_last=False) == [0]
    with pytest.raises(ValueError, match="updates must be >= 2 when the final step is forced"):
        acs_schedule(sim, 1)


def test_segment_costs_by_hand():
    sim = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
    c = segment_costs(sim)
    assert c[0, 2] == pytest.approx(1.7) and c[1, 2] == pytest.approx(1.4) and c[2, 0] == 0
    # updates {0, 2}: [0,1] reuse 0 -> 1 + 0.5 ; [2] -> 1 ; total 2.5 beats {0, 1}: 1 + 1.4 = 2.4
    assert acs_schedule(sim, 2, force_last=False) == [0, 2]


def test_similarity_metrics():
    f = np.array([[1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    s = similarity_matrix(f)
    assert s[0, 2] == pytest.approx(1.0) and s[0, 1] == pytest.approx(0.0)
    assert similarity_matrix(f, "l1")[0, 1] == pytest.approx(-1.5)
    assert similarity_matrix(f, "mse")[0, 2] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="metric must be"):
        similarity_matrix(f, "dot")


def test_volatility_and_top_n():
    assert volatility(np.array([[0.0], [1.0], [3.0]])) == pytest.approx((1 + 3 + 2) / 3)
    assert top_volatile({"a": 0.1, "b": 0.5, "c": 0.3}, 2) == ["b", "c"]


def test_bubbling_union_property():
    rng = np.random.default_rng(1)
    units = [(layer, kind) for layer in range(4) for kind in ("sa", "ca", "ffn")]
    plans = {u: sorted({0, 19, *rng.choice(20, 4).tolist()}) for u in units}
    layer = {u: u[0] for u in units}
    is_ffn = {u: u[1] == "ffn" for u in units}
    selected = [(1, "sa"), (3, "ca"), (0, "ffn")]
    out = bubbling_union(plans, layer, is_ffn, selected)
    for u in selected:
        for v in units:
            if is_ffn[v] and layer[v] >= layer[u]:
                assert set(plans[v]) <= set(out[u])
        assert set(plans[u]) <= set(out[u])
    for u in units:
        if u not in selected:
            assert out[u] == plans[u]
