"""Host syncs (device-to-host reads) that cachekit adds to a generation, counted on tiny pipelines.

On CPU nothing waits, but every read a GPU would wait on goes through one of the Tensor methods
counted here. Static plans must add none; EasyCache at most one per step (its ``decide``).
"""

import pytest
import torch

import cachekit
from cachekit import BACConfig, BlockDriftConfig, EasyCacheConfig, ERTACacheConfig, FixedIntervalConfig
from tiny_pipelines import FORWARDS_PER_STEP, build, call_kwargs, output_tensor

STEPS = 6
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def count_reads(monkeypatch, family, pipe):
    """Tensor reads during one generation, and its output."""
    calls = {"n": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    try:
        with torch.no_grad():
            out = output_tensor(family, pipe(**call_kwargs(family, pipe, steps=STEPS)))
    finally:
        monkeypatch.undo()
    return calls["n"], out


def bac_plan(pipe):
    """Every unit recomputed at steps 0, 2 and the last: reuse at the others."""
    from cachekit.adapters import find_units, resolve

    units = find_units(resolve(pipe).blocks)
    return BACConfig(plan={u.name: [0, 2, STEPS - 1] for u in units}, num_steps=STEPS)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_static_plans_add_no_host_sync_and_easycache_at_most_one_per_step(monkeypatch, family):
    pipe = build(family).to(torch.float32)
    pipe.transformer.eval()
    baseline, _ = count_reads(monkeypatch, family, pipe)
    configs = {"fixed_interval": FixedIntervalConfig(interval=2, warmup=1, final_steps=1),
               "bac": bac_plan(pipe), "easycache": EasyCacheConfig(threshold=0.5, warmup=1),
               "taylor": FixedIntervalConfig(interval=2, warmup=1, final_steps=0, forecast="taylor"),
               "units_foca": FixedIntervalConfig(interval=2, warmup=1, final_steps=0, units=True, forecast="foca"),
               "ertacache": ERTACacheConfig(reuse_steps=(2, 4), coefficients=((2, 0.9, 0.5), (4, 1.1, 0.2)),
                                            num_steps=STEPS),
               "block_drift": BlockDriftConfig(threshold=10.0, warmup=1, final_steps=1)}
    extra = {}
    for name, config in configs.items():
        cachekit.apply(pipe, config)
        n, _ = count_reads(monkeypatch, family, pipe)
        s = cachekit.stats(pipe)
        cachekit.remove(pipe)
        assert s.steps.tolist() == [k for k in range(STEPS) for _ in range(FORWARDS_PER_STEP[family])]
        assert s.computed_fraction < 1.0, name  # the plans reuse: the reuse path was exercised
        extra[name] = n - baseline
    assert extra["fixed_interval"] == extra["bac"] == extra["taylor"] == extra["units_foca"] == extra["ertacache"] == 0
    assert 0 < extra["block_drift"] <= STEPS - 2   # one read of all range drifts per step
    # EasyCache reads once per step after warm-up, never at the last step: STEPS - 2 here
    assert 0 < extra["easycache"] <= STEPS - 2


def test_bare_module_still_reads_the_timestep(monkeypatch):
    """No scheduler: steps are told apart by the timestep value, one read per model call."""
    from toy import Toy

    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=1, final_steps=1))
    cachekit.reset(m, num_steps=4)
    calls = {"n": 0}
    original = torch.Tensor.__float__

    def counting(self):
        calls["n"] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__float__", counting)
    with torch.no_grad():
        for t in (4, 3, 2, 1):
            m(torch.zeros(2, 3), torch.tensor(t))
    monkeypatch.undo()
    assert calls["n"] == 4 and cachekit.stats(m).plan[:, 0].tolist() == [True, True, False, True]


class Scheduler:
    """set_timesteps and step, like a diffusers scheduler."""

    def set_timesteps(self, n):
        self.timesteps = torch.arange(n, 0, -1)

    def step(self, out, t, x):
        return x


def test_steps_come_from_scheduler_step_and_a_scheduler_never_stepped_is_dropped():
    from toy import Toy

    m = Toy()
    m.scheduler = Scheduler()
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=1, final_steps=1))
    x = torch.zeros(2, 3)
    with torch.no_grad():
        m.scheduler.set_timesteps(4)
        for t in m.scheduler.timesteps:  # the same timestep value at every step: only step() tells them apart
            m.scheduler.step(m(x, torch.tensor(1.0)), t, x)
        assert cachekit.stats(m).steps.tolist() == [0, 1, 2, 3]
        m.scheduler.set_timesteps(4)
        for t in m.scheduler.timesteps:  # a loop that never calls step(): read as 4 branches of step 0
            m(x, t)
        with pytest.warns(RuntimeWarning, match="step never was"):
            m.scheduler.set_timesteps(4)
        for t in m.scheduler.timesteps:  # from now on the timestep value tells the steps apart
            m(x, t)
    assert cachekit.stats(m).steps.tolist() == [0, 1, 2, 3]
    cachekit.remove(m)
    assert "step" not in vars(m.scheduler) and "set_timesteps" not in vars(m.scheduler)
