"""cachekit on quantized transformers (issue 30: "Works on quantized transformers"), on the tiny Flux
and Wan pipelines:

- quantized in place: torchao ``quantize_`` with ``Int8WeightOnlyConfig`` and
  ``Int8DynamicActivationInt8WeightConfig``; optimum-quanto ``quantize(m, weights=qint8 / qint4)``
  then ``freeze(m)``;
- quantized at load time by diffusers: the tiny transformer saved with ``save_pretrained`` and loaded
  back with ``from_pretrained(dir, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))``
  (the old string spelling ``TorchAoConfig("int8wo")`` is refused by diffusers 0.42: "quant_type must
  be an AOBaseConfig instance") or ``QuantoConfig(weights_dtype="int8")``.

Each case: interval 1 is the quantized model's uncached output bit for bit; sub-block units with a
Taylor forecast cache as on the float model; ``remove`` gives the uncached output back bit for bit
and leaves the quantized Linears as they were. Then a plan recorded on a quantized model, compiled
blocks over quantized Linears, and the memory estimate (the cache holds activations in the stream
dtype, never the int8 weights).

Each backend is ``pytest.importorskip``-ed where it is used, so its cases skip cleanly without it.
One thread (as tests/reference/test_reference_digits_flux2.py): the models are tiny, and more threads on a busy
CPU make OpenMP spin.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import cachekit
from cachekit import FixedIntervalConfig, estimate_cache_bytes
from cachekit.adapters import resolve
from tiny_pipelines import build, call_kwargs, generate

pytest.importorskip("diffusers")

STEPS = 6
FAMILIES = ("flux", "wan")
UNITS_TAYLOR = FixedIntervalConfig(interval=2, units=True, forecast="taylor")
COMPUTED = 4 / 6   # interval 2, warm-up 1, final 1 of 6 steps: steps 0, 2, 4, 5


# ---- the quantizers: each builds the tiny pipeline of a family and quantizes its transformer ---------------
def torchao_in_place(config_name):
    def make(family, tmp_dir, dtype=torch.float32):
        pytest.importorskip("torchao", minversion="0.18")
        import torchao.quantization as ao

        pipe = build(family)
        pipe.transformer.to(dtype)
        ao.quantize_(pipe.transformer, getattr(ao, config_name)())
        return pipe
    return make


def quanto_in_place(weights):
    def make(family, tmp_dir, dtype=torch.float32):
        quanto = pytest.importorskip("optimum.quanto")
        pipe = build(family)
        pipe.transformer.to(dtype)
        quanto.quantize(pipe.transformer, weights=getattr(quanto, weights))
        quanto.freeze(pipe.transformer)
        return pipe
    return make


def diffusers_at_load(library):
    def make(family, tmp_dir, dtype=torch.float32):
        import diffusers

        if library == "torchao":
            pytest.importorskip("torchao", minversion="0.18")
            from torchao.quantization import Int8WeightOnlyConfig
            config = diffusers.TorchAoConfig(Int8WeightOnlyConfig())
        else:
            pytest.importorskip("optimum.quanto")
            config = diffusers.QuantoConfig(weights_dtype="int8")
        pipe = build(family)
        folder = tmp_dir / f"{family}-{library}"
        pipe.transformer.save_pretrained(folder)
        # torch_dtype given: TorchAoConfig alone loads in bf16 (and warns that only bf16 is supported
        # for integer quantization, but fp32 runs on CPU)
        model = type(pipe.transformer).from_pretrained(folder, quantization_config=config, torch_dtype=dtype)
        model.eval()
        model.requires_grad_(False)
        pipe.transformer = model
        return pipe
    return make


QUANTIZERS = {
    "torchao_int8_weight_only": torchao_in_place("Int8WeightOnlyConfig"),
    "torchao_int8_dynamic": torchao_in_place("Int8DynamicActivationInt8WeightConfig"),
    "quanto_int8": quanto_in_place("qint8"),
    "quanto_int4": quanto_in_place("qint4"),
    "diffusers_torchao_int8_weight_only": diffusers_at_load("torchao"),
    "diffusers_quanto_int8": diffusers_at_load("quanto"),
}
IN_PLACE = list(QUANTIZERS)[:4]


def quantized_linears(model):
    """{name: (module class, weight class)} of the Linears in the blocks; all of them quantized."""
    found = {name: (type(m).__name__, type(m.weight).__name__) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and "blocks." in name}
    plain = [name for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and "blocks." in name and type(m.weight) in (torch.Tensor, torch.nn.Parameter)]
    assert found and not plain, f"not quantized: {plain}"
    return found


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """``quantized(family, backend)``: (pipe, its uncached output), each built once per module."""
    built = {}
    tmp_dir = tmp_path_factory.mktemp("quantized")

    def get(family, backend):
        if (family, backend) not in built:
            pipe = QUANTIZERS[backend](family, tmp_dir)
            quantized_linears(pipe.transformer)
            built[family, backend] = pipe, generate(family, pipe, steps=STEPS)
        return built[family, backend]
    return get


CASES = [pytest.param(f, b, id=f"{f}-{b}") for f in FAMILIES for b in QUANTIZERS]


# ---- exactness and removal -------------------------------------------------------------------------------
@pytest.mark.parametrize("family, backend", CASES)
def test_interval_1_is_the_quantized_uncached_run_bit_for_bit(quantized, family, backend):
    pipe, ref = quantized(family, backend)
    cachekit.apply(pipe, FixedIntervalConfig(interval=1))
    try:
        out = generate(family, pipe, steps=STEPS)
        assert cachekit.stats(pipe).computed_fraction == 1
    finally:
        cachekit.remove(pipe)
    assert torch.equal(out, ref)
    assert torch.equal(generate(family, pipe, steps=STEPS), ref)


@pytest.mark.parametrize("family, backend", CASES)
def test_units_taylor_caches_and_remove_restores_exactly(quantized, family, backend):
    pipe, ref = quantized(family, backend)
    linears = quantized_linears(pipe.transformer)
    cachekit.apply(pipe, UNITS_TAYLOR)
    try:
        out = generate(family, pipe, steps=STEPS)
        assert cachekit.stats(pipe).computed_fraction == pytest.approx(COMPUTED)
    finally:
        cachekit.remove(pipe)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert float((out - ref).norm() / ref.norm()) < 0.5   # a cached run of the same model, not noise
    assert torch.equal(generate(family, pipe, steps=STEPS), ref)
    assert quantized_linears(pipe.transformer) == linears   # the quantized Linears untouched
    assert "_cachekit_session" not in vars(pipe) and "_cachekit_session" not in vars(pipe.transformer)


# ---- a plan recorded on a quantized model ------------------------------------------------------------------
@pytest.mark.parametrize("family, backend, method", [
    ("flux", "torchao_int8_dynamic", "bac"),
    ("wan", "quanto_int4", "bac"),
    ("wan", "diffusers_torchao_int8_weight_only", "ertacache"),
])
def test_a_plan_recorded_on_the_quantized_model_applies(quantized, family, backend, method):
    from cachekit.calibration import calibrate
    from cachekit.planning import plan_bac

    pipe, ref = quantized(family, backend)
    outputs = []
    runs = [lambda s=s: outputs.append(generate(family, pipe, steps=STEPS, seed=s)) for s in (0, 1)]
    if method == "bac":
        config = plan_bac(cachekit.record(pipe, runs), updates=3, top_n=1).config
    else:
        config = calibrate(pipe, runs, "ertacache", fraction=0.5).config
    assert torch.equal(outputs[0], ref)   # recording runs the quantized model uncached
    assert config.num_steps == STEPS
    cachekit.apply(pipe, config)
    try:
        out = generate(family, pipe, steps=STEPS)
        fraction = cachekit.stats(pipe).computed_fraction
    finally:
        cachekit.remove(pipe)
    assert 0 < fraction < 1
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert torch.equal(generate(family, pipe, steps=STEPS), ref)


# ---- compiled blocks over quantized Linears ------------------------------------------------------------------
@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["torchao_int8_weight_only", "quanto_int8"])
def test_apply_compile_on_the_quantized_transformer(quantized, fresh_dynamo, backend):
    """As tests/test_compile.py: same output as the eager cached run, one graph for Wan's one block
    class, no recompile on the second generation. aot_eager: dynamo and AOTAutograd trace through
    the quantized weights' tensor subclasses (where a quantized model would break); inductor also
    works here but costs 25-60 s a case cold on 2 cores."""
    family = "wan"
    pipe, ref = quantized(family, backend)
    config = FixedIntervalConfig(interval=2)
    cachekit.apply(pipe, config)
    try:
        eager = generate(family, pipe, steps=STEPS)
        plan = cachekit.stats(pipe).plan
    finally:
        cachekit.remove(pipe)
    cachekit.apply(pipe, config, compile=dict(backend="aot_eager"))
    try:
        first = generate(family, pipe, steps=STEPS)
        assert (cachekit.stats(pipe).plan == plan).all() and not plan.all()
        graphs = counters["stats"]["unique_graphs"]
        assert 0 < graphs <= 1
        with torch._dynamo.config.patch(error_on_recompile=True):
            second = generate(family, pipe, steps=STEPS)
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        cachekit.remove(pipe)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    assert torch.equal(first, second)
    assert torch.equal(generate(family, pipe, steps=STEPS), ref)


# ---- the memory estimate ---------------------------------------------------------------------------------------
def streams(pipe, family):
    """(batch, main tokens, text tokens) the first block sees (as tests/test_estimate.py)."""
    seen = {}

    def pre(mod, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        eh = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        seen.setdefault("x", (hs.shape[0], hs.shape[1], 0 if eh is None or family != "flux" else eh.shape[1]))

    handle = resolve(pipe).blocks[0].module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            pipe(**call_kwargs(family, pipe, steps=1))
    finally:
        handle.remove()
    return seen["x"]


@pytest.fixture(scope="module")
def unquantized():
    return {family: build(family) for family in FAMILIES}


@pytest.mark.parametrize("family, backend", CASES)
def test_the_estimate_is_the_unquantized_models_and_what_the_run_held(quantized, unquantized, family, backend):
    pipe, _ = quantized(family, backend)
    batch, tokens, text = streams(pipe, family)
    assert (batch, tokens, text) == streams(unquantized[family], family)
    kw = dict(tokens=tokens, text_tokens=text, batch=batch, cfg=family == "wan")
    e = estimate_cache_bytes(pipe, UNITS_TAYLOR, **kw)
    assert e == estimate_cache_bytes(unquantized[family], UNITS_TAYLOR, **kw)
    assert e.dtype == torch.float32 and e.total > 0
    cachekit.apply(pipe, UNITS_TAYLOR)
    try:
        generate(family, pipe, steps=STEPS)
        held = cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)
    assert held.computed_fraction < 1
    # tests/test_estimate.py allows 5% over all methods; units + Taylor is counted exactly
    assert e.at_end == held.cached_bytes, (e, held.cached_bytes)


@pytest.mark.parametrize("backend", list(QUANTIZERS))
def test_a_bf16_quantized_model_is_estimated_in_bf16(tmp_path, backend):
    """Flux's first parameter is a quantized Linear weight (the time embedding's): the estimate
    reads the dtype the weight subclass reports (bf16, the stream dtype), not its int8 / int4
    storage. Nothing is run."""
    pipe = QUANTIZERS[backend]("flux", tmp_path, dtype=torch.bfloat16)
    first = next(iter(pipe.transformer.parameters()))
    assert type(first) not in (torch.Tensor, torch.nn.Parameter) and first.dtype == torch.bfloat16
    plain = build("flux").transformer.to(torch.bfloat16)
    kw = dict(tokens=16, text_tokens=8)
    for config in (UNITS_TAYLOR, FixedIntervalConfig(interval=2)):
        e = estimate_cache_bytes(pipe, config, **kw)
        assert e.dtype == torch.bfloat16 and e == estimate_cache_bytes(plain, config, **kw)
