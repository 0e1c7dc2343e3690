"""Global schedules: the step-list method (methods/schedule.py), resampling to other step counts,
and the LeMiCa planner (planning/lemica.py): pure rules by hand, then on tiny pipelines."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import cachekit
from cachekit import ConfigError, FixedIntervalConfig, ScheduleConfig
from cachekit.methods.schedule import resample_steps
from cachekit.calibration import choose_lemica, lemica_edges
from cachekit.planning import plan_lemica
from cachekit.planning.lemica import cheapest_path, minimax_path, path_errors
from tiny_pipelines import build, generate

INF = np.inf


# ---- resampling ---------------------------------------------------------------------------------
def test_resample_same_length_is_identity():
    assert resample_steps([0, 2, 5, 9], 10, 10) == (0, 2, 5, 9)


@pytest.mark.parametrize("new", [20, 28, 50, 100])
def test_resample_keeps_fraction_shape_and_ends(new):
    lemica_wan = [0, 1, 2, 3, 4, 5, 7, 10, 16, 23, 30, 37, 44, 49]   # LeMiCa's published Wan2.1 list
    got = resample_steps(lemica_wan, 50, new)
    assert got[0] == 0 and got[-1] == new - 1            # the plan computes its last step: so does this
    assert abs(len(got) / new - 14 / 50) <= 1.5 / new + 0.02
    gaps = np.diff(got)
    assert gaps[: len(gaps) // 3].mean() < gaps[-(len(gaps) // 3):].mean()   # dense early, sparse late


def test_resample_keeps_a_forecast_last_step_forecast():
    got = resample_steps([0, 3, 6], 10, 20)
    assert got[0] == 0 and got[-1] < 19


# ---- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps, message", [
    ((1, 2), r"must include step 0 and lie in 0\.\.5"),
    ((0, 6), r"must include step 0 and lie in 0\.\.5"),
    (("a",), r"must be a list of step indices"),
])
def test_schedule_config_errors_are_one_line(steps, message):
    with pytest.raises(ConfigError, match=message) as e:
        ScheduleConfig(compute_steps=steps, num_steps=6)
    assert "\n" not in str(e.value)


def test_schedule_recipe_round_trip(tmp_path):
    cfg = ScheduleConfig(compute_steps=(0, 1, 3, 7), num_steps=9, units=True, forecast="taylor")
    path = cachekit.save_recipe(cfg, tmp_path / "s.yaml")
    assert cachekit.load_recipe(path).config == cfg


# ---- on a pipeline --------------------------------------------------------------------------------
def gen(pipe, steps=6, seed=0):
    return generate("dit", pipe, steps=steps, seed=seed)


@pytest.fixture(scope="module")
def dit():
    return build("dit")


@pytest.mark.parametrize("units", [False, True])
def test_schedule_equals_fixed_interval_with_the_same_steps(dit, units):
    fixed = FixedIntervalConfig(interval=2, warmup=1, final_steps=0, units=units, forecast="taylor")
    cachekit.apply(dit, fixed)
    want = gen(dit)
    plan = cachekit.stats(dit).plan.any(axis=1)
    cachekit.remove(dit)
    steps = tuple(int(s) for s in np.flatnonzero(plan))
    assert steps == (0, 1, 3, 5)
    cachekit.apply(dit, ScheduleConfig(compute_steps=steps, num_steps=6, units=units, forecast="taylor"))
    got = gen(dit)
    cachekit.remove(dit)
    assert torch.equal(got, want)


def test_every_step_computed_is_bit_exact(dit):
    want = gen(dit)
    cachekit.apply(dit, ScheduleConfig(compute_steps=tuple(range(6)), num_steps=6))
    got = gen(dit)
    cachekit.remove(dit)
    assert torch.equal(got, want)


def test_other_step_count_resampled_with_a_warning(dit):
    cachekit.apply(dit, ScheduleConfig(compute_steps=(0, 1, 2, 4), num_steps=6))
    try:
        with pytest.warns(UserWarning, match=r"made for 6 steps resampled to 12 steps"):
            gen(dit, steps=12)
        s = cachekit.stats(dit)
        computed = sorted(set(int(t) for t in s.steps[s.plan.any(axis=1)]))
        assert computed == list(resample_steps((0, 1, 2, 4), 6, 12))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gen(dit, steps=12)   # warned once per length
    finally:
        cachekit.remove(dit)


def test_other_step_count_refused_on_request(dit):
    want = gen(dit)
    cachekit.apply(dit, ScheduleConfig(compute_steps=(0, 1, 2, 4), num_steps=6, on_length_mismatch="refuse"))
    try:
        with pytest.raises(ConfigError, match=r"made for 6 steps; this generation has 12") as e:
            gen(dit, steps=12)
        assert "\n" not in str(e.value)
        cachekit.remove(dit)
        assert torch.equal(gen(dit), want)    # the pipeline is as it was
    finally:
        if "_cachekit_session" in vars(dit):
            cachekit.remove(dit)


# ---- the planner, by hand ------------------------------------------------------------------------
def table(T, edges):
    W = np.full((T, T + 1), INF)
    for i in range(T):
        W[i, i + 1] = 0.0
    for (i, j), w in edges.items():
        W[i, j] = w
    return W


def test_minimax_beats_shortest_sum():
    # T = 4, budget 2: paths 0->2->end (weights 0.5, 0.5) and 0->1->end (0.0, 0.9), 0->3->end (0.8, 0)
    W = table(4, {(0, 2): 0.5, (2, 4): 0.5, (1, 4): 0.9, (0, 3): 0.8})
    assert minimax_path(W, 2) == [0, 2]                  # max 0.5, although 0->1->end sums to 0.9 < 1.0
    assert path_errors(W, [0, 2]) == [0.5, 0.5]


def test_minimax_is_lexicographic_after_the_largest():
    # both budget-2 paths have largest edge 0.6: the second-largest decides
    W = table(4, {(0, 2): 0.6, (2, 4): 0.4, (0, 3): 0.6, (3, 4): 0.0, (1, 4): 0.7})
    assert minimax_path(W, 2) == [0, 3]
    assert minimax_path(W, 3) == [0, 1, 2]       # (0.4, 0, 0) beats 0->2->3 (0.6, 0, 0); 1->3 is no edge
    assert path_errors(W, [0, 1, 2]) == [0.0, 0.0, 0.4]


def test_budget_too_small_and_cheapest_path():
    W = table(6, {(0, 2): 0.1, (2, 4): 0.2, (4, 6): 0.1, (0, 3): 0.5, (3, 6): 0.5})
    with pytest.raises(ValueError, match=r"at most 1 steps"):
        minimax_path(W, 1)
    assert cheapest_path(W, 0.6) == [0, 3]
    assert cheapest_path(W, 0.25) == [0, 2, 4]
    with pytest.raises(ValueError, match=r"no path keeps every edge <= -1"):
        cheapest_path(W, -1)


# ---- the planner on a pipeline -------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges(dit):
    runs = [lambda s=s: gen(dit, steps=6, seed=s) for s in (0, 1)]
    template = ScheduleConfig(units=True, forecast="taylor")
    return runs, lemica_edges(dit, runs, template=template, max_skip=3)


def test_edge_table_shape_and_cost(edges):
    _, t = edges
    W = t.weights
    assert W.shape == (6, 7) and t.num_steps == 6 and t.runs == 2
    assert all(W[i, i + 1] == 0 for i in range(6))
    assert np.isinf(W[0, 4]) and np.isfinite(W[0, 3]) and np.isfinite(W[4, 6])
    assert (W[np.isfinite(W)] >= 0).all() and W[0, 2] > 0
    assert t.model_calls < t.full_calls      # shared prefixes cost fewer calls


def test_replayed_prefixes_give_the_same_weights(dit, edges):
    runs, t = edges
    plain = lemica_edges(dit, runs, template=t.template, max_skip=3, replay=False)
    assert np.array_equal(plain.weights, t.weights)
    assert plain.model_calls == plain.full_calls > t.model_calls


def test_a_one_edge_plan_has_its_edge_error(dit, edges):
    runs, t = edges
    plan = plan_lemica(t, budget=5)
    assert len(plan.computed) == 5 and plan.config.num_steps == 6
    reused = [s for s in range(6) if s not in plan.computed]
    assert len(reused) == 1
    ref = [r() for r in runs]
    cachekit.apply(dit, dataclasses.replace(plan.config))
    try:
        got = [r() for r in runs]
    finally:
        cachekit.remove(dit)
    err = np.mean([float((g - r).abs().mean()) for g, r in zip(got, ref)])
    assert err == pytest.approx(plan.predicted, rel=1e-6)


def test_plan_options(edges):
    _, t = edges
    assert plan_lemica(t, fraction=0.5).computed == plan_lemica(t, budget=3).computed
    loose = plan_lemica(t, max_error=1e9)
    assert max(loose.edge_errors) <= 1e9 and len(loose.computed) == 2    # 0 -> 3 -> end
    with pytest.raises(ValueError, match="exactly one"):
        plan_lemica(t, budget=3, fraction=0.5)
    assert plan_lemica(t, budget=3).config.model == t.fingerprint


def test_minsum_path_by_hand():
    from cachekit.planning.lemica import minsum_path

    W = table(4, {(0, 2): 0.5, (2, 4): 0.5, (1, 4): 0.9, (0, 3): 0.8})
    assert minsum_path(W, 2) == [0, 3]       # 0.8 + 0 < 0.5 + 0.5 (sum 1.0), where minimax takes [0, 2]
    assert minimax_path(W, 2) == [0, 2]


def test_choose_lemica_keeps_the_candidate_closest_on_the_calibration_runs(dit, edges):

    runs, t = edges
    plan = choose_lemica(dit, runs, t, budget=3)
    assert set(plan.checked) <= {"minimax", "sum", "uniform"} and {"minimax", "sum"} <= set(plan.checked)
    assert plan.checked[plan.criterion] == min(plan.checked.values())
    if plan.criterion != "uniform":
        assert plan.computed == plan_lemica(t, budget=3, criterion=plan.criterion).computed
    assert plan.refine_calls > 0
    with pytest.raises(ValueError, match="measured on 2 runs, got 1"):
        choose_lemica(dit, runs[:1], t, budget=3)
    with pytest.raises(ValueError, match="refine must be an int >= 0"):
        choose_lemica(dit, runs, t, budget=3, refine=-1)


def test_refined_plan_is_measured_no_worse_than_its_start(dit, edges):

    runs, t = edges
    start = choose_lemica(dit, runs, t, budget=3)
    refined = choose_lemica(dit, runs, t, budget=3, refine=2)
    assert len(refined.computed) == len(start.computed) and refined.computed[0] == 0
    assert min(refined.checked.values()) <= min(start.checked.values())
    assert refined.refine_calls > start.refine_calls
    # the reported error is what the plan measures on the calibration runs
    ref = t.uncached_outputs
    cachekit.apply(dit, refined.config)
    try:
        err = np.mean([float((r() - o).abs().mean()) for r, o in zip(runs, ref)])
    finally:
        cachekit.remove(dit)
    assert err == pytest.approx(refined.checked[refined.criterion], rel=1e-6)


def test_uniform_path_and_local_search_by_hand():
    from cachekit.planning.lemica import local_search, uniform_path

    assert uniform_path(10, 4) == [0, 3, 6, 9] and uniform_path(5, 1) == [0] and uniform_path(3, 7) == [0, 1, 2]
    with pytest.raises(ValueError, match="must be >= 1"):
        uniform_path(0, 2)
    # a bowl with its floor at [0, 4, 7]: one step at a time, the search walks there
    target = [0, 4, 7]
    seen = []

    def err(c):
        seen.append(tuple(c))
        return float(sum(abs(a - b) for a, b in zip(c, target)))

    steps, e, n = local_search([0, 2, 5], 10, err, sweeps=10)
    assert steps == target and e == 0.0 and n == len(seen)
    assert all(c[0] == 0 and len(c) == 3 and len(set(c)) == 3 for c in seen)
    # one sweep moves each step at most once; max_skip bounds every gap, the end included
    one, _, _ = local_search([0, 2, 5], 10, err, sweeps=1)
    assert one == [0, 3, 6]
    capped, _, _ = local_search([0, 3, 6], 10, lambda c: -c[-1], sweeps=10, max_skip=4)
    assert capped == [0, 3, 7]      # 8 would leave a gap of 5 after step 3
