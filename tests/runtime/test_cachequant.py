"""CacheQuant: the pure planner (schedule DP, per-channel correction, held-out fallbacks), the config,
and the runtime's per-channel correction of reuse steps on tiny pipelines (quantized and not)."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

import cachekit
from cachekit import CacheQuantConfig, ConfigError, ScheduleConfig
from cachekit.planning.cachequant import evenly_spaced, fit_channels, plan_cachequant, reuse_costs
from cachekit.recording import Recording

STEPS = 8


def _recording(runs, channels):
    return Recording("stack", ("stack",), (), (), [{0: {0: dict(enumerate(r))}} for r in runs], [0] * len(runs), "fp",
                     channels={0: channels})


# ---- pure ------------------------------------------------------------------------------------------------
def test_the_schedule_is_the_best_set_of_computed_steps_for_the_l1_cost():
    rng = np.random.default_rng(0)
    walk = [np.cumsum(rng.normal(size=(10, 32)) * rng.uniform(0.1, 2, size=(10, 1)), axis=0) for _ in range(3)]
    rec = _recording(walk, np.arange(32) % 4)
    plan = plan_cachequant(rec, fraction=0.4, correct=False)
    cost = reuse_costs(rec.arrays(), rec.arrays())

    def total(steps):
        return sum(cost[max(s for s in steps if s <= t), t] for t in range(10))

    # the DP's set (step 0 and the last step always computed) against every such set of 4
    best = min(((0, *mid, 9) for mid in itertools.combinations(range(1, 9), 2)), key=total)
    assert plan.schedule in ("dps", "even") and len(plan.computed) == 4
    if plan.schedule == "dps":
        assert total(plan.computed) == pytest.approx(total(best))
    assert plan.config.correction == () and plan.ridge == float("inf")


def test_quantization_error_in_the_reference_moves_the_schedule():
    """Steps whose quantized residual is far from the full-precision one are worth computing less."""
    rng = np.random.default_rng(1)
    base = [np.cumsum(rng.normal(size=(12, 16)), axis=0) for _ in range(3)]
    quant = [b.copy() for b in base]
    for q in quant:
        q[[2, 3, 4]] += 5.0   # the quantized model is badly off at steps 2-4: reusing them costs
    p_ref = plan_cachequant(_recording(quant, np.arange(16) % 2), fraction=0.34, correct=False,
                            reference=_recording(base, np.arange(16) % 2))
    p_self = plan_cachequant(_recording(quant, np.arange(16) % 2), fraction=0.34, correct=False)
    assert p_ref.computed != p_self.computed


def test_the_channel_fit_recovers_a_line_and_the_ridge_pulls_it_to_none():
    rng = np.random.default_rng(2)
    channel = np.arange(40) % 4
    x = rng.normal(size=(50, 40))
    scale, shift = np.array([0.5, 1.0, 2.0, 1.5]), np.array([0.1, -0.2, 0.0, 1.0])
    y = x * scale[channel] + shift[channel]
    a, b = fit_channels(x, y, channel, 4, 0.0)
    assert np.allclose(a, scale) and np.allclose(b, shift)
    a1, _ = fit_channels(x, y, channel, 4, 1.0)
    assert np.allclose(a1, (scale + 1) / 2)                  # halfway to 1 at ridge 1
    a_inf, b_inf = fit_channels(x, y, channel, 4, float("inf"))
    assert (a_inf == 1).all() and (b_inf == 0).all()


def test_a_correction_that_does_not_hold_out_is_dropped():
    """Reuse is already unbiased (each run's signal stays, fresh noise adds): a fitted line only
    fits that noise, and held out it loses to no correction."""
    rng = np.random.default_rng(3)
    runs = [10 * rng.normal(size=(1, 64)) + rng.normal(size=(8, 64)) for _ in range(4)]
    plan = plan_cachequant(_recording(runs, np.arange(64) % 8), fraction=0.5, forecast="none")
    assert plan.ridge == float("inf") and plan.config.correction == ()
    scores = plan.validation["correction_mse_heldout"]
    assert scores["none"] <= min(v for k, v in scores.items() if k != "none")


def test_a_systematic_reuse_error_is_corrected_and_holds_out():
    rng = np.random.default_rng(4)
    grow = np.linspace(1, 3, STEPS)[:, None]   # residuals grow along the steps: reuse under-shoots
    runs = [grow * rng.normal(1.0, 0.05, size=(1, 32)) + rng.normal(0, 0.01, size=(STEPS, 32)) for _ in range(3)]
    plan = plan_cachequant(_recording(runs, np.arange(32) % 4), fraction=0.375, forecast="none")
    assert plan.ridge < float("inf") and plan.config.correction
    scores = plan.validation["correction_mse_heldout"]
    assert scores[plan.ridge] < 0.5 * scores["none"]
    step, scales, shifts = plan.config.correction[0]
    assert len(scales) == len(shifts) == 4 and step not in plan.computed


def test_evenly_spaced_and_bad_requests():
    assert evenly_spaced(10, 4) == (0, 3, 6, 9) and evenly_spaced(5, 9) == (0, 1, 2, 3, 4)
    rec = _recording([np.zeros((4, 8))] * 2, np.arange(8) % 2)
    for kwargs, msg in (({"fraction": 0}, "fraction"), ({"fraction": 0.5, "reference": _recording([np.zeros((5, 8))] * 2, np.arange(8))},
                                                           "same runs")):
        with pytest.raises(ValueError, match=msg):
            plan_cachequant(rec, **kwargs)
    with pytest.raises(ValueError, match="two calibration generations"):
        plan_cachequant(_recording([np.zeros((4, 8))], np.arange(8)), fraction=0.5)


def test_config_checks_and_recipe_round_trip(tmp_path):
    c = CacheQuantConfig(compute_steps=(0, 3), num_steps=4, correction={1: [[1.0, 2.0], [0.0, 0.5]], 2: [[1, 1], [0, 0]]})
    assert c.correction == ((1, (1.0, 2.0), (0.0, 0.5)), (2, (1.0, 1.0), (0.0, 0.0)))
    path = cachekit.save_recipe(c, tmp_path / "cq.yaml", models=("X",))
    assert cachekit.load_recipe(path).config == c
    for bad, msg in (({"compute_steps": (1, 2)}, "include step 0"),
                     ({"correction": ((0, (1.0,), (0.0,)),)}, "not a reuse step"),
                     ({"correction": ((1, (1.0,), (0.0, 1.0)),)}, "one scale and shift per channel"),
                     ({"correction": ((1, (1.0,), (0.0,)), (2, (1.0, 1.0), (0.0, 0.0)))}, "channels"),
                     ({"correction": ((1, (1.0,), (0.0,)),), "units": True}, "needs units=False")):
        with pytest.raises(ConfigError, match=msg) as e:
            CacheQuantConfig(**{"compute_steps": (0, 3), "num_steps": 4, **bad})
        assert "\n" not in str(e.value)


# ---- on tiny pipelines -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux():
    from tiny_pipelines import build

    pipe = build("flux")
    for blocks in (pipe.transformer.transformer_blocks, pipe.transformer.single_transformer_blocks):
        for p in blocks.parameters():   # small random weights: zero-initialised gates make blocks identities
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.05)
    return pipe


def _gen(pipe, seed=0):
    from tiny_pipelines import generate

    return generate("flux", pipe, steps=STEPS, seed=seed)


def test_no_correction_is_the_schedule_and_a_correction_changes_only_reuse_steps(flux):
    steps = (0, 3, 5, 7)
    plain = CacheQuantConfig(compute_steps=steps, num_steps=STEPS, forecast="taylor")
    width = flux.transformer.config.num_attention_heads * flux.transformer.config.attention_head_dim
    ones = CacheQuantConfig(compute_steps=steps, num_steps=STEPS, forecast="taylor",
                            correction=tuple((t, (1.0,) * width, (0.0,) * width) for t in range(STEPS) if t not in steps))
    runs = {}
    for name, cfg in (("schedule", ScheduleConfig(compute_steps=steps, num_steps=STEPS, forecast="taylor")),
                      ("plain", plain), ("ones", ones),
                      ("half", dataclasses.replace(ones, correction=tuple((t, tuple(0.5 for _ in a), b) for t, a, b in ones.correction)))):
        cachekit.apply(flux, cfg)
        try:
            runs[name] = (_gen(flux), cachekit.stats(flux).computed_fraction)
        finally:
            cachekit.remove(flux)
    assert torch.equal(runs["plain"][0], runs["schedule"][0])
    assert torch.allclose(runs["ones"][0], runs["plain"][0], atol=1e-6)
    assert not torch.allclose(runs["half"][0], runs["plain"][0], atol=1e-3)
    assert runs["half"][1] == runs["plain"][1] == 0.5


def test_another_step_count_or_width_is_refused_in_one_line(flux):
    cachekit.apply(flux, CacheQuantConfig(compute_steps=(0, 2), num_steps=4))
    try:
        with pytest.raises(ConfigError, match="calibrated for 4 steps") as e:
            _gen(flux)
        assert "\n" not in str(e.value)
    finally:
        cachekit.remove(flux)
    cachekit.apply(flux, CacheQuantConfig(compute_steps=(0, 7), num_steps=STEPS, correction=((1, (1.0,) * 3, (0.0,) * 3),)))
    try:
        with pytest.raises(ConfigError, match="3 channels"):
            _gen(flux)
    finally:
        cachekit.remove(flux)


def test_calibrated_on_a_quantized_model_against_its_full_precision_recording(flux):
    ao = pytest.importorskip("torchao.quantization", reason="torchao quantizes the transformer")
    from tiny_pipelines import build

    pipe = build("flux")
    pipe.transformer.load_state_dict(flux.transformer.state_dict())
    runs = [lambda s=s: _gen(pipe, s) for s in (1, 2, 3)]
    reference = cachekit.record(pipe, runs, level="stack")
    assert reference.channels[0].max() < reference.arrays()[0].shape[1]
    ao.quantize_(pipe.transformer, ao.Int8DynamicActivationInt8WeightConfig())
    quantized = _gen(pipe, 9)
    cal = cachekit.calibrate(pipe, runs, "cachequant", fraction=0.4, reference=reference)
    assert cal.method == "cachequant" and len(cal.config.compute_steps) == round(0.4 * STEPS)
    assert set(cal.details["validation"]) == {"schedule_l1_heldout", "correction_mse_heldout", "folds"}
    # the variant kept is the one with the least final-output error on the calibration runs, against
    # the full-precision outputs the reference recording kept
    checked = cal.details["checked_final_error"]
    assert len(reference.outputs) == 3 and {"stack", "units"} <= set(checked)
    assert checked[cal.details["chosen"]] == min(checked.values())
    assert cal.config.units == (cal.details["chosen"] == "units")
    cachekit.apply(pipe, cal.config)
    try:
        out = _gen(pipe, 9)
        assert cachekit.stats(pipe).computed_fraction == pytest.approx(0.375)
    finally:
        cachekit.remove(pipe)
    assert torch.isfinite(out).all() and not torch.equal(out, quantized)
    assert torch.equal(_gen(pipe, 9), quantized)   # remove is exact


def test_runs_without_tensors_to_compare_say_the_variants_went_unchecked(flux):
    runs = [lambda s=s: _gen(flux, s).tolist() for s in (1, 2)]   # results, but no tensors
    with pytest.warns(UserWarning, match="variants were not compared on final outputs") as seen:
        cal = cachekit.calibrate(flux, runs, "cachequant", fraction=0.5)
    assert len([w for w in seen if "variants were not compared" in str(w.message)]) == 1
    assert cal.details["checked_final_error"] == {} and "\n" not in str(seen[0].message)
