"""All nine diffusers families, end to end on tiny random-weight pipelines (tests/helpers/tiny_pipelines.py).

Random weights are fine here: these tests check plumbing (exactness, reversibility, isolation,
where residuals are taken and put back), never quality.
"""

import inspect

import pytest
import torch

import cachekit
from cachekit import BlockDriftConfig, EasyCacheConfig, ERTACacheConfig, FixedIntervalConfig
from tiny_pipelines import (ALT_FRAMES, ALT_SIZE, FAMILIES, FORWARDS_PER_STEP, SUPPORTS_SIZE, VIDEO_FAMILIES,
                            build, call_kwargs, output_tensor)

NOOPS = (FixedIntervalConfig(interval=1, warmup=0, final_steps=0), EasyCacheConfig(threshold=0.0, warmup=0),
         BlockDriftConfig(threshold=0.0, warmup=1, final_steps=0), ERTACacheConfig(reuse_steps=(), num_steps=4))
REUSE = FixedIntervalConfig(interval=2, warmup=1, final_steps=0)  # 3 steps: compute 0, 1; reuse 2

# Written out here, independently of cachekit's adapter table (so a wrong table cannot pass by
# agreeing with itself): block lists, stream arguments, and the order of each block's returned tuple.
EXPECTED = {
    "dit": (("transformer_blocks",), ("hidden_states",), None),
    "pixart": (("transformer_blocks",), ("hidden_states",), None),
    "flux": (("transformer_blocks", "single_transformer_blocks"), ("hidden_states", "encoder_hidden_states"),
             ("encoder_hidden_states", "hidden_states")),
    "sd3": (("transformer_blocks",), ("hidden_states", "encoder_hidden_states"),
            ("encoder_hidden_states", "hidden_states")),
    "qwenimage": (("transformer_blocks",), ("hidden_states", "encoder_hidden_states"),
                  ("encoder_hidden_states", "hidden_states")),
    "wan": (("blocks",), ("hidden_states",), None),
    "cogvideox": (("transformer_blocks",), ("hidden_states", "encoder_hidden_states"),
                  ("hidden_states", "encoder_hidden_states")),
    "ltx": (("transformer_blocks",), ("hidden_states",), None),
    "hunyuanvideo": (("transformer_blocks", "single_transformer_blocks"), ("hidden_states", "encoder_hidden_states"),
                     ("hidden_states", "encoder_hidden_states")),
}


def generate(family, pipe, **kw):
    with torch.no_grad():
        return output_tensor(family, pipe(**call_kwargs(family, pipe, **kw)))


def all_objects(pipe):
    mods = [m for c in pipe.components.values() if isinstance(c, torch.nn.Module) for m in c.modules()]
    return [pipe, pipe.scheduler, *mods]


PATCHABLE = ("forward", "cache_context", "set_timesteps", "__call__")


def snapshot(pipe):
    """Attribute names of every object, and the identity of anything callable we may patch
    (values such as scheduler.timesteps legitimately change from call to call)."""
    return [(id(o), sorted(vars(o)), [id(vars(o).get(n)) for n in PATCHABLE]) for o in all_objects(pipe)]


def blocks_of(family, pipe):
    lists, _, _ = EXPECTED[family]
    return [b for name in lists for b in getattr(pipe.transformer, name)]


@pytest.mark.parametrize("family", FAMILIES)
def test_noop_configs_bit_exact_and_remove_restores(family):
    pipe = build(family)
    ref = generate(family, pipe, steps=4)
    before = snapshot(pipe)   # after a call: pipelines set attributes of their own when called
    for cfg in NOOPS:
        cachekit.apply(pipe, cfg)
        assert torch.equal(generate(family, pipe, steps=4), ref), cfg
        s = cachekit.stats(pipe)
        assert s.computed_fraction == 1.0 and s.num_calls == 4 * FORWARDS_PER_STEP[family]
        assert s.num_steps == 4 and s.steps.tolist() == sorted(list(range(4)) * FORWARDS_PER_STEP[family])
        cachekit.remove(pipe)
        assert snapshot(pipe) == before
        assert torch.equal(generate(family, pipe, steps=4), ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_reuse_equals_hand_built_reference(family):
    """Step 2 reuses step 1's stack residual. The reference is the uncached pipeline with plain torch
    hooks: record each call's stack input (first block) and output (last block), and at step 2 replace
    the last block's output by input + (output - input) of the same branch at step 1."""
    lists, streams, out_order = EXPECTED[family]
    fps = FORWARDS_PER_STEP[family]
    pipe = build(family)
    blocks = blocks_of(family, pipe)
    sig = inspect.signature(blocks[0].forward)
    calls = []

    def grab_input(_, args, kwargs):
        bound = sig.bind(*args, **kwargs).arguments
        calls.append({"in": {s: bound[s] for s in streams}})

    def set_output(_, args, kwargs, output):
        rec, c = calls[-1], len(calls) - 1
        outs = {out_order[k]: output[k] for k in range(len(output))} if out_order else {streams[0]: output}
        rec["out"] = outs
        if c // fps != 2:
            return None
        prev = calls[c - fps]
        new = {s: (None if outs[s] is None else rec["in"][s] + (prev["out"][s] - prev["in"][s])) for s in outs}
        return tuple(new[s] for s in out_order) if out_order else new[streams[0]]

    h1 = blocks[0].register_forward_pre_hook(grab_input, with_kwargs=True)
    h2 = blocks[-1].register_forward_hook(set_output, with_kwargs=True)
    ref = generate(family, pipe, steps=3)
    h1.remove(), h2.remove()
    assert len(calls) == 3 * fps

    cachekit.apply(pipe, REUSE)
    got = generate(family, pipe, steps=3)
    s = cachekit.stats(pipe)
    assert s.plan.tolist() == [[True] * len(blocks)] * (2 * fps) + [[False] * len(blocks)] * fps
    assert s.block_names[0] == f"{lists[0]}.0" and len(s.block_names) == len(blocks)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(got, generate_uncached(family))  # reuse did change the output


def generate_uncached(family):
    return generate(family, build(family), steps=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_second_pipeline_of_same_class_is_unaffected(family):
    a, b = build(family), build(family)
    class_dicts = [dict(vars(cls)) for cls in type(a).__mro__ + type(a.transformer).__mro__]
    call = type(a).__call__
    ref = generate(family, b, steps=3)
    cachekit.apply(a, REUSE)
    assert not torch.equal(generate(family, a, steps=3), ref)
    assert torch.equal(generate(family, b, steps=3), ref)
    assert type(a).__call__ is call
    assert [dict(vars(cls)) for cls in type(a).__mro__ + type(a.transformer).__mro__] == class_dicts
    assert "forward" not in vars(b.transformer) and all("forward" not in vars(m) for m in blocks_of(family, b))


def _variants(family):
    v = [dict(steps=5), dict(steps=5, batch=2), dict(steps=3), dict(steps=5, prompt_variant=1, seed=3)]
    if SUPPORTS_SIZE[family]:
        v.append(dict(steps=5, size=ALT_SIZE[family]))
    if family in VIDEO_FAMILIES:
        v.append(dict(steps=5, frames=ALT_FRAMES))
    return v


@pytest.mark.parametrize("family", FAMILIES)
def test_calls_in_a_row_share_nothing(family):
    """Each call of a sequence (other batch, steps, prompt, size, frames) gives exactly what a
    freshly hooked pipeline gives for that call alone, and its first step equals uncached."""
    cfg = FixedIntervalConfig(interval=2, warmup=1, final_steps=1)
    variants = _variants(family)
    fresh, first = [], []
    for kw in variants:
        pipe = build(family)
        outs = []
        h = pipe.transformer.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o.sample))
        first.append(None)
        generate(family, pipe, **kw)  # uncached: first-step outputs
        first[-1] = outs[:FORWARDS_PER_STEP[family]]
        h.remove()
        cachekit.apply(pipe, cfg)
        fresh.append(generate(family, pipe, **kw))
    pipe = build(family)
    cachekit.apply(pipe, cfg)
    for kw, expect, first_ref in zip(variants, fresh, first):
        outs = []
        h = pipe.transformer.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o.sample))
        got = generate(family, pipe, **kw)
        h.remove()
        assert torch.equal(got, expect), kw
        assert all(torch.equal(x, y) for x, y in zip(outs[:FORWARDS_PER_STEP[family]], first_ref)), kw
        assert cachekit.stats(pipe).num_steps == kw["steps"]


@pytest.mark.parametrize("family", ["wan", "qwenimage", "dit", "flux"])
def test_exception_mid_generation_leaves_pipeline_ready(family):
    pipe = build(family)
    cachekit.apply(pipe, REUSE)
    expect = generate(family, pipe, steps=4)
    count = [0]

    def boom(*_):
        count[0] += 1
        if count[0] == 3 * FORWARDS_PER_STEP[family]:
            raise RuntimeError("callback failed")

    h = pipe.transformer.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="callback failed"):
        generate(family, pipe, steps=4)
    h.remove()
    assert torch.equal(generate(family, pipe, steps=4), expect)


@pytest.mark.parametrize("family, branches", [
    ("wan", ("cond", "uncond")), ("qwenimage", ("cond", "uncond")),  # separate passes
    ("dit", (0,)), ("pixart", (0,)), ("sd3", (0,)), ("cogvideox", ("cond_uncond",)),
    ("flux", ("cond",)),  # batched CFG / embedded guidance: one forward per step
])
def test_cfg_branches(family, branches):
    pipe = build(family)
    cachekit.apply(pipe, REUSE)
    generate(family, pipe, steps=3)
    s = cachekit.stats(pipe)
    assert s.branches == branches * 3 and s.steps.tolist() == sorted([0, 1, 2] * len(branches))


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_apply_to_transformer_only_detects_generations(family):
    """Without the pipeline's scheduler hook, generations are found from the timestep alone."""
    pipe = build(family)
    cachekit.apply(pipe, REUSE)
    expect = [generate(family, pipe, steps=s) for s in (3, 4)]
    cachekit.remove(pipe)
    cachekit.apply(pipe.transformer, REUSE)
    got = [generate(family, pipe, steps=s) for s in (3, 4)]
    assert all(torch.equal(a, b) for a, b in zip(got, expect))
    assert cachekit.stats(pipe.transformer).steps.max() == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_one_line_default_and_quality_presets_run(family):
    pipe = build(family)
    want = generate(family, pipe, steps=8)
    before = snapshot(pipe)
    fractions = {}
    for quality in (None, "fast", "balanced", "high"):
        cachekit.apply(pipe) if quality is None else cachekit.apply(pipe, quality=quality)
        got = generate(family, pipe, steps=8)
        fractions[quality] = cachekit.stats(pipe).computed_fraction
        assert got.shape == want.shape and torch.isfinite(got).all()
        cachekit.remove(pipe)
    assert vars(pipe.transformer).get("_cachekit_session") is None and snapshot(pipe) == before
    assert fractions[None] == fractions["balanced"] < 1.0
    assert fractions["fast"] < fractions["balanced"] < fractions["high"]
    assert torch.equal(generate(family, pipe, steps=8), want)


def test_quality_errors_are_one_line_and_change_nothing():
    pipe = build("wan")
    before = snapshot(pipe)
    for kw, message in ((dict(quality="ultra"), r"quality must be one of fast, balanced, high, got 'ultra'"),
                        (dict(config="default", quality="fast"), r"give a config or a quality, not both")):
        with pytest.raises(cachekit.ConfigError, match=message) as e:
            cachekit.apply(pipe, **kw)
        assert "\n" not in str(e.value)
    assert snapshot(pipe) == before


def test_pipeline_apply_then_transformer_apply_refused():
    pipe = build("dit")
    cachekit.apply(pipe, REUSE)
    with pytest.raises(cachekit.AlreadyAppliedError, match="DiTTransformer2DModel already has cachekit hooks"):
        cachekit.apply(pipe.transformer, REUSE)
    cachekit.remove(pipe.transformer)   # removal works from either handle
    assert "_cachekit_session" not in vars(pipe)


def test_unsupported_pipeline_object():
    with pytest.raises(cachekit.UnsupportedModelError, match="needs a diffusers pipeline or a torch.nn.Module, got int"):
        cachekit.apply(3)


def test_refuses_model_with_diffusers_cache_enabled():
    from diffusers.hooks import FirstBlockCacheConfig
    pipe = build("wan")
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(cachekit.AlreadyAppliedError, match="diffusers' own cache is enabled on WanTransformer3DModel"):
        cachekit.apply(pipe)
    pipe.transformer.disable_cache()
    cachekit.apply(pipe)
