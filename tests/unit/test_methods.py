"""Decision rules as pure functions: no model, no tensors (except EasyCache's statistics)."""

import math

import pytest
import torch

from cachekit.methods.base import SegmentContext, SegmentOutput
from cachekit.methods.easycache import EasyCache, EasyCacheConfig, easycache_compute, transformation_rate
from cachekit.methods.fixed_interval import fixed_interval_compute


def test_fixed_interval_schedule():
    plan = [fixed_interval_compute(s, 10, interval=3, warmup=2, final_steps=1) for s in range(10)]
    assert plan == [True, True, True, False, False, True, False, False, True, True]


def test_fixed_interval_unknown_num_steps_never_forces_the_end():
    plan = [fixed_interval_compute(s, None, interval=2, warmup=0, final_steps=3) for s in range(6)]
    assert plan == [True, False, True, False, True, False]


def test_fixed_interval_one_always_computes():
    assert all(fixed_interval_compute(s, 7, 1, 0, 0) for s in range(7))


def test_transformation_rate():
    assert transformation_rate(2.0, 4.0) == 0.5
    assert transformation_rate(1.0, 0.0) == math.inf
    assert transformation_rate(0.0, 0.0) == 0.0


def _ec(step, **kw):
    args = dict(num_steps=10, threshold=0.1, warmup=2, rate=1.0, accumulated=0.0,
                input_change=0.01, output_scale=1.0)
    args.update(kw)
    return easycache_compute(step, args.pop("num_steps"), **args)


def test_easycache_forced_steps():
    assert _ec(0) == (True, 0.0) and _ec(1) == (True, 0.0)     # warm-up
    assert _ec(9) == (True, 0.0)                                # last step
    assert _ec(5, rate=None) == (True, 0.0)                     # rate unknown


def test_easycache_accumulates_until_threshold():
    # eps = k * dx / |v| = 2 * 0.02 / 1 = 0.04 per step: reuse, reuse, then 0.12 >= 0.1 -> compute
    acc, out = 0.0, []
    for step in range(2, 6):
        compute, acc = _ec(step, rate=2.0, input_change=0.02, accumulated=acc)
        out.append((compute, round(acc, 6)))
    assert out == [(False, 0.04), (False, 0.08), (True, 0.0), (False, 0.04)]


def test_easycache_zero_threshold_never_reuses():
    assert all(_ec(s, threshold=0.0, input_change=0.0)[0] for s in range(10))


def test_easycache_method_tracks_rate_from_computed_steps():
    m = EasyCache(EasyCacheConfig(threshold=10.0, warmup=2))
    state = {}
    xs = [torch.full((4,), float(v)) for v in (0, 1, 3, 4)]
    vs = [torch.full((4,), float(v)) for v in (0, 2, 6, 8)]   # v = 2x: k = 2
    decisions = []
    for step, (x, v) in enumerate(zip(xs, vs)):
        ctx = SegmentContext(step, 10, 0, 0, True, state, {"hidden_states": x})
        compute = m.decide(ctx)
        decisions.append(compute)
        if compute:
            m.observe(ctx, SegmentOutput({"hidden_states": v}, {"hidden_states": v - x}))
    assert state["k"] == pytest.approx(2.0)
    # step 2: eps = k * |x2 - x1| / |v1| = 2 * 2 / 2 = 2 < 10 -> reuse; step 3: 2 + 2*1/2 = 3 -> reuse
    assert decisions == [True, True, False, False]
    assert state["E"] == pytest.approx(3.0)
