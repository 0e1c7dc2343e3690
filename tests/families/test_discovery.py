"""Discovery and the guards that keep caching honest on models no layout describes.

Hand-checkable models (tests/helpers/toy.py style) and tiny pipelines whose transformer class nobody
registered (a subclass: the exact-class registry does not match it).
"""

import warnings

import pytest
import torch
from torch import nn

import cachekit
from cachekit import FixedIntervalConfig
from cachekit import layout_source, propose_layout
from tiny_pipelines import build, call_kwargs, output_tensor


class Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn, self.ffn = Attn(d), nn.Sequential(nn.Linear(d, d), nn.GELU())

    def forward(self, hidden_states, temb):
        hidden_states = hidden_states + temb * self.attn(hidden_states)
        return hidden_states + self.ffn(hidden_states)


class Net(nn.Module):
    """A stack of blocks beside lists that are not stacks: projections applied side by side, and
    a list of adapters that never runs."""

    def __init__(self, d=8, n=3):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.projections = nn.ModuleList(nn.Linear(d, d) for _ in range(2))
        self.unused = nn.ModuleList(Block(d) for _ in range(2))

    def forward(self, x, timestep):
        temb = torch.cos(timestep.float().reshape(-1, 1, 1) / 10)
        x = x + sum(p(x) for p in self.projections)
        for b in self.blocks:
            x = b(x, temb)
        return x


def denoise(m, steps=6):
    x = torch.ones(1, 4, 8)
    with torch.no_grad():
        return torch.stack([m(x, torch.tensor([float(t)])) for t in range(steps, 0, -1)])


def test_discovery_finds_the_stack_and_its_units_and_says_why_the_others_are_not():
    torch.manual_seed(0)
    m = Net().eval()
    layout = propose_layout(m, torch.ones(1, 4, 8), torch.tensor([3.0]))
    assert layout.block_lists == ("blocks",) and layout.io[0].streams == ("hidden_states",)
    assert layout.units[0].units == (("self_attn", "attn"), ("ffn", "ffn"))
    src = layout_source(Net, layout)
    assert src.startswith("cachekit.register_layout('test_discovery.Net'") and "('blocks',)" in src
    # the source is a working call: registering it gives the same layout
    ns = {"cachekit": cachekit}
    exec(src.replace("'test_discovery.Net'", "Net"), {**ns, "Net": Net})
    try:
        assert cachekit.adapters.registry.layout_for(m) == layout
    finally:
        cachekit.unregister_layout(Net)


def test_discovered_model_is_exact_at_interval_1_and_reuses_at_interval_2():
    torch.manual_seed(0)
    m = Net().eval()
    ref = denoise(m)
    cachekit.apply(m, FixedIntervalConfig(interval=1, warmup=0, final_steps=0))
    with pytest.raises(cachekit.UnsupportedModelError, match="has not been called"):
        cachekit.stats(m)
    assert torch.equal(denoise(m), ref)
    assert cachekit.stats(m).block_names == ("blocks.0", "blocks.1", "blocks.2")
    cachekit.remove(m)
    cachekit.apply(m)   # the default: units + Taylor
    out = denoise(m)
    s = cachekit.stats(m)
    assert s.block_names[:2] == ("blocks.0.self_attn", "blocks.0.ffn") and s.computed_fraction < 1
    assert not torch.equal(out, ref)
    cachekit.remove(m)
    assert torch.equal(denoise(m), ref) and "forward" not in vars(m)


def test_a_layout_naming_a_list_that_never_runs_is_an_error_on_a_bare_model():
    torch.manual_seed(0)
    m = Net().eval()
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=1),
                   layout=cachekit.ModelLayout(("blocks", "unused")))
    with pytest.raises(cachekit.CompositionError, match="2 of 5 hooked blocks of Net .*unused.0"):
        denoise(m)
    cachekit.remove(m)


class Skipper(Net):
    """Skips block 1 on every second call of a step (as WanAnimate2 skips a block in its
    unconditional call)."""

    def forward(self, x, timestep, skip=False):
        temb = torch.cos(timestep.float().reshape(-1, 1, 1) / 10)
        for i, b in enumerate(self.blocks):
            if not (skip and i == 1):
                x = b(x, temb)
        return x


def test_blocks_the_model_skips_are_not_counted_as_reuse():
    torch.manual_seed(0)
    m = Skipper().eval()
    cachekit.apply(m, FixedIntervalConfig(interval=1, warmup=0, final_steps=0), layout=cachekit.ModelLayout(("blocks",)))
    with torch.no_grad():
        for t in (3.0, 2.0):
            for skip in (False, True):
                m(torch.ones(1, 4, 8), torch.tensor([t]), skip=skip)
    s = cachekit.stats(m)
    assert s.skipped == 2 and s.computed_fraction == 1.0   # 2 calls skipped block 1: not "reused"
    cachekit.remove(m)


class Grower(Net):
    """Block 1 appends a token at the first call (a KV prefill's longer sequence)."""

    def forward(self, x, timestep):
        temb = torch.cos(timestep.float().reshape(-1, 1, 1) / 10)
        for i, b in enumerate(self.blocks):
            x = b(x, temb)
            if i == 0 and timestep.item() > 5:
                x = torch.cat([x, x[:, :1]], dim=1)
        return x[:, :4]


def test_a_stream_changing_shape_inside_a_segment_recomputes_counts_and_warns_once():
    torch.manual_seed(0)
    m = Grower().eval()
    ref = denoise(m)
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=0, final_steps=0), layout=cachekit.ModelLayout(("blocks",)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = denoise(m)
    said = [w for w in caught if "changed shape inside the cached block range" in str(w.message)]
    assert len(said) == 1
    s = cachekit.stats(m)
    assert s.shape_changes == 1
    assert s.plan[:2].all()             # step 0 changed shape: nothing kept, so step 1 computed too
    assert not s.plan[3].all()          # then reuse resumes (interval 2: step 3 reuses step 2)
    assert torch.equal(out[:2], ref[:2])
    cachekit.remove(m)


def test_an_unregistered_transformer_in_a_pipeline_is_found_at_its_first_step():
    pipe = build("flux", seed=0)
    t = pipe.transformer
    t.__class__ = type("NewFlux", (type(t),), {"__module__": __name__})   # a class nobody registered
    def gen():
        return output_tensor("flux", pipe(**call_kwargs("flux", pipe, steps=5, seed=0)))

    with torch.no_grad():
        ref = gen()
        cachekit.apply(pipe, FixedIntervalConfig(interval=1, warmup=0, final_steps=0))
        assert torch.equal(gen(), ref)
        s = cachekit.stats(pipe)
        assert s.num_steps == 5 and s.num_calls == 5 and s.steps.tolist() == [0, 1, 2, 3, 4]
        assert s.block_names[0] == "transformer_blocks.0" and s.block_names[-1].startswith("single_transformer_blocks")
        cachekit.remove(pipe)
        cachekit.apply(pipe, FixedIntervalConfig(interval=2, warmup=1))
        out = gen()
        assert cachekit.stats(pipe).computed_fraction < 1 and not torch.equal(out, ref)
        cachekit.remove(pipe)
        assert torch.equal(gen(), ref)
    assert "forward" not in vars(t) and "set_timesteps" not in vars(pipe.scheduler)
