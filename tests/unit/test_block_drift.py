"""BlockDriftConfig: the pure rule, the range split, and plans worked out by hand on tests/helpers/toy.py.

Toy block i adds (i + 1) t, so the probe (block 0) residual is t and its drift between the step with
timestep t and the reference step with t_ref is |t - t_ref| / t_ref.
"""

import pytest
import torch

import cachekit
from cachekit import BlockDriftConfig, ConfigError
from cachekit.methods.block_drift import block_drift_compute, relative_drift, split_ranges
from toy import Toy

KW = dict(warmup=1, final_steps=1)


def test_rule():
    rule = lambda **k: block_drift_compute(**{**dict(step=3, num_steps=9, drift=0.1, threshold=0.2,  # noqa: E731
                                                      consecutive=0, max_reuse=0, warmup=1, final_steps=1), **k})
    assert rule() is False
    assert rule(drift=0.2) is True            # not strictly under the threshold
    assert rule(drift=None) is True           # no reference yet
    assert rule(threshold=0.0, drift=0.0) is True  # threshold 0 never reuses
    assert rule(step=0) is True and rule(step=8) is True
    assert rule(consecutive=2, max_reuse=2) is True and rule(consecutive=1, max_reuse=2) is False
    assert relative_drift(1.0, 4.0) == 0.25 and relative_drift(0.0, 0.0) == 0.0
    assert relative_drift(1.0, 0.0) == float("inf")


def test_split_ranges():
    assert split_ranges(8, 1, 0, 1) == ((0, 1), (1, 8))
    assert split_ranges(8, 2, 1, 2) == ((0, 2), (2, 5), (5, 7), (7, 8))
    with pytest.raises(ConfigError, match="need more than the model's 3 blocks"):
        split_ranges(3, 2, 1, 1)


def run(cfg, ts=range(8, -1, -1), n=4, moving=False):
    """``moving``: the input is t too (EasyCache's predictor needs a moving input)."""
    m = Toy(n)
    cachekit.apply(m, cfg)
    cachekit.reset(m, num_steps=len(ts))
    with torch.no_grad():
        out = [float(m(torch.full((2, 3), float(t) if moving else 0.0), torch.tensor(float(t)))[0, 0]) for t in ts]
    return out, cachekit.stats(m)


def test_plan_by_hand():
    out, s = run(BlockDriftConfig(fn=1, threshold=0.3, **KW))
    # drifts: t=7 vs 8: .125 R; 6 vs 8: .25 R; 5 vs 8: .375 C; 4 vs 5: .2 R; 3 vs 5: .4 C; 2 vs 3: .33 C; 1: C; 0: final
    assert s.plan[:, 1].tolist() == [True, False, False, True, False, True, True, True, True]
    assert s.plan[:, 0].all()  # the probe always runs
    # a reused step: x + t (probe) + 9 t_ref (blocks 1-3 at the reference step)
    assert out == [80, 7 + 72, 6 + 72, 50, 4 + 45, 30, 20, 10, 0]


def test_max_reuse_caps_a_run_and_per_range_thresholds():
    _, s = run(BlockDriftConfig(fn=1, threshold=0.3, max_reuse=1, **KW))
    assert s.plan[:, 1].tolist() == [True, False, True, False, True, False, True, True, True]
    _, s = run(BlockDriftConfig(fn=1, thresholds=(0.3, 0.0), **KW))
    assert s.plan[:, 1].tolist() == [True, False, False, True, False, True, True, True, True]
    assert s.plan[:, 3].all()  # ranges (1, 3) and (3, 4); threshold 0: the second always recomputed
    _, s = run(BlockDriftConfig(fn=1, bn=1, threshold=0.3, **KW))
    assert s.plan[:, 3].all() and s.plan[:, 1].tolist() == s.plan[:, 2].tolist()


def test_predict_skips_the_probe_and_tiny_predict_changes_nothing():
    # predicted change per step: k |dx| / |v| = 11 * 1 / (11 t) = 1 / t, accumulated
    base, s0 = run(BlockDriftConfig(fn=1, threshold=0.3, warmup=2, final_steps=1), moving=True)
    same, s1 = run(BlockDriftConfig(fn=1, threshold=0.3, warmup=2, final_steps=1, predict=1e-9), moving=True)
    assert same == base and (s1.plan == s0.plan).all()
    _, s2 = run(BlockDriftConfig(fn=1, threshold=0.3, warmup=2, final_steps=1, predict=10.0), moving=True)
    assert not s2.plan[:, 0].all() and s2.computed_fraction < s0.computed_fraction


def test_config_checks_and_recipe_round_trip():
    with pytest.raises(ConfigError, match="thresholds must be a list of numbers >= 0"):
        BlockDriftConfig(thresholds=(0.1, -1))
    cfg = BlockDriftConfig(fn=2, thresholds=[0.05, 0.1])
    assert cfg.thresholds == (0.05, 0.1) and cfg.range_thresholds == (0.05, 0.1)
    assert BlockDriftConfig.from_settings(cfg.to_dict()["settings"]) == cfg
    m = Toy(2)
    with pytest.raises(ConfigError, match="need more than the model's 2 blocks"):
        cachekit.apply(m, BlockDriftConfig(fn=1, bn=1))
    assert "_cachekit_session" not in vars(m)
