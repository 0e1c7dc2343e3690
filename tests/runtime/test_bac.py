"""BACConfig applied to sub-block units of a Diffusion-Policy-shaped model."""

import pytest
import torch

import cachekit
from cachekit import BACConfig, ConfigError
from cachekit.adapters import model_fingerprint
from toy import ToyPolicy, denoise

UNITS = [f"decoder.layers.{i}.{k}" for i in range(3) for k in ("self_attn", "cross_attn", "ffn")]


def plan(every=None, steps=10, **override):
    every = every or {}
    p = {u: list(range(0, steps, every.get(u.split(".")[-1], 1))) for u in UNITS}
    p.update(override)
    return p


def model():
    torch.manual_seed(0)
    return ToyPolicy().eval()


def test_full_plan_is_bit_exact_and_remove_restores():
    m = model()
    ref = denoise(m)
    cachekit.apply(m, BACConfig(plan=plan(), num_steps=10, model=model_fingerprint(m)))
    assert torch.equal(denoise(m), ref)
    s = cachekit.stats(m)
    assert s.block_names == tuple(UNITS) and s.computed_fraction == 1.0 and s.num_steps == 10
    cachekit.remove(m)
    assert all("_ff_block" not in vars(layer) and "_sa_block" not in vars(layer) for layer in m.decoder.layers)
    assert torch.equal(denoise(m), ref)


def test_units_recompute_exactly_on_their_plan():
    m = model()
    ref = denoise(m)
    calls = []
    m.decoder.layers[1].self_attn.register_forward_hook(lambda *a: calls.append(1))
    p = plan(every={"ffn": 3, "self_attn": 2})
    cachekit.apply(m, BACConfig(plan=p, num_steps=10))
    out = denoise(m)
    s = cachekit.stats(m)
    assert len(calls) == 5                       # self-attention of layer 1: steps 0, 2, 4, 6, 8
    for j, u in enumerate(UNITS):
        assert s.plan[:, j].nonzero()[0].tolist() == p[u]
    assert s.computed_fraction == pytest.approx((3 * 5 + 3 * 10 + 3 * 4) / 90)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.5)


def test_each_policy_call_is_a_generation():
    m = model()
    cachekit.apply(m, BACConfig(plan=plan(every={"ffn": 2}), num_steps=10))
    a = denoise(m, seed=1)
    b = denoise(m, seed=1)        # timestep jumps back to 9: a fresh generation, same result
    assert torch.equal(a, b) and cachekit.stats(m).steps.tolist() == list(range(10))


def test_plans_are_refused_for_other_models_and_step_counts():
    m = model()
    with pytest.raises(ConfigError, match="BAC plan was calibrated on ToyPolicy:0000"):
        cachekit.apply(m, BACConfig(plan=plan(), num_steps=10, model="ToyPolicy:0000"))
    with pytest.raises(ConfigError, match=r"BAC plan units do not match the model: missing \['decoder.layers.2.ffn'\]"):
        cachekit.apply(m, BACConfig(plan={u: [0] for u in UNITS[:-1]}, num_steps=10))
    assert "forward" not in vars(m)          # nothing installed by the refused calls
    cachekit.apply(m, BACConfig(plan=plan(), num_steps=10))
    with pytest.raises(ConfigError, match="calibrated for 10 steps; this generation has 20"):
        cachekit.reset(m, num_steps=20)


@pytest.mark.parametrize("bad, message", [
    ({}, "plan must map unit names"),
    ({"a": [1, 2]}, r"plan\['a'\] must start at step 0"),
    ({"a": [0, 10]}, "stay below num_steps=10"),
    ({"a": "0,1"}, "must be a list of step indices"),
])
def test_config_validation(bad, message):
    with pytest.raises(ConfigError, match=message):
        BACConfig(plan=bad, num_steps=10)


def test_recipe_round_trip(tmp_path):
    cfg = BACConfig(plan={"x.ffn": [4, 0, 2], "x.self_attn": [0]}, num_steps=5, model="M:1")
    assert cfg.plan == (("x.ffn", (0, 2, 4)), ("x.self_attn", (0,)))
    path = cachekit.save_recipe(cfg, tmp_path / "bac.yaml", source="test")
    assert cachekit.load_recipe(path).config == cfg


def test_calibrate_recipe_apply_round_trip(tmp_path):
    from cachekit.planning import plan_bac
    m = model()
    ref = denoise(m, seed=5)
    cal = plan_bac(cachekit.record(m, [lambda s=s: denoise(m, seed=s) for s in range(3)]), updates=4, top_n=2)
    cfg = cal.config
    assert cal.runs == 3 and cfg.num_steps == 10 and cfg.model == model_fingerprint(m)
    assert "forward" not in vars(m) and all("_ff_block" not in vars(layer) for layer in m.decoder.layers)
    plans = dict(cfg.plan)
    assert set(plans) == set(UNITS) and len(cal.selected) == 2
    ffn = {u: p for u, p in plans.items() if u.endswith("ffn")}
    for u, steps in plans.items():
        assert steps[0] == 0 and steps[-1] == 9
        if u not in cal.selected:
            assert len(steps) == 4                       # the budget M
        else:                                            # Bubbling Union
            layer = int(u.split(".")[2])
            for v, p in ffn.items():
                if int(v.split(".")[2]) >= layer and v not in cal.selected:
                    assert set(p) <= set(steps)
    path = cachekit.save_recipe(cfg, tmp_path / "policy-bac.yaml", source="test calibration")
    cachekit.apply(m, path)
    out = denoise(m, seed=5)
    assert cachekit.stats(m).computed_fraction < 0.7
    assert torch.allclose(out, ref, atol=0.5) and not torch.equal(out, ref)


def test_policy_wrapper_is_found_and_its_scheduler_starts_generations():
    from policy_wrapper import PolicyWrapper
    torch.manual_seed(0)
    w = PolicyWrapper().eval()
    ref = w.predict(seed=3)
    cachekit.apply(w, cachekit.FixedIntervalConfig(interval=3, warmup=1, final_steps=1))
    out = w.predict(seed=3)
    s = cachekit.stats(w)
    assert s.num_steps == 10 and s.steps.tolist() == list(range(10))      # from scheduler.set_timesteps
    assert s.block_names[0] == "decoder.layers.0"                        # relative to w.model
    assert 0 < s.computed_fraction < 1 and not torch.equal(out, ref)
    cachekit.remove(w)
    assert "set_timesteps" not in vars(w.scheduler) and "forward" not in vars(w.model)
    assert torch.equal(w.predict(seed=3), ref)


def test_easycache_on_torch_decoder_layers_uses_their_tgt_stream():
    m = model()
    ref = denoise(m, steps=20)
    cachekit.apply(m, cachekit.EasyCacheConfig(threshold=0.0, warmup=0))
    assert torch.equal(denoise(m, steps=20), ref)
    cachekit.remove(m)
    cachekit.apply(m, cachekit.EasyCacheConfig(threshold=0.5, warmup=2))
    cachekit.reset(m, num_steps=20)
    out = denoise(m, steps=20)
    assert cachekit.stats(m).computed_fraction < 1.0 and out.shape == ref.shape


def _norm_calls(m):
    calls = []
    for layer in m.decoder.layers:
        layer.norm1.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_fully_reused_pre_norm_layers_are_skipped_bit_exactly():
    # Steps 0, 3, 6, 9 compute every unit; at the others every unit of every layer is reused, and
    # the additive-block path returns x + c_sa + c_ca + c_ff without running the layer.
    p = plan(every={"self_attn": 3, "cross_attn": 3, "ffn": 3})
    p["decoder.layers.2.ffn"] = [0, 1, 3, 6, 9]            # layer 2 runs at step 1: mixed path
    m = model()
    calls = _norm_calls(m)
    cachekit.apply(m, BACConfig(plan=p, num_steps=10))
    fast, fast_stats = denoise(m), cachekit.stats(m)
    cachekit.remove(m)
    assert len(calls) == 3 * 4 + 1                         # norm1 runs on compute steps only (+ layer 2, step 1)

    # the same units, not declared additive: every layer through its own forward
    units = cachekit.BlockUnits((("self_attn", "_sa_block"), ("cross_attn", "_mha_block"), ("ffn", "_ff_block")))
    layout = cachekit.ModelLayout(("decoder.layers",), cachekit.BlockIO(("tgt",)), units=units)
    m2 = model()
    calls2 = _norm_calls(m2)
    cachekit.apply(m2, BACConfig(plan=p, num_steps=10), layout=layout)
    slow, slow_stats = denoise(m2), cachekit.stats(m2)
    assert len(calls2) == 3 * 10
    assert torch.equal(fast, slow)
    assert (fast_stats.plan == slow_stats.plan).all()


def test_additive_path_recomputes_when_input_shapes_change():
    m = model()
    cachekit.apply(m, BACConfig(plan=plan(every={"self_attn": 5, "cross_attn": 5, "ffn": 5}), num_steps=10))
    g = torch.Generator().manual_seed(0)
    x2, c2 = torch.randn(2, 4, 2, generator=g), torch.randn(2, 2, 3, generator=g)
    x3, c3 = torch.randn(3, 4, 2, generator=g), torch.randn(3, 2, 3, generator=g)
    with torch.no_grad():
        m(x2, torch.tensor(9), c2)
        out = m(x3, torch.tensor(8), c3)                    # a reuse step, but nothing fits batch 3
    assert cachekit.stats(m).plan[1].all()
    cachekit.remove(m)
    with torch.no_grad():
        assert torch.equal(out, m(x3, torch.tensor(8), c3))


def test_post_norm_layers_take_the_unit_path():
    torch.manual_seed(0)
    m = ToyPolicy().eval()
    for layer in m.decoder.layers:
        layer.norm_first = False
    ref = denoise(m)
    cachekit.apply(m, BACConfig(plan=plan(every={"ffn": 2}), num_steps=10))
    assert all("forward" not in vars(layer) for layer in m.decoder.layers)
    out = denoise(m)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.5)


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.TransformerEncoderLayer(
            16, 2, 32, dropout=0.0, batch_first=True, norm_first=True) for _ in range(2))

    def forward(self, x, timestep):
        x = x + timestep.float() / 10
        for layer in self.layers:
            x = layer(x)
        return x


def test_encoder_layers_fall_back_to_whole_block_units():
    # In eval under no_grad torch runs encoder layers as one fused kernel that never calls
    # _sa_block / _ff_block: sub-block hooks would never fire and BAC would silently do nothing.
    torch.manual_seed(0)
    m = _Encoder().eval()
    names = ["layers.0.block", "layers.1.block"]
    cachekit.apply(m, BACConfig(plan={n: [0, 2] for n in names}, num_steps=4))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        outs = [m(x, torch.tensor(t)) for t in (3, 2, 1, 0)]
    assert cachekit.stats(m).plan.astype(int).tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]
    assert torch.equal(outs[1], outs[0]) and not torch.equal(outs[2], outs[1])
