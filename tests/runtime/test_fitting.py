"""The default fits in memory: ``cachekit.apply(pipe)`` never refuses for memory; it runs the best
configuration of ``cachekit.fitting.fallback_chain`` whose cache fits, says so in one line and in
``stats().chosen``; explicit configs are refused as before. A small device is simulated with
``max_cache_bytes`` and with a patched ``device_free_bytes`` (tiny Wan: the default's cache is
27.6 KB, stack-level Taylor 4.6 KB, plain stack-level reuse 2.3 KB)."""

import dataclasses
import warnings

import pytest
import torch

import cachekit
from cachekit import FixedIntervalConfig
from cachekit.fitting import fallback_chain
from cachekit.recipe import load_recipe
from cachekit.runtime import guards
from cachekit.runtime.guards import CacheBudgetError
from tiny_pipelines import build, build_wan22, call_kwargs, output_tensor

pytest.importorskip("diffusers")

DEFAULT = load_recipe("default").config
STACK_TAYLOR = dataclasses.replace(DEFAULT, units=False)


def test_the_chain_goes_from_units_to_stack_level_to_plain_reuse():
    chain = fallback_chain(DEFAULT)
    assert [label for label, _, _ in chain] == [
        "sub-block units + taylor forecast", "sub-block units + taylor forecast, older history in host memory",
        "stack-level reuse + taylor forecast", "stack-level reuse + taylor forecast, older history in host memory",
        "stack-level reuse"]
    assert chain[0][1] == DEFAULT and chain[-1][1] == dataclasses.replace(DEFAULT, units=False, forecast="none")
    plain = FixedIntervalConfig(interval=2)
    assert [c for _, c, _ in fallback_chain(plain)] == [plain]   # nothing cheaper at this granularity


@pytest.fixture(scope="module")
def pipe():
    return build("wan")


def run(pipe, steps=8):
    with torch.no_grad():
        return output_tensor("wan", pipe(**call_kwargs("wan", pipe, steps=steps)))


def _runs(pipe, steps=8):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = run(pipe, steps)
    return out, [str(w.message) for w in seen if str(w.message).startswith("cachekit: ") and "using" in str(w.message)]


def _explicit(pipe, config, **kw):
    cachekit.apply(pipe, config, **kw)
    try:
        return run(pipe)
    finally:
        cachekit.remove(pipe)


def test_over_max_cache_bytes_the_default_runs_stack_level_taylor_and_says_so(pipe):
    cachekit.apply(pipe, max_cache_bytes=10_000)
    try:
        out, said = _runs(pipe)
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert len(said) == 1 and said[0].startswith("cachekit: WanTransformer3DModel: using stack-level reuse + taylor")
    assert "over max_cache_bytes=" in said[0] and s.chosen.startswith("stack-level reuse + taylor forecast (the default")
    assert s.block_names == ("blocks.0", "blocks.1")   # blocks, not the 6 units
    assert s.computed_fraction < 1
    # exactly the run the chosen configuration gives when asked for
    assert torch.equal(out, _explicit(pipe, STACK_TAYLOR))
    assert not [k for k in vars(pipe.scheduler) if k in ("set_timesteps", "step", "set_begin_index")]


def test_on_a_small_device_the_older_history_goes_to_host_memory(pipe, monkeypatch):
    monkeypatch.setattr(guards, "device_free_bytes", lambda device: 16_000)
    cachekit.apply(pipe)
    try:
        out, said = _runs(pipe)
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert len(said) == 1 and "older history in host memory" in said[0] and "can still give" in said[0]
    assert s.chosen.startswith("sub-block units + taylor forecast, older history in host memory")
    monkeypatch.undo()
    assert torch.equal(out, _explicit(pipe, DEFAULT, history="host"))


def test_each_generation_tries_the_best_again(pipe, monkeypatch):
    free = [10_000]
    monkeypatch.setattr(guards, "device_free_bytes", lambda device: free[0])
    cachekit.apply(pipe)
    try:
        _runs(pipe)
        first = cachekit.stats(pipe)
        free[0] = 10**9   # more memory (or a smaller generation): the default as given
        out, said = _runs(pipe)
        second = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert first.chosen is not None and second.chosen is None and not said
    assert len(second.block_names) == 6   # units again
    monkeypatch.undo()
    assert torch.equal(out, _explicit(pipe, DEFAULT))


def test_explicit_configs_and_a_budget_nothing_fits_are_refused(pipe):
    cachekit.apply(pipe, DEFAULT, max_cache_bytes=10_000)
    try:
        with pytest.raises(CacheBudgetError, match="over max_cache_bytes=10 KB; cheaper: "):
            run(pipe)
    finally:
        cachekit.remove(pipe)
    cachekit.apply(pipe, max_cache_bytes=500)
    try:
        with pytest.raises(CacheBudgetError, match="over max_cache_bytes=500 B"):
            run(pipe)
    finally:
        cachekit.remove(pipe)


def test_two_denoisers_each_fit_and_remove_leaves_nothing():
    pipe = build_wan22()
    with torch.no_grad():
        ref = pipe(**call_kwargs("wan", pipe, steps=8))[0]
    cachekit.apply(pipe, max_cache_bytes=10_000)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                pipe(**call_kwargs("wan", pipe, steps=8))
        s = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert s.denoisers["transformer"].chosen and s.denoisers["transformer_2"].chosen
    assert s.chosen.startswith("transformer: stack-level reuse") and s.computed_fraction < 1
    for obj in (pipe, pipe.transformer, pipe.transformer_2, pipe.scheduler):
        assert not [k for k in vars(obj) if "cachekit" in k or k in ("set_timesteps", "step", "forward")], obj
    with torch.no_grad():
        assert torch.equal(pipe(**call_kwargs("wan", pipe, steps=8))[0], ref)


def test_wan_14b_at_720p_on_a_24_gb_device_by_estimate():
    """Nothing allocated: Wan2.1-14B, 720p x 81 frames (75,600 tokens, CFG as separate forwards)."""
    from cachekit.fitting import fit_by_estimate

    free = 24 * 2**30
    label, cfg, history, e = fit_by_estimate("wan2.1-14b", DEFAULT, free, tokens=75_600)
    assert label == "stack-level reuse + taylor forecast" and cfg == STACK_TAYLOR
    assert e.device <= free and e.branches == 2
    # what it stepped over: units + Taylor, on the device or with host history, does not fit
    est = cachekit.estimate_cache_bytes("wan2.1-14b", DEFAULT, tokens=75_600)
    assert est.device > free and cachekit.estimate_cache_bytes("wan2.1-14b", DEFAULT, tokens=75_600,
                                                               history="host").device > free
    with pytest.raises(ValueError, match="nothing fits in 1e-06 GB"):
        fit_by_estimate("wan2.1-14b", DEFAULT, 1000, tokens=75_600)
