"""Bounded memory and honest stats: caches freed when a generation ends, nothing of the previous
generation kept, every held tensor counted, a budget refused with one line; every config's
defaults run or are refused at construction."""

import pytest
import torch

import cachekit
from cachekit import EasyCacheConfig, FixedIntervalConfig
from cachekit.config import ConfigError, config_classes
from tiny_pipelines import build, call_kwargs
from toy import Toy


def run_pipe(pipe, steps=8):
    with torch.no_grad():
        pipe(**call_kwargs("flux", pipe, steps=steps))


def session(target):
    return vars(target)["_cachekit_session"]


def toy_generation(config, steps: int):
    """The toy model cached with ``config``, one bare-module generation of ``steps`` steps."""
    m = Toy()
    cachekit.apply(m, config)
    cachekit.reset(m, num_steps=steps)
    with torch.no_grad():
        for t in range(steps, 0, -1):
            m(torch.zeros(2, 3), torch.tensor(float(t)))
    return m


def test_a_pipeline_generation_frees_its_cache_when_its_last_step_returns():
    pipe = build("flux")
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, forecast="taylor"))
    run_pipe(pipe)
    s = session(pipe)
    held = cachekit.stats(pipe).cached_bytes
    assert s.gen.branches == {} and held > 0          # freed; stats tell what it held
    run_pipe(pipe)
    assert s.previous.branches == {} and s.gen.branches == {}   # nothing of an earlier generation is kept
    assert cachekit.stats(pipe).cached_bytes == held
    cachekit.remove(pipe)
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, forecast="taylor"), keep_cache=True)
    run_pipe(pipe)
    assert session(pipe).gen.branches and cachekit.stats(pipe).cached_bytes == held


def test_cached_bytes_counts_the_methods_own_tensors():
    def held(config):
        return cachekit.stats(toy_generation(config, 6)).cached_bytes

    residual = 2 * 3 * 4   # one fp32 (2, 3) residual
    assert held(FixedIntervalConfig(interval=2)) == residual
    # EasyCache keeps the last stack input and output and the previous input besides the residual
    assert held(EasyCacheConfig(threshold=0.5, warmup=2)) >= 3 * residual


def test_max_cache_bytes_refuses_before_keeping_anything():
    pipe = build("flux")
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, forecast="taylor", forecast_order=2), max_cache_bytes=1000)
    with pytest.raises(cachekit.CacheBudgetError, match=r"the cache would hold about .* x 1 segments/units x 3 steps of "
                                                        r"history x 1 CFG branches\), over max_cache_bytes=1 KB"):
        run_pipe(pipe)
    assert all(not b.history for b in session(pipe).gen.branches.values())
    cachekit.remove(pipe)
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, forecast="taylor", forecast_order=2), max_cache_bytes=10**9)
    run_pipe(pipe)
    assert cachekit.stats(pipe).computed_fraction < 1
    with pytest.raises(ValueError, match="max_cache_bytes must be an int >= 1"):
        cachekit.apply(Toy(), FixedIntervalConfig(), max_cache_bytes=0)


@pytest.mark.parametrize("name", sorted(config_classes()))
def test_every_config_with_its_defaults_runs_or_is_refused_at_construction(name):
    cls = config_classes()[name]
    try:
        config = cls()
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert cachekit.stats(toy_generation(config, 5)).num_calls == 5


@pytest.mark.parametrize("compile", [{"mode": "reduce-overhead"}, {"mode": "max-autotune"},
                                     {"options": {"triton.cudagraphs": True}}])
def test_cuda_graph_compile_modes_are_refused(compile):
    m = Toy()
    with pytest.raises(ValueError, match="replays CUDA graphs"):
        cachekit.apply(m, FixedIntervalConfig(), compile=compile)
    assert "_cachekit_session" not in vars(m)
