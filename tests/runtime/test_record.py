"""cachekit.record: the public way to observe full-compute runs for offline plans."""

import numpy as np
import pytest
import torch

import cachekit
from cachekit.config import config_classes
from toy import Toy, ToyPolicy, denoise


def policy():
    torch.manual_seed(0)
    return ToyPolicy().eval()


def test_unit_recording_is_the_uncached_run_and_leaves_nothing_behind():
    m = policy()
    ref = [denoise(m, seed=s) for s in range(2)]
    before = {k: dict(vars(layer)) for k, layer in enumerate(m.decoder.layers)}
    outs = []
    rec = cachekit.record(m, [lambda s=s: outs.append(denoise(m, seed=s)) for s in range(2)], max_features=5)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))            # bit for bit
    assert {k: dict(vars(layer)) for k, layer in enumerate(m.decoder.layers)} == before
    assert "_cachekit_session" not in vars(m) and "forward" not in vars(m)
    assert rec.level == "units" and len(rec.runs) == 2 and rec.num_steps == 10
    assert rec.columns[:3] == ("decoder.layers.0.self_attn", "decoder.layers.0.cross_attn", "decoder.layers.0.ffn")
    assert rec.kinds[:3] == ("self_attn", "cross_attn", "ffn") and rec.layers[:4] == (0, 0, 0, 1)
    assert rec.features(0, 0).shape == (10, 5) and rec.leaders == [0, 0]
    assert rec.fingerprint == cachekit.adapters.model_fingerprint(m)
    # the same elements at every step: the recorded self-attention output of step 3 is a subset of it
    hook_out = []
    h = m.decoder.layers[0].self_attn.register_forward_hook(lambda mod, a, o: hook_out.append(o[0].flatten()))
    denoise(m, seed=0)
    h.remove()
    assert set(np.round(rec.features(0, 0)[3], 5)) <= set(np.round(hook_out[3].numpy(), 5))


def test_stack_recording_keeps_each_cfg_branch():
    m = Toy()
    x0, x1 = torch.zeros(2, 3), torch.ones(2, 3)

    def generation():
        cachekit.reset(m, num_steps=3)
        with torch.no_grad():
            for t in (3.0, 2.0, 1.0):
                m(x0, torch.tensor(t))
                m(x1, torch.tensor(t))

    # reset needs hooks on the model: the callable runs while the recorder is installed
    rec = cachekit.record(m, [generation, generation], level="stack")
    arrays = rec.arrays()
    assert len(arrays) == 4 and all(a.shape == (3, 6) for a in arrays)    # 2 generations x 2 branches
    # the stack residual of the toy is 10 t whatever the input
    np.testing.assert_allclose(arrays[0][:, 0], [30.0, 20.0, 10.0])
    assert list(rec.runs[0]) == [0, 1] and rec.columns == ("stack",)


def test_record_refuses_bad_input_and_is_not_a_method():
    m = policy()
    with pytest.raises(ValueError, match="level must be one of units, stack"):
        cachekit.record(m, [], level="blocks")
    with pytest.raises(ValueError, match="max_features must be an int >= 1"):
        cachekit.record(m, [], max_features=0)
    with pytest.raises(ValueError, match="nothing was recorded"):
        cachekit.record(m, [lambda: None])
    assert "_cachekit_session" not in vars(m)
    cachekit.apply(m, cachekit.FixedIntervalConfig())
    with pytest.raises(cachekit.AlreadyAppliedError):
        cachekit.record(m, [lambda: denoise(m)])
    assert all(not name.startswith("_") for name in config_classes())   # recorders are not registered


def test_plan_bac_needs_a_unit_recording():
    from cachekit.planning import plan_bac

    m = Toy()
    rec = cachekit.record(m, [lambda: [m(torch.zeros(1, 2), torch.tensor(float(t))) for t in (2, 1)]], level="stack")
    with pytest.raises(ValueError, match="needs a recording of sub-block units"):
        plan_bac(rec, updates=2)
