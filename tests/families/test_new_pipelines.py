"""cachekit end to end through the newest diffusers pipelines (tiny offline builds: tests/helpers/tiny_new_pipelines.py).

Per pipeline: a no-op config is bit-exact; a reuse config and the one-line default really cache
(fewer block evaluations, another output) and number the steps 0..N-1 with the pipeline's forwards
per step and CFG branches; ``remove`` restores the exact output and leaves nothing behind; and two
calls in a row of other sizes / step counts share nothing. Random weights: plumbing, not quality.
"""

import pytest
import torch

import cachekit
from cachekit import FixedIntervalConfig
from tiny_new_pipelines import (ALT_FRAMES, ALT_SIZE, BRANCHES, DENOISERS, FORWARDS_PER_STEP, NAMES, VIDEO, build,
                                run)

pytest.importorskip("diffusers")

EXACT = FixedIntervalConfig(interval=1, warmup=0, final_steps=0)
REUSE = FixedIntervalConfig(interval=2, warmup=1, final_steps=0)
STEPS = 6  # Wan 2.2 I2V runs 2 of 6 steps on `transformer`, 4 on `transformer_2` (boundary 0.875)

_refs: dict = {}


def reference(name):
    """The uncached output of a fresh build at STEPS steps (computed once per pipeline)."""
    if name not in _refs:
        _refs[name] = run(name, build(name), steps=STEPS)
    return _refs[name]


PATCHABLE = ("forward", "cache_context", "set_timesteps", "set_begin_index", "step", "__call__")


def objects(pipe):
    mods = [m for c in pipe.components.values() if isinstance(c, torch.nn.Module) for m in c.modules()]
    return [pipe, pipe.scheduler, *mods]


def snapshot(pipe):
    """Attribute names of every object and the identity of what may be patched."""
    return [(id(o), sorted(vars(o)), [id(vars(o).get(n)) for n in PATCHABLE]) for o in objects(pipe)]


def leftovers(pipe):
    """Attributes of the pipeline, scheduler and denoisers (all their modules) that are cachekit's."""
    found = []
    for o in objects(pipe):
        for k, v in vars(o).items():
            if "cachekit" in k.lower() or getattr(v, "__cachekit__", False):
                found.append(f"{type(o).__name__}.{k}")
    return found


def check_steps(name, s, steps):
    fps = FORWARDS_PER_STEP[name]
    assert s.num_steps == steps and s.num_calls == steps * fps
    assert s.steps.tolist() == sorted(list(range(steps)) * fps)
    per_step = [s.branches[k * fps:(k + 1) * fps] for k in range(steps)]
    assert all(len(set(b)) == fps for b in per_step), s.branches  # a separate branch per forward of a step
    if name in BRANCHES:
        assert all(b == BRANCHES[name] for b in per_step), s.branches


def check_experts(name, pipe, s, steps):
    """Wan 2.2: each expert's calls are the pipeline's steps on its side of the boundary."""
    if len(DENOISERS[name]) == 1:
        assert s.denoisers is None
        return
    pipe.scheduler.set_timesteps(steps)
    high = int((pipe.scheduler.timesteps >= pipe.config.boundary_ratio * 1000).sum())
    assert 0 < high < steps
    hi, lo = s.denoisers["transformer"], s.denoisers["transformer_2"]
    fps = FORWARDS_PER_STEP[name]
    assert hi.steps.tolist() == sorted(list(range(high)) * fps)
    assert lo.steps.tolist() == sorted(list(range(high, steps)) * fps)


@pytest.mark.parametrize("name", NAMES)
def test_noop_config_bit_exact_and_remove_restores(name):
    ref = reference(name)
    pipe = build(name)
    assert torch.equal(run(name, pipe, steps=STEPS), ref)  # the build is deterministic
    before = snapshot(pipe)
    cachekit.apply(pipe, EXACT)
    out = run(name, pipe, steps=STEPS)
    s = cachekit.stats(pipe)
    cachekit.remove(pipe)
    assert torch.equal(out, ref)
    assert s.computed_fraction == 1.0
    check_steps(name, s, STEPS)
    check_experts(name, pipe, s, STEPS)
    assert leftovers(pipe) == [] and snapshot(pipe) == before
    assert torch.equal(run(name, pipe, steps=STEPS), ref)


@pytest.mark.parametrize("config", [REUSE, None], ids=["interval2", "default"])
@pytest.mark.parametrize("name", NAMES)
def test_caching_is_active_and_remove_restores(name, config):
    ref = reference(name)
    pipe = build(name)
    run(name, pipe, steps=2)  # pipelines set attributes of their own on their first call
    before = snapshot(pipe)
    cachekit.apply(pipe) if config is None else cachekit.apply(pipe, config)
    out = run(name, pipe, steps=STEPS)
    s = cachekit.stats(pipe)
    cachekit.remove(pipe)
    assert s.computed_fraction < 1
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
    check_steps(name, s, STEPS)
    check_experts(name, pipe, s, STEPS)
    assert leftovers(pipe) == [] and snapshot(pipe) == before
    assert torch.equal(run(name, pipe, steps=STEPS), ref)


def _second_call(name):
    """Another step count and another token count (size for images, frames for videos)."""
    return dict(steps=4, frames=ALT_FRAMES) if name in VIDEO else dict(steps=4, size=ALT_SIZE[name])


@pytest.mark.parametrize("name", NAMES)
def test_two_calls_in_a_row_share_nothing(name):
    second = _second_call(name)
    fresh = build(name)
    cachekit.apply(fresh, REUSE)
    want = run(name, fresh, **second)
    pipe = build(name)
    cachekit.apply(pipe, REUSE)
    first = run(name, pipe, steps=STEPS)
    got = run(name, pipe, **second)
    s = cachekit.stats(pipe)
    cachekit.remove(pipe)
    assert first.shape == reference(name).shape
    assert torch.equal(got, want)
    check_steps(name, s, second["steps"])


def test_kv_prefill_step_is_never_reused_from():
    """Flux2 Klein KV: step 0 runs reference + noise tokens ("extract"), later steps the noise tokens
    only. With no warm-up, step 1 cannot reuse step 0 (other token count): it is computed."""
    name = "flux2_klein_kv"
    pipe = build(name)
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, warmup=0, final_steps=0))
    out = run(name, pipe, steps=5)
    s = cachekit.stats(pipe)
    cachekit.remove(pipe)
    computed = s.plan.all(1).tolist()
    assert computed[:2] == [True, True] and not all(computed)
    assert torch.isfinite(out).all()
