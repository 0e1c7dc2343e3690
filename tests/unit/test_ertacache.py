"""ERTACache: the pure fits and plans, then calibrate -> recipe -> apply on tests/helpers/toy.py."""

import numpy as np
import pytest
import torch

import cachekit
from cachekit import ConfigError, ERTACacheConfig
from cachekit.methods.ertacache import anchors
from cachekit.planning import plan_erta
from cachekit.planning.ertacache import compute_steps, fit_corrections, fit_linear, reuse_error_matrix
from cachekit.recipe import load_recipe, save_recipe
from toy import Toy


@pytest.mark.parametrize("cols", [1, 2, 3])
def test_fit_linear_equals_numpy_lstsq(cols):
    rng = np.random.default_rng(cols)
    X, y = rng.normal(size=(500, cols)), rng.normal(size=500)
    np.testing.assert_allclose(fit_linear(X, y), np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-9, atol=1e-12)


def test_fit_linear_on_dependent_columns_is_the_minimum_norm_solution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    X, y = np.stack([x, 2 * x], axis=1), 3 * x + 0.01 * rng.normal(size=200)
    np.testing.assert_allclose(fit_linear(X, y), np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-6)


def test_reuse_error_matrix_and_plan():
    rng = np.random.default_rng(0)
    base, other = rng.normal(size=64), rng.normal(size=64)
    R = np.stack([base, 2 * base, other])
    err = reuse_error_matrix([R])
    assert err[0, 1] == pytest.approx(0.0, abs=1e-12)   # a multiple: the scale fixes it exactly
    assert 0.5 < err[0, 2] <= 1.0
    steps = compute_steps(reuse_error_matrix([rng.normal(size=(10, 32)).cumsum(0)]), 4)
    assert len(steps) == 4 and steps[0] == 0 and steps[-1] == 9
    assert anchors([0, 3, 6, 9], 5) == (3, 0) and anchors([0, 3], 2) == (0, None)


def test_linear_sequences_are_fitted_exactly():
    rng = np.random.default_rng(1)
    base, d = rng.normal(size=50), rng.normal(size=50)
    R = np.stack([base + t * d for t in range(10)])
    fits = fit_corrections([R, 2 * R], [0, 3, 6, 9])
    g, b, left = fits[5]
    assert (g, b) == pytest.approx((1.0, 2 / 3)) and left < 1e-20   # R_5 = R_3 + (2/3)(R_3 - R_0)
    assert fits[1][1] == 0.0          # no step before 0: gamma only


@torch.no_grad()
def toy_generation(m, steps=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, generator=g)
    cachekit.reset(m, num_steps=steps) if hasattr(m, "_cachekit_session") else None
    return torch.stack([m(x, torch.tensor(float(t))) for t in range(steps - 1, -1, -1)])


def test_calibrate_recipe_apply_reproduces_a_linear_trajectory(tmp_path):
    m = Toy()
    rec = cachekit.record(m, [lambda s=s: toy_generation(m, seed=s) for s in range(2)], level="stack")
    recs, fingerprint = rec.arrays(), rec.fingerprint
    assert len(recs) == 2 and recs[0].shape[0] == 12
    cal = plan_erta(recs, fingerprint, fraction=0.5)
    cfg = cal.config
    assert cfg.computed_fraction == pytest.approx(0.5) and max(cal.fit_error.values()) < 1e-10
    path = save_recipe(cfg, tmp_path / "erta.yaml", source="test")
    assert load_recipe(path).config == cfg
    ref = toy_generation(m)
    cachekit.apply(m, path)
    out = toy_generation(m)
    s = cachekit.stats(m)
    assert s.computed_fraction == pytest.approx(0.5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)   # residual 10 t: linear, fitted exactly
    cachekit.remove(m)
    cachekit.apply(m, ERTACacheConfig(reuse_steps=cfg.reuse_steps, num_steps=12, correction="none"))
    assert not torch.allclose(toy_generation(m), ref, atol=1e-2)  # plain reuse of the same set is not exact


def test_error_bound_picks_the_cheapest_plan_that_meets_it():
    rng = np.random.default_rng(2)
    recs = [rng.normal(size=(12, 40)).cumsum(0) for _ in range(3)]
    loose, tight = plan_erta(recs, max_error=0.5), plan_erta(recs, max_error=0.05)
    assert loose.config.computed_fraction <= tight.config.computed_fraction
    assert max(tight.fit_error.values(), default=0.0) <= 0.05


def test_config_errors_and_step_count_refusal():
    with pytest.raises(ConfigError, match=r"reuse_steps must lie in 1..4"):
        ERTACacheConfig(reuse_steps=(0, 2), num_steps=5)
    with pytest.raises(ConfigError, match=r"step 3 is not a reuse step"):
        ERTACacheConfig(reuse_steps=(2,), coefficients=((3, 1.0, 0.0),), num_steps=5)
    m = Toy()
    cachekit.apply(m, ERTACacheConfig(reuse_steps=(2,), num_steps=5))
    with pytest.raises(ConfigError, match="calibrated for 5 steps; this generation has 7"):
        cachekit.reset(m, num_steps=7)


def test_warmup_steps_are_always_computed():
    rng = np.random.default_rng(3)
    err = reuse_error_matrix([rng.normal(size=(12, 30)).cumsum(0)])
    steps = compute_steps(err, 5, warmup=3)
    assert steps[:3] == [0, 1, 2] and len(steps) == 5 and steps[-1] == 11


def _runs(coef_per_run, seed=0):
    """Recordings (T=4, computed 0, 1, 3) whose reuse step 2 is R2 = 2 R1 - R0 + c R1 per run."""
    g = np.random.default_rng(seed)
    out = []
    for c in coef_per_run:
        R = g.standard_normal((4, 300))
        R[2] = 2 * R[1] - R[0] + c * R[1]
        out.append(R)
    return out


def test_cross_validation_keeps_a_fit_that_carries_over():
    from cachekit.planning.ertacache import cross_validate

    recs = _runs([0.5, 0.5, 0.5])
    cv = cross_validate(recs, [0, 1, 3], [0, 1, 2])
    assert cv["lam"] == 0.0 and cv["cv"][0.0] < 1e-12 < cv["cv"][float("inf")]


def test_cross_validation_falls_back_to_the_forecast_when_fits_do_not_carry_over():
    from cachekit.planning.ertacache import cross_validate, fit_corrections

    recs = _runs([3.0, -3.0])     # each run's own fit is the other's worst case; Taylor is between
    cv = cross_validate(recs, [0, 1, 3], [0, 1])
    assert cv["lam"] > 1.0 and cv["cv"][cv["lam"]] <= cv["cv"][0.0] / 2
    # the prior itself: (gamma, beta) = (1, (2 - 1) / (1 - 0)), the Taylor step through steps 0 and 1
    assert fit_corrections(recs, [0, 1, 3], lam=float("inf"))[2][:2] == (1.0, 1.0)


def test_plan_reports_train_and_heldout_error_and_one_run_uses_the_forecast():
    recs = _runs([0.5, 0.5])
    cal = plan_erta(recs, fraction=0.75, warmup=2, groups=[0, 1])
    v = cal.validation
    assert v["lam"] == 0.0 and v["heldout_error"] <= v["prior_heldout_error"] and v["train_error"] >= 0
    one = plan_erta(recs[:1], fraction=0.75, warmup=2)
    assert one.validation["lam"] == float("inf")
    with pytest.raises(ValueError, match="2 groups for 1 recordings"):
        plan_erta(recs[:1], fraction=0.75, groups=[0, 1])
