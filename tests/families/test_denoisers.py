"""Pipelines with several denoisers: Wan 2.2's ``transformer`` (high-noise steps) and
``transformer_2`` (low-noise steps) on a tiny offline WanPipeline (tests/helpers/tiny_pipelines.py:
8 steps split 4 + 4 by ``boundary_ratio``, separate cond / uncond forwards)."""

import pytest
import torch

import cachekit
from cachekit import BACConfig, ConfigError, FixedIntervalConfig
from cachekit.api import AlreadyAppliedError
from tiny_pipelines import build_wan22, call_kwargs

pytest.importorskip("diffusers")

EXACT = FixedIntervalConfig(interval=1, warmup=0, final_steps=0)
REUSE = FixedIntervalConfig(interval=2, warmup=1, final_steps=0)


@pytest.fixture(scope="module")
def pipe():
    return build_wan22()


def run(pipe, steps=8):
    with torch.no_grad():
        return pipe(**call_kwargs("wan", pipe, steps=steps))[0]


def _clean(pipe):
    for obj in (pipe, pipe.transformer, pipe.transformer_2, pipe.scheduler):
        assert not [k for k in vars(obj) if "cachekit" in k or k in ("set_timesteps", "step", "forward")], obj


@pytest.fixture(scope="module")
def reference(pipe):
    return run(pipe)


def test_both_experts_run_and_interval_1_is_exact(pipe, reference):
    cachekit.apply(pipe, EXACT)
    try:
        assert torch.equal(run(pipe), reference)
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert set(s.denoisers) == {"transformer", "transformer_2"}
    hi, lo = s.denoisers["transformer"], s.denoisers["transformer_2"]
    assert hi.steps.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and lo.steps.tolist() == [4, 4, 5, 5, 6, 6, 7, 7]
    assert s.steps.tolist() == sorted(s.steps.tolist()) and s.num_calls == 16 and s.computed_fraction == 1.0
    _clean(pipe)
    assert torch.equal(run(pipe), reference)


def test_each_expert_caches_from_its_own_first_step_and_stats_count_both(pipe, reference):
    cachekit.apply(pipe, REUSE)
    try:
        out = run(pipe)
        s = cachekit.stats(pipe)
        lo_direct = cachekit.stats(pipe.transformer_2)
    finally:
        cachekit.remove(pipe)
    hi, lo = s.denoisers["transformer"], s.denoisers["transformer_2"]
    # each expert: its own steps 0..3, warm-up 1 then every 2nd: computed at its steps 0, 1, 3
    assert hi.plan.all(1).tolist() == [True, True, True, True, False, False, True, True]
    assert lo.plan.all(1).tolist() == hi.plan.all(1).tolist()
    assert s.computed_fraction == pytest.approx((hi.plan.sum() + lo.plan.sum()) / (hi.plan.size + lo.plan.size))
    assert s.computed_fraction < 1 and not torch.equal(out, reference)
    assert (lo_direct.plan == lo.plan).all() and lo_direct.computed_fraction == lo.computed_fraction
    assert torch.equal(run(pipe), reference)


def test_a_config_per_expert(pipe, reference):
    cachekit.apply(pipe, {"transformer": EXACT, "transformer_2": REUSE})
    try:
        run(pipe)
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert s.denoisers["transformer"].computed_fraction == 1.0
    assert s.denoisers["transformer_2"].computed_fraction < 1


def test_a_plan_calibrated_for_one_experts_steps(pipe):
    """A calibrated plan is checked against the steps its expert runs (4 of 8), not the pipeline's."""
    names = [f"blocks.{i}.{u}" for i in range(2) for u in ("self_attn", "cross_attn", "ffn")]
    plan4 = BACConfig(plan={n: [0, 1, 3] for n in names}, num_steps=4)
    cachekit.apply(pipe, {"transformer": EXACT, "transformer_2": plan4})
    try:
        run(pipe)
        lo = cachekit.stats(pipe).denoisers["transformer_2"]
    finally:
        cachekit.remove(pipe)
    assert lo.plan.all(1).tolist() == [True, True, True, True, False, False, True, True]
    cachekit.apply(pipe, {"transformer_2": BACConfig(plan={n: [0] for n in names}, num_steps=8)})
    try:
        with pytest.raises(ConfigError, match="calibrated for 8 steps; this generation has 4"):
            run(pipe)
    finally:
        cachekit.remove(pipe)
    _clean(pipe)


def test_another_step_count_splits_again(pipe):
    cachekit.apply(pipe, EXACT)
    try:
        run(pipe, steps=8)
        run(pipe, steps=6)
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    pipe.scheduler.set_timesteps(6)
    high = int((pipe.scheduler.timesteps >= 750).sum())
    assert s.num_steps == 6 and s.denoisers["transformer"].num_calls == 2 * high
    assert s.denoisers["transformer_2"].num_calls == 2 * (6 - high)


def test_bad_input_leaves_the_pipeline_untouched(pipe):
    with pytest.raises(ConfigError, match="transformer_3"):
        cachekit.apply(pipe, {"transformer_3": EXACT})
    _clean(pipe)
    cachekit.apply(pipe.transformer_2, EXACT)
    try:
        with pytest.raises(AlreadyAppliedError, match="WanTransformer3DModel already has cachekit hooks"):
            cachekit.apply(pipe)
        assert "_cachekit_session" not in vars(pipe) and "_cachekit_session" not in vars(pipe.transformer)
    finally:
        cachekit.remove(pipe.transformer_2)
    _clean(pipe)


def test_record_one_expert_and_give_it_its_plan(pipe):
    from cachekit.planning import plan_bac

    with pytest.raises(ValueError, match=r"runs 2 denoisers \(transformer, transformer_2\); record one at a time"):
        cachekit.record(pipe, [lambda: run(pipe)])
    rec = cachekit.record(pipe, [lambda: run(pipe)], denoiser="transformer_2")
    _clean(pipe)
    assert rec.num_steps == 4   # its own steps, not the pipeline's 8
    plan = plan_bac(rec, updates=2).config
    cachekit.apply(pipe, {"transformer_2": plan})
    try:
        run(pipe)
        lo = cachekit.stats(pipe).denoisers["transformer_2"]
    finally:
        cachekit.remove(pipe)
    assert 0 < lo.computed_fraction < 1
