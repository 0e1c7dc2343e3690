"""Forecasting instead of holding the cached tensor: pure weight rules, then the runtime on toy models."""


import numpy as np
import pytest
import torch

import cachekit
from cachekit import BACConfig, FixedIntervalConfig
from cachekit.config import ConfigError
from cachekit.methods.forecast import foca_weights, forecast_weights, history_depth, lagrange_weights
from test_bac import model as policy_model, plan
from toy import Toy, denoise


# ---- pure rules --------------------------------------------------------------------------------
@pytest.mark.parametrize("points", [(4, 2, 0), (7, 6, 3, 1), (10, 5)])
def test_lagrange_weights_reproduce_polynomials_of_their_degree(points):
    rng = np.random.default_rng(0)
    coef = rng.normal(size=len(points))
    p = np.polynomial.Polynomial(coef)
    for t in (points[0] + 1, points[0] + 3.5):
        w = lagrange_weights(points, t)
        assert sum(wi * p(s) for wi, s in zip(w, points)) == pytest.approx(p(t), rel=1e-9, abs=1e-9)


def test_taylor_order_one_is_the_finite_difference_step_and_order_zero_is_plain_reuse():
    # computed at steps 4 and 2, reused at 5: H4 + (5 - 4) * (H4 - H2) / 2
    assert forecast_weights("taylor", 1, (4, 2), 5) == pytest.approx((1.5, -0.5))
    assert forecast_weights("taylor", 0, (4, 2, 0), 5) == (1.0,)
    assert forecast_weights("none", 3, (4, 2, 0), 5) == (1.0,)
    assert forecast_weights("taylor", 2, (4,), 5) == (1.0,)  # one point: nothing to extrapolate from


def test_foca_is_exact_on_lines_keeps_constants_and_is_damped_against_the_parabola():
    pts, t = (6, 4, 1), 9
    w = foca_weights(pts, t)
    assert sum(w) == pytest.approx(1.0)
    assert sum(wi * (3 * s - 2) for wi, s in zip(w, pts)) == pytest.approx(3 * t - 2)
    quad = lagrange_weights(pts, t)
    assert sum(abs(x) for x in w) < sum(abs(x) for x in quad)  # smaller gain on noise than the parabola
    assert foca_weights((3, 1), 4) == pytest.approx(lagrange_weights((3, 1), 4))  # two points: the line


def test_history_depth_and_bad_forecast():
    assert [history_depth("none", 3), history_depth("taylor", 2), history_depth("foca", 1)] == [1, 3, 3]
    with pytest.raises(ConfigError, match=r"FixedIntervalConfig.forecast must be one of none, taylor, foca, got 'tailor'"):
        FixedIntervalConfig(forecast="tailor")
    with pytest.raises(ConfigError, match=r"forecast_order must be int >= 0 <= 3"):
        FixedIntervalConfig(forecast="taylor", forecast_order=4)


def test_recipes_only_carry_forecast_settings_when_set():
    assert "forecast" not in FixedIntervalConfig(interval=3).to_dict()["settings"]
    d = FixedIntervalConfig(interval=3, forecast="taylor", forecast_order=2).to_dict()["settings"]
    assert d == {"interval": 3, "warmup": 1, "final_steps": 1, "units": False, "forecast": "taylor", "forecast_order": 2}
    assert FixedIntervalConfig.from_settings(d) == FixedIntervalConfig(interval=3, forecast="taylor", forecast_order=2)


# ---- runtime -----------------------------------------------------------------------------------
@torch.no_grad()
def toy_run(cfg, steps=9):
    """Toy's stack residual is 10 t with t = steps-1 ... 0: linear in the step index."""
    m = Toy()
    if cfg is not None:
        cachekit.apply(m, cfg)
        cachekit.reset(m, num_steps=steps)
    x = torch.zeros(2, 3)
    outs = [m(x, torch.tensor(float(t))) for t in range(steps - 1, -1, -1)]
    return torch.stack(outs), (cachekit.stats(m) if cfg is not None else None)


def test_taylor_order_one_reproduces_a_linear_sequence_exactly():
    ref, _ = toy_run(None)
    plain, s_plain = toy_run(FixedIntervalConfig(interval=3, warmup=2))
    taylor, s = toy_run(FixedIntervalConfig(interval=3, warmup=2, forecast="taylor", forecast_order=1))
    assert s.computed_fraction == s_plain.computed_fraction < 0.8
    assert not torch.equal(plain, ref)                 # plain reuse holds a stale residual
    torch.testing.assert_close(taylor, ref, rtol=1e-6, atol=1e-5)
    foca, _ = toy_run(FixedIntervalConfig(interval=3, warmup=2, forecast="foca"))
    torch.testing.assert_close(foca, ref, rtol=1e-6, atol=1e-5)


def test_order_zero_is_plain_reuse_bit_for_bit_and_memory_is_reported():
    plain, s1 = toy_run(FixedIntervalConfig(interval=3, warmup=2))
    zero, s0 = toy_run(FixedIntervalConfig(interval=3, warmup=2, forecast="taylor", forecast_order=0))
    assert torch.equal(plain, zero) and s0.cached_bytes == s1.cached_bytes == 2 * 3 * 4
    _, s2 = toy_run(FixedIntervalConfig(interval=3, warmup=2, forecast="taylor", forecast_order=2))
    assert s2.cached_bytes == 3 * s1.cached_bytes  # k + 1 = 3 cached residuals


def test_forecast_history_is_per_generation():
    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=3, warmup=2, forecast="taylor"))
    x = torch.zeros(2, 3)
    with torch.no_grad():
        for _ in range(2):
            cachekit.reset(m, num_steps=9)
            assert not m._cachekit_session.gen.branches  # nothing cached carries over
            out = torch.stack([m(x, torch.tensor(float(t))) for t in range(8, -1, -1)])
            ref, _ = toy_run(None)
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
            sess = m._cachekit_session
            assert [s for s, _ in sess.gen.branch(0).history[0]] == [8, 5]  # the last two computed steps


def test_unit_forecast_on_bac_plans():
    plain_m, zero_m, tay_m = policy_model(), policy_model(), policy_model()
    p = plan(every={"ffn": 3, "self_attn": 2, "cross_attn": 2})
    cachekit.apply(plain_m, BACConfig(plan=p, num_steps=10))
    cachekit.apply(zero_m, BACConfig(plan=p, num_steps=10, forecast="taylor", forecast_order=0))
    cachekit.apply(tay_m, BACConfig(plan=p, num_steps=10, forecast="taylor", forecast_order=1))
    a, b, c = denoise(plain_m), denoise(zero_m), denoise(tay_m)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert cachekit.stats(tay_m).computed_fraction == cachekit.stats(plain_m).computed_fraction
    assert cachekit.stats(tay_m).cached_bytes > cachekit.stats(plain_m).cached_bytes


def test_each_cfg_branch_keeps_its_own_history():
    """Two calls per step (cond, uncond) with the same timestep: two branches, each forecasting from
    its own cached residuals."""
    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=3, warmup=2, forecast="taylor"))
    cachekit.reset(m, num_steps=9)
    with torch.no_grad():
        for t in range(8, -1, -1):
            for x in (torch.zeros(2, 3), torch.ones(2, 3)):
                out = m(x, torch.tensor(float(t)))
                torch.testing.assert_close(out, x + 10 * t, rtol=1e-6, atol=1e-5)
    branches = m._cachekit_session.gen.branches
    assert set(branches) == {0, 1}
    h0, h1 = (branches[k].history[0] for k in (0, 1))
    assert [s for s, _ in h0] == [s for s, _ in h1] == [8, 5]
    assert all(a[1]["hidden_states"] is not b[1]["hidden_states"] for a, b in zip(h0, h1))
