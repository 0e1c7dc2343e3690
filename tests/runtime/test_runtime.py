"""The hook runtime on models whose outputs are known by hand (tests/helpers/toy.py)."""

import contextlib

import pytest
import torch
from torch import nn

import cachekit
from cachekit import EasyCacheConfig, FixedIntervalConfig
from toy import AddBlock, Toy, ToyTwoStream

FI2 = FixedIntervalConfig(interval=2, warmup=1, final_steps=1)


@torch.no_grad()
def run(model, ts, x=None):
    x = torch.zeros(2, 3) if x is None else x
    return [float(model(x, torch.tensor(t))[0, 0]) for t in ts]


def snapshot(*objs):
    return [(o, dict(vars(o))) for o in objs]


def test_fixed_interval_reuses_stack_residual_by_hand():
    m = Toy()
    cachekit.apply(m, FI2)
    cachekit.reset(m, num_steps=5)
    # residual of the 4-block stack = 10 t; step 2 reuses step 1's (t=4 -> 40)
    assert run(m, [5, 4, 3, 2, 1]) == [50, 40, 40, 20, 10]
    s = cachekit.stats(m)
    assert s.plan.tolist() == [[True] * 4, [True] * 4, [False] * 4, [True] * 4, [True] * 4]
    assert s.computed_fraction == pytest.approx(0.8) and s.steps.tolist() == [0, 1, 2, 3, 4]
    assert s.block_names == ("blocks.0", "blocks.1", "blocks.2", "blocks.3")


def test_two_stream_tuple_outputs_are_reused_per_stream():
    m = ToyTwoStream()
    x, c = torch.zeros(1, 2), torch.ones(1, 2)
    cachekit.apply(m, FI2)   # found by the fallback, which assumes one tensor out
    with pytest.raises(cachekit.UnsupportedModelError, match="returned tuple, not a tensor; describe its outputs"):
        m(x, c, 1.0)
    cachekit.remove(m)
    io = cachekit.BlockIO(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states"))
    cachekit.apply(m, FixedIntervalConfig(interval=2, warmup=1, final_steps=0),
                   layout=cachekit.ModelLayout(("transformer_blocks",), io))
    outs = [m(x, c, float(t)) for t in (3, 2, 1)]
    # step 1 computed at t=2: hidden residual 6*2 = 12, context residual 3*10*2 = 60; step 2 reuses
    assert float(outs[2][0][0, 0]) == 12 and float(outs[2][1][0, 0]) == 61
    assert float(outs[1][0][0, 0]) == 12 and float(outs[0][1][0, 0]) == 91


def test_remove_restores_everything_and_keeps_foreign_instance_forward():
    m = Toy()
    sentinel = m.blocks[1].forward  # a bound method put on the instance by someone else
    m.blocks[1].forward = sentinel
    before = snapshot(m, *m.blocks)
    ref = run(m, [3, 2, 1])
    cachekit.apply(m, FI2)
    assert all("forward" in vars(b) for b in m.blocks) and "_cachekit_session" in vars(m)
    run(m, [3, 2, 1])
    cachekit.remove(m)
    assert snapshot(m, *m.blocks) == before
    assert vars(m.blocks[1])["forward"] is sentinel and "forward" not in vars(m.blocks[0])
    assert run(m, [3, 2, 1]) == ref


def test_class_is_never_patched_and_other_instances_unaffected():
    a, b = Toy(), Toy()
    class_attrs = (dict(vars(Toy)), dict(vars(AddBlock)), dict(vars(nn.Module)))
    cachekit.apply(a, FI2)
    assert (dict(vars(Toy)), dict(vars(AddBlock)), dict(vars(nn.Module))) == class_attrs
    assert "forward" not in vars(b) and all("forward" not in vars(blk) for blk in b.blocks)
    cachekit.reset(a, num_steps=4)
    assert run(a, [4, 3, 2, 1]) == [40, 30, 30, 10] and run(b, [4, 3, 2, 1]) == [40, 30, 20, 10]


def test_double_apply_and_not_applied_errors():
    m = Toy()
    cachekit.apply(m, FI2)
    with pytest.raises(cachekit.AlreadyAppliedError, match="already has cachekit hooks; call cachekit.remove first"):
        cachekit.apply(m, FI2)
    cachekit.remove(m)
    with pytest.raises(cachekit.NotAppliedError, match="Toy has no cachekit hooks"):
        cachekit.remove(m)
    with pytest.raises(cachekit.NotAppliedError):
        cachekit.stats(m)


class TwoLists(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleList(AddBlock(i) for i in range(2))
        self.decoder = nn.ModuleList(AddBlock(i) for i in range(3))

    def forward(self, x, timestep):
        for b in [*self.encoder, *self.decoder]:
            x = b(x, timestep)
        return x


def test_two_lists_are_discovered_and_bad_input_leaves_the_model_untouched():
    m = TwoLists()
    before = snapshot(m, *m.encoder, *m.decoder)
    cachekit.apply(m, FI2)   # two lists: found at the first call (the decoder takes what the encoder returned)
    with torch.no_grad():
        m(torch.ones(2), torch.tensor(1.0))
    assert cachekit.stats(m).block_names == ("encoder.0", "encoder.1", "decoder.0", "decoder.1", "decoder.2")
    cachekit.remove(m)
    with pytest.raises(cachekit.UnsupportedModelError, match="holds no nn.ModuleList"):
        cachekit.apply(nn.Linear(2, 2), FI2)
    with pytest.raises(cachekit.ConfigError):
        cachekit.apply(m, "no-such-recipe", layout=cachekit.ModelLayout(("decoder",)))
    assert snapshot(m, *m.encoder, *m.decoder) == before
    cachekit.apply(m, FI2, layout=cachekit.ModelLayout(("encoder", "decoder"), cachekit.BlockIO(("hidden_states",))))
    assert cachekit.stats(m).block_names == ("encoder.0", "encoder.1", "decoder.0", "decoder.1", "decoder.2")


def test_wrong_layout_names_the_problem():
    with pytest.raises(cachekit.UnsupportedModelError, match="has no block list 'blocks'"):
        cachekit.apply(TwoLists(), FI2, layout=cachekit.ModelLayout(("blocks",)))
    with pytest.raises(cachekit.UnsupportedModelError, match="has no forward argument 'sample'"):
        cachekit.apply(Toy(), FI2, layout=cachekit.ModelLayout(("blocks",), cachekit.BlockIO(("sample",))))


def test_hooks_keep_signatures():
    import inspect
    m = Toy()
    sig = inspect.signature(m.blocks[0].forward), inspect.signature(m.forward)
    cachekit.apply(m, FI2)
    assert (inspect.signature(m.blocks[0].forward), inspect.signature(m.forward)) == sig


class MulBlock(nn.Module):
    def forward(self, hidden_states, t):
        return hidden_states * 2


class MulToy(Toy):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(MulBlock() for _ in range(4))


def test_branches_keep_their_own_residual_and_follow_the_leader():
    m = MulToy()   # stack residual = 15 x
    cachekit.apply(m, FI2)
    cachekit.reset(m, num_steps=4)
    out = []
    for step, t in enumerate([4.0, 3.0, 2.0, 1.0]):
        for branch, v in ((0, 1.0), (1, 10.0)):   # cond then uncond, same timestep
            x = torch.full((1, 1), v + step)
            out.append(float(m(x, torch.tensor(t)).detach()))
    # step 2 reuses: cond x=3 -> 3 + 15*2 = 33 ; uncond x=12 -> 12 + 15*11 = 177
    assert out[4:6] == [33.0, 177.0]
    assert out[:4] == [16.0, 160.0, 32.0, 176.0] and out[6:] == [64.0, 208.0]
    s = cachekit.stats(m)
    assert s.steps.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and s.branches == (0, 1) * 4
    assert s.plan[:, 0].tolist() == [True] * 4 + [False] * 2 + [True] * 2


class ContextToy(MulToy):
    """Names its passes like diffusers' CacheMixin.cache_context."""

    def __init__(self):
        super().__init__()
        self.seen = []

    @contextlib.contextmanager
    def cache_context(self, name):
        self.seen.append(name)
        yield


def test_cache_context_names_branches_and_is_restored():
    m = ContextToy()
    cachekit.apply(m, FI2)
    for t in (3.0, 2.0):
        for name in ("cond", "uncond"):
            with m.cache_context(name):
                m(torch.ones(1, 1), torch.tensor(t))
    assert cachekit.stats(m).branches == ("cond", "uncond", "cond", "uncond")
    assert m.seen == ["cond", "uncond"] * 2
    cachekit.remove(m)
    assert "cache_context" not in vars(m)


def test_new_generation_detected_from_timestep_and_num_steps():
    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=10, warmup=0, final_steps=0))
    assert run(m, [3, 2, 1]) == [30, 30, 30]       # steps 1, 2 reuse t=3's residual
    assert run(m, [5, 4]) == [50, 50]              # t went up: new generation, step 0 computed
    assert cachekit.stats(m).steps.tolist() == [0, 1]
    cachekit.reset(m, num_steps=2)
    assert run(m, [2, 1, 2, 1]) == [20, 20, 20, 20]  # after 2 steps a new generation starts
    assert cachekit.stats(m).steps.tolist() == [0, 1]
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        cachekit.reset(m, num_steps=0)


def test_ascending_timesteps_are_one_generation():
    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=10, warmup=0, final_steps=0))
    assert run(m, [0.1, 0.2, 0.3]) == pytest.approx([1.0, 1.0, 1.0])
    assert run(m, [0.05]) == pytest.approx([0.5])   # went back down: new generation


class Boom(AddBlock):
    armed = False

    def forward(self, hidden_states, t):
        if self.armed:
            raise RuntimeError("boom")
        return super().forward(hidden_states, t)


def test_exception_in_block_resets_generation():
    m = Toy()
    m.blocks = nn.ModuleList(Boom(i) for i in range(4))
    cachekit.apply(m, FixedIntervalConfig(interval=10, warmup=2, final_steps=0))
    run(m, [5])
    m.blocks[2].armed = True
    with pytest.raises(RuntimeError, match="boom"):
        run(m, [4])          # step 1, in warm-up: computed, raises half-way through the stack
    m.blocks[2].armed = False
    assert run(m, [4, 3, 2]) == [40, 30, 20]   # a fresh generation: t=4 is its step 0, not a CFG branch
    assert cachekit.stats(m).steps.tolist() == [0, 1, 2]


def test_shape_change_forces_compute():
    m = Toy()
    cachekit.apply(m, FixedIntervalConfig(interval=10, warmup=0, final_steps=0))
    run(m, [3.0])
    assert run(m, [2.0]) == [30] and not cachekit.stats(m).plan[1].any()  # same shape: reused
    assert run(m, [1.0], x=torch.zeros(4, 3)) == [10]   # cached residual is (2, 3): must compute
    assert cachekit.stats(m).plan[2].all()


def test_easycache_zero_threshold_and_interval_one_are_bit_exact():
    torch.manual_seed(0)
    m = MulToy()
    xs = [torch.randn(2, 5) for _ in range(6)]
    ref = [m(x, torch.tensor(float(6 - i))) for i, x in enumerate(xs)]
    for cfg in (EasyCacheConfig(threshold=0.0, warmup=0), FixedIntervalConfig(interval=1, warmup=0, final_steps=0)):
        cachekit.apply(m, cfg)
        got = [m(x, torch.tensor(float(6 - i))) for i, x in enumerate(xs)]
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
        assert cachekit.stats(m).computed_fraction == 1.0
        cachekit.remove(m)


def test_block_called_outside_model_forward_runs_plainly():
    m = Toy()
    cachekit.apply(m, FI2)
    assert float(m.blocks[0](torch.zeros(1), 2.0)) == 2.0
    assert cachekit.stats(m).num_calls == 0
