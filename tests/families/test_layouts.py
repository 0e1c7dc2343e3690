"""cachekit.register_layout: a new model family is one registered layout (blocks, streams, units)."""

import pytest
import torch
from torch import nn

import cachekit
from cachekit import BlockIO, BlockUnits, FixedIntervalConfig, ModelLayout


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return self.fc(x)


class MyBlock(nn.Module):
    """x + attn(x) + mlp(x) with a scalar gate recomputed from the timestep every step."""

    def __init__(self, dim):
        super().__init__()
        self.attn, self.mlp = Mlp(dim), Mlp(dim)

    def forward(self, x, temb):
        x = x + temb * self.attn(x)
        return x + self.mlp(x)


class MyDiT(nn.Module):
    """Two block lists, neither the only ModuleList: the fallback cannot tell which to cache."""

    def __init__(self, dim=4):
        super().__init__()
        self.early = nn.ModuleList(MyBlock(dim) for _ in range(2))
        self.late = nn.ModuleList(MyBlock(dim) for _ in range(2))

    def forward(self, sample, timestep):
        temb = torch.cos(timestep.float().reshape(-1, 1) / 10)
        for b in [*self.early, *self.late]:
            sample = b(sample, temb)
        return sample


LAYOUT = ModelLayout(("early", "late"), BlockIO(("x",)), units=BlockUnits((("self_attn", "attn"), ("ffn", "mlp"))))


@pytest.fixture
def registered():
    cachekit.register_layout(MyDiT, LAYOUT)
    yield
    cachekit.unregister_layout(MyDiT)


@torch.no_grad()
def run(m, steps=6):
    x = torch.ones(2, 4)
    outs = []
    for t in range(steps, 0, -1):
        outs.append(m(x, torch.tensor(float(t))))
    return torch.stack(outs)


class Unchained(MyDiT):
    """Two lists whose blocks each take the model input, never what the previous block returned:
    no list is a stack of blocks."""

    def forward(self, sample, timestep):
        temb = torch.cos(timestep.float().reshape(-1, 1) / 10)
        return sum(b(sample, temb) for b in [*self.early, *self.late])


def test_unregistered_family_is_discovered_then_found_once_registered(registered):
    torch.manual_seed(0)
    m = MyDiT().eval()
    ref = run(m)
    cachekit.unregister_layout(MyDiT)
    # discovery: both lists chain (late.0 takes what early.1 returned), found from the first call
    cachekit.apply(m, FixedIntervalConfig(interval=1))
    assert torch.equal(run(m), ref)
    assert cachekit.stats(m).block_names == ("early.0", "early.1", "late.0", "late.1")
    cachekit.remove(m)
    u = Unchained().eval()
    before = run(u)
    cachekit.apply(u, FixedIntervalConfig())
    with pytest.raises(cachekit.UnsupportedModelError, match="early .*not chained.*register_layout"):
        run(u)
    assert "forward" not in vars(u) and not hasattr(u, "_cachekit_session")   # left as it was
    assert torch.equal(run(u), before)
    cachekit.register_layout(MyDiT, LAYOUT)
    cachekit.apply(m, FixedIntervalConfig(interval=1))
    assert torch.equal(run(m), ref)
    s = cachekit.stats(m)
    assert s.block_names == ("early.0", "early.1", "late.0", "late.1") and s.plan.all()
    cachekit.remove(m)


def test_registered_units_are_the_columns_of_unit_methods(registered):
    torch.manual_seed(0)
    m = MyDiT().eval()
    ref = run(m)
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=1, final_steps=0, units=True))
    cachekit.reset(m, num_steps=6)
    out = run(m)
    s = cachekit.stats(m)
    assert s.block_names[:2] == ("early.0.self_attn", "early.0.ffn") and len(s.block_names) == 8
    assert s.plan[:, 0].tolist() == [True, True, False, True, False, True]
    # reused units are re-gated with the current timestep: close to uncached, not equal
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.5)
    cachekit.remove(m)
    assert torch.equal(run(m), ref)


def test_registration_rules():
    with pytest.raises(ValueError, match="already has a layout"):
        cachekit.register_layout("diffusers.models.transformers.transformer_wan.WanTransformer3DModel", LAYOUT)
    cachekit.register_layout(MyDiT, LAYOUT)
    cachekit.register_layout(MyDiT, LAYOUT)              # the same layout again: fine
    with pytest.raises(ValueError, match="pass replace=True"):
        cachekit.register_layout(MyDiT, ModelLayout(("early",)))
    cachekit.register_layout(MyDiT, ModelLayout(("early",), BlockIO(("x",))), replace=True)
    m = MyDiT()
    cachekit.apply(m, FixedIntervalConfig())
    assert len(cachekit.adapters.resolve(m).blocks) == 2
    cachekit.remove(m)
    cachekit.unregister_layout(MyDiT)
    with pytest.raises(TypeError, match="layout must be a cachekit.ModelLayout"):
        cachekit.register_layout(MyDiT, ("early",))
    with pytest.raises(ValueError, match="not a 'module.ClassName' path"):
        cachekit.register_layout("MyDiT", LAYOUT)
    with pytest.raises(ValueError, match=r"BlockUnits.units must be \(kind, attribute\) pairs"):
        BlockUnits(("attn",))


def test_unit_attributes_that_do_not_exist_are_named(registered):
    bad = ModelLayout(("early", "late"), BlockIO(("x",)), units=BlockUnits((("ffn", "feed_forward"),)))
    m = MyDiT()
    with pytest.raises(cachekit.UnsupportedModelError, match="has none of its unit attributes feed_forward"):
        cachekit.apply(m, FixedIntervalConfig(units=True), layout=bad)
    assert "_cachekit_session" not in vars(m) and all("forward" not in vars(b) for b in m.early)
