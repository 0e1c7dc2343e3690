"""``cachekit.estimate_cache_bytes`` against hand arithmetic and against what real runs held; the
history storage (``apply(history=...)``); the refusal of a cache that cannot fit."""

import dataclasses

import pytest
import torch

import cachekit
from cachekit import (BACConfig, BlockDriftConfig, CacheBudgetError, EasyCacheConfig, ERTACacheConfig,
                      FixedIntervalConfig, HistoryStorage, estimate_cache_bytes)
from cachekit.adapters import find_units, resolve
from cachekit.memory import PUBLISHED_CONFIGS, cheaper_options, model_shape, shape_from_config
from cachekit.runtime import guards
from cachekit.runtime.history import DemotedEntry as _Demoted, dequantize_channels, payload_tensors, quantize_channels
from tiny_pipelines import FAMILIES, build, call_kwargs

STEPS = 8
WAN14B_720P = 21 * 45 * 80   # 720 x 1280 x 81 frames: latent 21 x 90 x 160, patches (1, 2, 2)


def test_wan14b_units_taylor_at_720p_is_370_gb_and_the_stack_is_three():
    """The issue's example: 75,600 tokens x 5,120 x bf16 per tensor, 40 blocks x 3 units x 2 CFG
    branches x 2 steps of history."""
    e = estimate_cache_bytes("wan2.1-14b", FixedIntervalConfig(units=True, forecast="taylor"), tokens=WAN14B_720P)
    by_hand = 75_600 * 5_120 * 2 * (40 * 3) * 2 * 2
    assert e.total == e.device == e.at_end == by_hand and abs(e.total / 370e9 - 1) < 0.01
    assert (e.slots, e.depth, e.branches, e.width) == (120, 2, 2, 5120)
    assert "total 372 GB" in str(e) and "120 x 774 MB" in str(e)
    options = dict(cheaper_options("wan2.1-14b", FixedIntervalConfig(units=True, forecast="taylor"), tokens=WAN14B_720P))
    assert options["forecast='none'"].total == by_hand // 2
    assert options["stack-level (units=False)"].total == 75_600 * 5_120 * 2 * 2 * 2          # 3.1 GB
    host = options["history='host'"]
    assert host.device == by_hand // 2 and host.host == by_hand // 2
    assert options["history='bf16'"].total == by_hand   # a bf16 stream has nothing lower to go to
    # int8: the older half in one byte, plus one fp32 scale per channel and tensor
    assert options["history='int8'"].total == by_hand // 2 + by_hand // 4 + 4 * 5_120 * 120 * 2


def test_a_config_dict_and_a_published_name_agree():
    cfg = PUBLISHED_CONFIGS["wan2.1-14b"]
    a = estimate_cache_bytes(cfg, FixedIntervalConfig(units=True, forecast="foca"), tokens=1000)
    b = estimate_cache_bytes("wan2.1-14b", FixedIntervalConfig(units=True, forecast="foca"), tokens=1000)
    assert a.total == b.total == 1000 * 5120 * 2 * 120 * 3 * 2


@pytest.mark.parametrize("name", sorted(PUBLISHED_CONFIGS))
def test_published_configs_describe_the_models_diffusers_builds(name):
    """Built on the meta device (no memory, no weights): the shape found as apply finds blocks and
    units equals the one read off the config alone."""
    import diffusers

    cfg = dict(PUBLISHED_CONFIGS[name])
    cls = getattr(diffusers, cfg.pop("_class_name"))
    with torch.device("meta"):
        model = cls(**cfg)
    built = model_shape(model, dtype=torch.bfloat16)
    assert dataclasses.replace(built, name=name, text_tokens=None) == dataclasses.replace(
        shape_from_config(PUBLISHED_CONFIGS[name], name=name), text_tokens=None)
    expect = {"flux.1-dev": 11.90e9, "wan2.1-1.3b": 1.42e9, "wan2.1-14b": 14.29e9}[name]
    assert abs(sum(p.numel() for p in model.parameters()) / expect - 1) < 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_the_config_alone_gives_the_built_models_shape_for_every_family(family):
    pipe = build(family)
    cfg = dict(pipe.transformer.config, _class_name=type(pipe.transformer).__name__)
    assert model_shape(pipe) == shape_from_config(cfg, dtype=model_shape(pipe).dtype)


# ---- against real runs ---------------------------------------------------------------------------------
def _streams(pipe, family):
    """(batch, main tokens, text tokens) the first block sees in a real call."""
    seen = {}
    block = resolve(pipe).blocks[0].module

    def pre(mod, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        eh = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        seen.setdefault("x", (hs.shape[0], hs.shape[1], 0 if eh is None or family != "flux" else eh.shape[1]))

    handle = block.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        pipe(**call_kwargs(family, pipe, steps=1))
    handle.remove()
    return seen["x"]


def _configs(pipe):
    units = [u.name for u in find_units(resolve(pipe).blocks)]
    return {
        "fixed_interval": FixedIntervalConfig(interval=2),
        "fixed_interval units": FixedIntervalConfig(interval=2, units=True),
        "taylor 0": FixedIntervalConfig(interval=2, forecast="taylor", forecast_order=0),
        "taylor 1": FixedIntervalConfig(interval=2, forecast="taylor", forecast_order=1),
        "taylor 2": FixedIntervalConfig(interval=2, forecast="taylor", forecast_order=2),
        "units taylor 2": FixedIntervalConfig(interval=2, units=True, forecast="taylor", forecast_order=2),
        "foca": FixedIntervalConfig(interval=2, forecast="foca"),
        "easycache": EasyCacheConfig(threshold=10.0, warmup=2),
        "easycache taylor": EasyCacheConfig(threshold=10.0, warmup=2, forecast="taylor"),
        "block_drift": BlockDriftConfig(threshold=10.0, warmup=2),
        "block_drift predict": BlockDriftConfig(threshold=10.0, warmup=2, predict=10.0),
        "bac": BACConfig(plan=tuple((u, (0, 3, 7)) for u in units), num_steps=STEPS),
        "ertacache linear": ERTACacheConfig(reuse_steps=(2, 4, 5), num_steps=STEPS,
                                            coefficients=((2, 1.0, 0.5), (4, 0.9, 0.1), (5, 1.0, 0.0))),
    }


METHODS = ["fixed_interval", "fixed_interval units", "taylor 0", "taylor 1", "taylor 2", "units taylor 2", "foca",
           "easycache", "easycache taylor", "block_drift", "block_drift predict", "bac", "ertacache linear"]


@pytest.fixture(scope="module")
def pipes():
    out = {}
    for family in ("flux", "wan"):
        pipe = build(family)
        out[family] = (pipe, _streams(pipe, family))
    return out


@pytest.mark.parametrize("family", ["flux", "wan"])
@pytest.mark.parametrize("method", METHODS)
def test_the_estimate_is_what_a_real_run_held(pipes, family, method):
    """Within 5% of ``stats(...).cached_bytes`` at the end of a generation (``at_end``), and the
    most held after any model call never above ``total`` (nor more than 5% under it)."""
    pipe, (batch, tokens, text) = pipes[family]
    config = _configs(pipe)[method]
    cachekit.apply(pipe, config)
    most = []
    handle = pipe.transformer.register_forward_hook(
        lambda *_: most.append(vars(pipe)["_cachekit_session"].gen.cached_bytes()))
    try:
        with torch.no_grad():
            pipe(**call_kwargs(family, pipe, steps=STEPS))
        held = cachekit.stats(pipe)
    finally:
        handle.remove()
        cachekit.remove(pipe)
    assert held.computed_fraction < 1   # something was reused: the cache was really used
    e = estimate_cache_bytes(pipe, config, tokens=tokens, text_tokens=text, batch=batch, cfg=family == "wan")
    assert e.branches == (2 if family == "wan" else 1)
    assert abs(e.at_end / held.cached_bytes - 1) < 0.05, (e, held.cached_bytes)
    assert max(most) <= e.total * 1.05 and max(most) >= e.at_end * 0.95


# ---- history storage -------------------------------------------------------------------------------------
def _run(pipe, family, config, history=None):
    cachekit.apply(pipe, config, history=history, keep_cache=True)
    try:
        with torch.no_grad():
            out = pipe(**call_kwargs(family, pipe, steps=STEPS))
        gen = vars(pipe)["_cachekit_session"].gen
        return out[0], cachekit.stats(pipe), gen
    finally:
        cachekit.remove(pipe)


def test_history_default_is_todays_plain_dict_and_host_on_cpu_is_bit_exact(pipes):
    pipe, _ = pipes["wan"]
    config = FixedIntervalConfig(interval=3, units=True, forecast="taylor", forecast_order=2)
    ref, s_ref, g_ref = _run(pipe, "wan", config)
    assert all(type(b.history) is dict for b in g_ref.branches.values())   # the default: no wrapper at all
    out, s, gen = _run(pipe, "wan", config, "host")
    assert torch.equal(out, ref) and s.cached_bytes == s_ref.cached_bytes
    older = [p for b in gen.branches.values() for entries in dict.values(b.history) for _, p in entries[1:]]
    assert older and all(isinstance(p, _Demoted) for p in older)   # older entries went through the storage


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_history_bf16_stores_older_entries_in_bf16_and_the_estimate_follows(pipes, family):
    pipe, (batch, tokens, text) = pipes[family]
    config = FixedIntervalConfig(interval=3, forecast="taylor", forecast_order=2)
    ref, s_ref, _ = _run(pipe, family, config)
    out, s, _ = _run(pipe, family, config, "bf16")
    newest = s_ref.cached_bytes // 3
    assert s.cached_bytes == newest + 2 * newest // 2          # fp32 newest + two bf16 older
    e = estimate_cache_bytes(pipe, config, tokens=tokens, text_tokens=text, batch=batch, cfg=family == "wan",
                             history="bf16")
    assert e.at_end == s.cached_bytes
    change = float((out - ref).abs().max() / ref.abs().max())
    assert 0 < change < 1e-2
    plain = FixedIntervalConfig(interval=3, forecast="taylor", forecast_order=0)   # no older entries: exact
    assert torch.equal(_run(pipe, family, plain)[0], _run(pipe, family, plain, "bf16")[0])


@pytest.mark.parametrize("family", ["flux", "wan"])
@pytest.mark.parametrize("low", ["int8", "fp8"])
def test_history_in_one_byte_keeps_per_channel_scales_and_the_estimate_follows(pipes, family, low):
    pipe, (batch, tokens, text) = pipes[family]
    config = FixedIntervalConfig(interval=3, units=True, forecast="taylor", forecast_order=1)
    ref, s_ref, _ = _run(pipe, family, config)
    out, s, gen = _run(pipe, family, config, low)
    older = [p for b in gen.branches.values() for entries in dict.values(b.history) for _, p in entries[1:]]
    stored = [t for p in older for t in payload_tensors(p)]
    one_byte = [t for t in stored if t.dtype != torch.float32]
    assert one_byte and all(t.element_size() == 1 for t in one_byte)
    # every one-byte tensor comes with its fp32 scales, one per channel (last dimension)
    assert sorted(t.shape[-1] for t in one_byte) == sorted(t.numel() for t in stored if t.dtype == torch.float32)
    newest = s_ref.cached_bytes // 2                       # fp32 newest + fp32 older without a storage
    assert s.cached_bytes == newest + newest // 4 + sum(4 * t.shape[-1] for t in one_byte)
    e = estimate_cache_bytes(pipe, config, tokens=tokens, text_tokens=text, batch=batch, cfg=family == "wan",
                             history=low)
    assert e.at_end == s.cached_bytes
    change = float((out - ref).abs().max() / ref.abs().max())
    assert 0 < change < (2e-2 if low == "int8" else 1e-1)


def test_one_byte_channels_round_trip_within_half_a_step_and_zero_channels_stay_zero():
    x = torch.randn(2, 7, 16) * torch.logspace(-3, 3, 16)   # channels six decades apart
    x[..., 3] = 0
    q, scale = quantize_channels(x, torch.int8)
    back = dequantize_channels(q, scale, x.dtype)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    assert bool(((back - x).abs() <= scale / 2 + 1e-12 * x.abs()).all())   # per channel, not per tensor
    assert bool((back[..., 3] == 0).all())
    f8, fscale = quantize_channels(x, torch.float8_e4m3fn)
    rel = (dequantize_channels(f8, fscale, x.dtype) - x).abs() / x.abs().clamp_min(1e-30)
    assert float(rel[x.abs() > scale * 8].max()) <= 2 ** -4   # 3 mantissa bits: half an ulp


def test_history_settings_parse_or_fail_in_one_line():
    assert HistoryStorage.parse(None) == HistoryStorage() and HistoryStorage().is_default
    assert HistoryStorage.parse("host+bf16") == HistoryStorage("host", torch.bfloat16)
    assert HistoryStorage.parse("fp16").dtype is torch.float16
    assert HistoryStorage.parse("host+int8") == HistoryStorage("host", torch.int8)
    assert HistoryStorage.parse("fp8").dtype is torch.float8_e4m3fn
    for bad in ("gpu", "bf16+fp16", "int8+fp8", "host+host", "int4", 3):
        with pytest.raises(ValueError, match="history must be") as e:
            HistoryStorage.parse(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="history must be"):
        cachekit.apply(build("flux"), FixedIntervalConfig(), history="disk")


# ---- refusal -----------------------------------------------------------------------------------------------
def test_a_cache_over_what_the_device_can_give_is_refused_with_the_cheaper_options(pipes, monkeypatch):
    """What a CUDA device reports is faked here (``device_free_bytes``); the check is the one that
    runs on CUDA by default. Nothing is kept when it raises; without it the same run goes through."""
    pipe, _ = pipes["flux"]
    config = FixedIntervalConfig(interval=2, units=True, forecast="taylor", forecast_order=2)
    monkeypatch.setattr(guards, "device_free_bytes", lambda device: 10_000)
    cachekit.apply(pipe, config)
    try:
        with pytest.raises(CacheBudgetError) as e, torch.no_grad():
            pipe(**call_kwargs("flux", pipe, steps=STEPS))
        msg = str(e.value)
        assert "\n" not in msg and "over the 10 KB cpu can still give" in msg
        for option in ("forecast='none' or forecast_order=0", "forecast_order=1", "stack-level reuse (units=False)",
                       "history='host'", "history='bf16'", "history='int8'"):
            assert option in msg
        assert all(not b.history for b in vars(pipe)["_cachekit_session"].gen.branches.values())
    finally:
        cachekit.remove(pipe)
    monkeypatch.setattr(guards, "device_free_bytes", lambda device: None)   # off CUDA: nothing checked
    cachekit.apply(pipe, config)
    try:
        with torch.no_grad():
            pipe(**call_kwargs("flux", pipe, steps=STEPS))
        assert cachekit.stats(pipe).computed_fraction < 1
    finally:
        cachekit.remove(pipe)


def test_host_history_over_free_host_memory_is_refused(pipes, monkeypatch):
    pipe, _ = pipes["wan"]
    monkeypatch.setattr(guards, "host_free_bytes", lambda: 100)
    cachekit.apply(pipe, FixedIntervalConfig(interval=2, forecast="taylor"), history="host")
    try:
        with pytest.raises(CacheBudgetError, match=r"over the 100 B of free host memory \(history='host'\)"), \
                torch.no_grad():
            pipe(**call_kwargs("wan", pipe, steps=STEPS))
    finally:
        cachekit.remove(pipe)


def test_estimate_errors_are_one_line():
    cases = [(lambda: estimate_cache_bytes("wan2.1-99b", FixedIntervalConfig(), tokens=1), "unknown model"),
             (lambda: estimate_cache_bytes(dict(PUBLISHED_CONFIGS["flux.1-dev"], _class_name="X"), tokens=1),
              "no known layout"),
             (lambda: estimate_cache_bytes(build("flux"), FixedIntervalConfig(), tokens=16), "pass text_tokens="),
             (lambda: estimate_cache_bytes("wan2.1-14b", FixedIntervalConfig(), tokens=0), "tokens must be")]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_flux_dev_defaults_and_easycache_scratch_in_the_deciding_branch_only():
    e = estimate_cache_bytes("flux.1-dev", EasyCacheConfig(), tokens=4096)
    per = (4096 + 512) * 3072 * 2
    assert e.text_tokens == 512 and e.branches == 1
    assert e.total == per + 3 * 4096 * 3072 * 2 and e.at_end == per + 2 * 4096 * 3072 * 2
    w = estimate_cache_bytes("wan2.1-1.3b", EasyCacheConfig(), tokens=32760)
    one = 32760 * 1536 * 2
    assert w.per_branch == {"deciding": 4 * one, "each other": one} and w.total == 5 * one



def test_each_method_reports_what_it_caches_and_the_estimate_reads_only_that(monkeypatch):
    """The memory contract: a method's ``memory_needs`` (granularity, segments, history depth, its
    own scratch tensors) is all ``estimate_cache_bytes`` knows of it."""
    from cachekit import memory
    from cachekit.config import method_for
    from cachekit.methods import EasyCache, MemoryNeeds, ScratchTensors

    assert method_for(EasyCacheConfig()).memory_needs(8) == MemoryNeeds("block", 1, ((0, 8),), (
        ScratchTensors("EasyCache: last computed stack input and output", 2),
        ScratchTensors("EasyCache: newest stack input", 1, held_at_end=False)))
    drift = method_for(BlockDriftConfig(splits=3, predict=0.1)).memory_needs(12)
    assert drift.segments == ((0, 1), (1, 5), (5, 9), (9, 12))   # the probe, 3 middle ranges (bn=0: no tail)
    assert [t.count for t in drift.scratch] == [3, 2, 1]
    units = method_for(FixedIntervalConfig(units=True, forecast="taylor", forecast_order=2)).memory_needs(8)
    assert units == MemoryNeeds("unit", 3, (), ())

    class Quiet(EasyCache):   # the same method, claiming no scratch: the estimate follows the claim
        def scratch_tensors(self):
            return ()

    e = estimate_cache_bytes("wan2.1-1.3b", EasyCacheConfig(), tokens=100)
    monkeypatch.setattr(memory, "method_for", Quiet)
    quiet = estimate_cache_bytes("wan2.1-1.3b", EasyCacheConfig(), tokens=100)
    assert dataclasses.replace(e, parts=tuple(p for p in e.parts if not p.what.startswith("EasyCache"))) == quiet
    assert e.total - quiet.total == 3 * 100 * 1536 * 2   # 3 main-stream bf16 tensors, deciding branch only
