"""The works-with setups (docs/compatibility.md) on the newest pipelines: Flux2 and Wan 2.2
image-to-video (two experts), tiny offline builds (tests/helpers/tiny_new_pipelines.py). Offload (model CPU
offload, group offload) in either order, a LoRA adapter loaded and fused, and ``compile=True``: each
gives the cached run's output with caching really active, and ``remove`` the uncached one."""

import pytest
import torch

import cachekit
from cachekit import FixedIntervalConfig
from tiny_new_pipelines import DENOISERS, build, run

pytest.importorskip("diffusers")

NAMES = ("flux2", "wan22_i2v")
FI = FixedIntervalConfig(interval=2, warmup=1, final_steps=0)
STEPS = 6


def denoisers(name, pipe):
    return [getattr(pipe, d) for d in DENOISERS[name]]


@pytest.fixture(scope="module", params=NAMES)
def expected(request):
    name = request.param
    pipe = build(name)
    ref = run(name, pipe, steps=STEPS)
    cachekit.apply(pipe, FI)
    cached = run(name, pipe, steps=STEPS)
    fraction = cachekit.stats(pipe).computed_fraction
    cachekit.remove(pipe)
    assert fraction < 1 and not torch.equal(ref, cached)
    return name, ref, cached, fraction


def model_offload(name, pipe):
    pipe.enable_model_cpu_offload(device="cpu")


def group_offload(name, pipe):
    for d in denoisers(name, pipe):
        d.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1)


@pytest.mark.parametrize("enable", [model_offload, group_offload], ids=["model_cpu_offload", "group_block"])
@pytest.mark.parametrize("apply_first", [True, False], ids=["apply_then_offload", "offload_then_apply"])
def test_offload_in_either_order(expected, enable, apply_first):
    name, ref, cached, fraction = expected
    pipe = build(name)
    steps = [lambda: cachekit.apply(pipe, FI), lambda: enable(name, pipe)]
    for step in steps if apply_first else steps[::-1]:
        step()
    for _ in range(2):
        assert torch.allclose(run(name, pipe, steps=STEPS), cached, atol=1e-6)
        assert cachekit.stats(pipe).computed_fraction == fraction
    cachekit.remove(pipe)
    assert torch.allclose(run(name, pipe, steps=STEPS), ref, atol=1e-6)
    assert all("_cachekit_session" not in vars(d) for d in denoisers(name, pipe))


def test_lora_loaded_and_fused(expected):
    pytest.importorskip("peft")
    from peft import LoraConfig

    name = expected[0]

    def add_lora(pipe):
        torch.manual_seed(5)
        for d in denoisers(name, pipe):
            targets = sorted({n.rsplit(".", 1)[-1] for n, m in d.named_modules()
                              if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v")})
            d.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))

    pipe = build(name)
    add_lora(pipe)
    ref = run(name, pipe, steps=STEPS)
    cachekit.apply(pipe, FI)
    cached = run(name, pipe, steps=STEPS)
    assert cachekit.stats(pipe).computed_fraction < 1 and not torch.equal(ref, cached)
    for d in denoisers(name, pipe):
        d.fuse_lora()
    assert torch.allclose(run(name, pipe, steps=STEPS), cached, atol=1e-4)
    for d in denoisers(name, pipe):
        d.unfuse_lora()
    cachekit.remove(pipe)
    assert torch.allclose(run(name, pipe, steps=STEPS), ref, atol=1e-5)


def test_compile_matches_eager(expected):
    name, ref, cached, fraction = expected
    from torch._dynamo.utils import counters

    pipe = build(name)
    torch._dynamo.reset()
    counters.clear()
    cachekit.apply(pipe, FI, compile=True)
    first = run(name, pipe, steps=STEPS)
    assert cachekit.stats(pipe).computed_fraction == fraction
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs <= 4   # one per block class (and per expert's first call), none per step
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = run(name, pipe, steps=STEPS)   # a second generation compiles nothing
    assert counters["stats"]["unique_graphs"] == graphs
    cachekit.remove(pipe)
    torch._dynamo.reset()
    torch.testing.assert_close(first, cached, rtol=1e-4, atol=1e-5)
    assert torch.equal(first, second)
    assert torch.equal(run(name, pipe, steps=STEPS), ref)
