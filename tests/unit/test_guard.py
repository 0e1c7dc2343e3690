"""The forecast guard of FixedIntervalConfig (units + forecast): the pure rule, and the method on
plain tensors (no model): a forecast that holds changes nothing; one that misses computes the next
step, and the interval counts from there."""

import pytest
import torch

from cachekit import ConfigError, FixedIntervalConfig
from cachekit.config import method_for
from cachekit.methods.base import UnitContext
from cachekit.methods.fixed_interval import fixed_interval_compute, guarded_compute


@pytest.mark.parametrize("interval, warmup, final, n", [(3, 2, 0, 28), (2, 1, 1, 10), (4, 0, 2, 17)])
def test_without_misses_the_rule_is_the_fixed_grid(interval, warmup, final, n):
    last, got = None, []
    for t in range(n):
        c = guarded_compute(t, n, interval, warmup, final, last, False)
        got.append(c)
        last = t if c else last
    assert got == [fixed_interval_compute(t, n, interval, warmup, final) for t in range(n)]


def test_a_miss_computes_the_next_step_and_the_grid_restarts_there():
    assert guarded_compute(6, 28, 3, 2, 0, last=5, missed=True)
    assert not guarded_compute(7, 28, 3, 2, 0, last=6, missed=False)
    assert guarded_compute(9, 28, 3, 2, 0, last=6, missed=False)


def run(outputs, guard=0.2, interval=3, warmup=2):
    """Drive the method as the unit path does: per step, decide for each of 2 units; compute ->
    observe_unit with that unit's output at this step. Returns the computed steps and the reads."""
    m = method_for(FixedIntervalConfig(interval=interval, warmup=warmup, final_steps=0, units=True,
                                       forecast="taylor", guard=guard))
    m.bind(None, ("u0", "u1"))
    state, reads, computed = {}, [], []

    def reader(means, n):
        reads.append(n)
        return means.tolist()

    for t, out in enumerate(outputs):
        ctx = [UnitContext(t, len(outputs), u, "cond", True, state, reader) for u in (0, 1)]
        if all(m.decide(c) for c in ctx):
            computed.append(t)
            for c in ctx:
                m.observe_unit(c, out)
    return computed, reads


def test_a_forecast_that_holds_changes_nothing():
    linear = [torch.full((64,), float(t)) + torch.linspace(0, 1, 64) for t in range(12)]
    computed, reads = run(linear)
    assert computed == [t for t in range(12) if fixed_interval_compute(t, 12, 3, 2, 0)] == [0, 1, 2, 5, 8, 11]
    assert reads   # checked at computed steps after warm-up, one read each


def test_a_forecast_that_misses_computes_the_next_step():
    outs = [torch.full((64,), float(t)) for t in range(12)]
    outs[5] = outs[5] * 3   # at step 5 the output jumps: the forecast from steps 1, 2 misses by 2x
    computed, _ = run(outs)
    # 6 and 7 miss too (their forecasts extrapolate through the jump); from 8 on (from 6, 7) it
    # holds again and the grid restarts at 8
    assert computed == [0, 1, 2, 5, 6, 7, 8, 11]


def test_the_guard_needs_units_and_a_forecast():
    with pytest.raises(ConfigError, match="guard checks a forecast of sub-block units"):
        method_for(FixedIntervalConfig(guard=0.1))
    with pytest.raises(ConfigError, match="guard checks a forecast"):
        method_for(FixedIntervalConfig(units=True, guard=0.1))
    with pytest.raises(ConfigError):
        FixedIntervalConfig(guard=-1.0)
