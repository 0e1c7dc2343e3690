"""torch.compile with cachekit on tiny Flux and Wan (CPU inductor): same outputs as the eager cached
run, and no recompile from one step or generation to the next.

Compile time dominates (a few seconds per graph on 2 cores), so each test builds one pipeline,
runs few steps, and counts graphs with dynamo's own counters.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import cachekit
from cachekit import BACConfig, FixedIntervalConfig
from tiny_pipelines import build, call_kwargs, output_tensor

STEPS = 4
REUSE = FixedIntervalConfig(interval=2, warmup=1, final_steps=1)  # 4 steps: compute 0, 1, 3; reuse 2


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def generate(family, pipe):
    with torch.no_grad():
        return output_tensor(family, pipe(**call_kwargs(family, pipe, steps=STEPS)))


def graphs():
    return counters["stats"]["unique_graphs"]


def second_generation_compiles_nothing(family, pipe):
    """Run a generation with recompiles turned into errors; return its output."""
    before = graphs()
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = generate(family, pipe)
    assert graphs() == before
    return out


def tiny(family):
    pipe = build(family)
    pipe.transformer.eval()
    return pipe


def block_forwards(pipe):
    return [(m, dict(vars(m))) for m in pipe.transformer.modules()]


@pytest.mark.parametrize("family, config, max_graphs", [
    ("flux", REUSE, 3),            # double block, single block, last single block (no text stream out)
    ("wan", REUSE, 1),             # one block class, one graph for both blocks
])
def test_apply_compile_matches_eager_and_never_recompiles(family, config, max_graphs):
    pipe = tiny(family)
    cachekit.apply(pipe, config)
    eager = generate(family, pipe)
    plan = cachekit.stats(pipe).plan
    cachekit.remove(pipe)
    before = block_forwards(pipe)

    cachekit.apply(pipe, config, compile=True)
    first = generate(family, pipe)
    assert (cachekit.stats(pipe).plan == plan).all() and not plan.all()
    assert 0 < graphs() <= max_graphs  # one graph per block class, none per step
    second = second_generation_compiles_nothing(family, pipe)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    assert torch.equal(first, second)

    cachekit.remove(pipe)
    assert block_forwards(pipe) == before  # the same forward objects, nothing compiled left behind


def test_bac_units_compiled_on_wan():
    """Sub-block units: their originals are compiled, the block forwards (which call the unit hooks)
    stay eager."""
    pipe = tiny("wan")
    from cachekit.adapters import find_units, resolve

    units = find_units(resolve(pipe).blocks)
    config = BACConfig(plan={u.name: [0, 2, STEPS - 1] for u in units}, num_steps=STEPS)
    cachekit.apply(pipe, config)
    eager = generate("wan", pipe)
    cachekit.remove(pipe)
    cachekit.apply(pipe, config, compile=dict(backend="aot_eager"))
    first = generate("wan", pipe)
    second = second_generation_compiles_nothing("wan", pipe)
    assert not cachekit.stats(pipe).plan.all()
    cachekit.remove(pipe)
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(first, second)


@pytest.mark.parametrize("how, family", [("model", "flux"), ("repeated_blocks", "wan"),
                                         ("repeated_blocks_then_apply_compile", "wan")])
def test_user_compile_around_the_hooks_does_not_recompile_per_step(how, family):
    """The user's own torch.compile around cachekit's hooks: the hooks are graph breaks, so no guard
    sees the step count (before, every step recompiled until recompile_limit). aot_eager: this is
    about guards, not code generation."""
    pipe = tiny(family)
    cachekit.apply(pipe, REUSE)
    eager = generate(family, pipe)
    if how == "model":
        pipe.transformer = torch.compile(pipe.transformer, backend="aot_eager")
    elif how == "repeated_blocks":  # diffusers' regional compile, after apply
        pipe.transformer.compile_repeated_blocks(backend="aot_eager")
    else:  # compile_repeated_blocks first; apply(compile=True) takes the blocks over until remove
        cachekit.remove(pipe)
        pipe.transformer.compile_repeated_blocks(backend="aot_eager")
        compiled = {b: vars(b)["_compiled_call_impl"] for b in pipe.transformer.blocks}
        cachekit.apply(pipe, REUSE, compile=dict(backend="aot_eager"))
        assert all(vars(b)["_compiled_call_impl"] is None for b in compiled)
    first = generate(family, pipe)
    n = graphs()
    second = second_generation_compiles_nothing(family, pipe)
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(first, second) and 0 < n <= 8
    if how == "repeated_blocks_then_apply_compile":
        cachekit.remove(pipe)
        assert all(vars(b)["_compiled_call_impl"] is c for b, c in compiled.items())


def test_fullgraph_falls_back_when_a_block_has_a_graph_break():
    from toy import AddBlock, Toy

    class Breaking(AddBlock):
        def forward(self, hidden_states, t):
            torch._dynamo.graph_break()
            return hidden_states + (self.i + 1) * t

    m = Toy(2)
    m.blocks = torch.nn.ModuleList(Breaking(i) for i in range(2))
    cachekit.apply(m, FixedIntervalConfig(interval=1), compile=dict(backend="eager"))
    cachekit.reset(m, num_steps=2)
    with torch.no_grad():
        out = [float(m(torch.zeros(1, 2), torch.tensor(t))[0, 0]) for t in (2.0, 1.0)]
    assert out == [6.0, 3.0]  # blocks add t and 2 t
    with pytest.raises(torch._dynamo.exc.Unsupported):
        cachekit.remove(m)
        cachekit.apply(m, FixedIntervalConfig(interval=1), compile=dict(backend="eager", fullgraph=True))
        cachekit.reset(m, num_steps=1)
        m(torch.zeros(1, 2), torch.tensor(1.0))


@pytest.mark.parametrize("bad, error", [(dict(mood="fast"), ValueError), ("yes", TypeError)])
def test_compile_argument_is_checked(bad, error):
    from toy import Toy

    m = Toy()
    with pytest.raises(error, match="compile"):
        cachekit.apply(m, FixedIntervalConfig(), compile=bad)
    assert "_cachekit_session" not in vars(m)


def test_private_frame_hole_is_gated_on_the_torch_version():
    from cachekit.runtime.compile import frame_setter

    assert frame_setter("2.3.1") is None and frame_setter("2.15.0") is None
    assert callable(frame_setter())   # the torch under test is in the range the hole was run on


@pytest.mark.parametrize("outer", [False, True])
def test_public_fallback_keeps_outputs(monkeypatch, outer):
    """Outside the tested torch range the hooks are torch.compiler.disable (recursive): apply's own
    compile and a user's outer torch.compile still give the eager cached outputs."""
    from cachekit.runtime import compile as ck_compile
    from toy import Toy

    def run(m, call):
        cachekit.reset(m, num_steps=5)
        with torch.no_grad():
            return torch.stack([call(torch.ones(2, 3), torch.tensor(float(t))) for t in range(5, 0, -1)])

    eager = Toy()
    cachekit.apply(eager, REUSE)
    ref = run(eager, eager)
    monkeypatch.setattr(ck_compile, "frame_setter", lambda version=None: None)
    m = Toy()
    cachekit.apply(m, REUSE, compile=False if outer else {"backend": "eager"})
    call = torch.compile(m, backend="eager") if outer else m
    assert torch.equal(run(m, call), ref) and cachekit.stats(m).plan.tolist() == cachekit.stats(eager).plan.tolist()
    cachekit.remove(m)
    assert "forward" not in vars(m)
