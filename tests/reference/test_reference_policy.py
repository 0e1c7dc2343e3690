"""The shipped reference diffusion policy (point-mass task): loads offline, predicts deterministically,
fails clearly on a missing or corrupted file."""

import shutil

import pytest
import torch
from torch import nn

from cachekit.reference.policy import (
    CONFIG_NAME, WEIGHTS_NAME, DiffusionPolicy, PolicyConfig, PolicyLoadError, TransformerForDiffusion,
    default_policy_dir, load_policy,
)

SHIPPED = default_policy_dir()
needs_asset = pytest.mark.skipif(not (SHIPPED / WEIGHTS_NAME).is_file(), reason="policy weights not shipped")


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def _obs(batch=2, dim=5):
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 2, dim, generator=g)


@needs_asset
def test_shipped_policy_loads_in_eval_mode(policy):
    assert isinstance(policy, DiffusionPolicy)
    assert isinstance(policy.model, TransformerForDiffusion)
    assert not policy.training and not policy.model.training
    assert policy.cfg.num_inference_steps == 100  # the default loop is the full 100-step DDPM
    assert policy.scheduler.config.num_train_timesteps == 100
    assert policy.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert policy.scheduler.config.prediction_type == "epsilon"


@needs_asset
def test_predict_action_shape_and_determinism(policy):
    obs = _obs(2, policy.cfg.obs_dim)
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=4)
    b = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=4)
    c = policy.predict_action(obs, generator=torch.Generator().manual_seed(1), num_inference_steps=4)
    assert a.shape == (2, 8, 2) == (2, policy.cfg.n_action_steps, policy.cfg.action_dim)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@needs_asset
def test_model_forward_signature(policy):
    cfg = policy.cfg
    sample = torch.randn(3, cfg.horizon, cfg.action_dim)
    cond = torch.randn(3, cfg.n_obs_steps, cfg.cond_dim)
    with torch.no_grad():
        e1 = policy.model(sample, torch.tensor([7, 7, 7]), cond)
        e2 = policy.model(sample, torch.tensor(7), cond)
    assert e1.shape == sample.shape
    torch.testing.assert_close(e1, e2)


def test_model_holds_exactly_one_modulelist():
    model = TransformerForDiffusion(PolicyConfig(n_emb=32))
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    assert len(lists) == 1
    assert lists[0] is model.decoder.layers
    assert len(lists[0]) == 8
    assert all(isinstance(layer, nn.TransformerDecoderLayer) and layer.norm_first for layer in lists[0])


def test_missing_weight_file_names_the_file(tmp_path):
    with pytest.raises(PolicyLoadError, match=str(tmp_path / WEIGHTS_NAME).replace("\\", "\\\\")):
        load_policy(tmp_path)


@needs_asset
def test_corrupted_weight_file_names_the_file(tmp_path):
    shutil.copy(SHIPPED / CONFIG_NAME, tmp_path / CONFIG_NAME)
    data = (SHIPPED / WEIGHTS_NAME).read_bytes()
    for i, payload in enumerate([b"not a safetensors file", data[: len(data) // 2]]):
        d = tmp_path / f"c{i}"
        d.mkdir()
        shutil.copy(SHIPPED / CONFIG_NAME, d / CONFIG_NAME)
        (d / WEIGHTS_NAME).write_bytes(payload)
        with pytest.raises(PolicyLoadError, match="corrupted") as ei:
            load_policy(d)
        assert str(d / WEIGHTS_NAME) in str(ei.value)


def test_save_load_roundtrip(tmp_path):
    cfg = PolicyConfig(n_emb=32)
    p = DiffusionPolicy(cfg).eval()
    p.save(tmp_path)
    q = load_policy(tmp_path)
    obs = _obs(1)
    a = p.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    b = q.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    assert torch.equal(a, b)


@needs_asset
def test_closed_loop_smoke(policy):
    from cachekit.evaluation.tasks.pointmass import evaluate, evaluate_baseline, policy_task

    if policy_task(policy) == "pusht":
        pytest.importorskip("gym_pusht")
    calls = []
    res = evaluate(policy, episodes=2, seed=0, max_steps=16, num_inference_steps=2,
                   before_predict=lambda p: calls.append(1))
    assert res["episodes"] == 2 and len(calls) == res["predict_action_calls"] == 2
    assert 0.0 <= res["mean_max_score"] <= 1.0
    noop = evaluate_baseline("noop", episodes=2, seed=0, max_steps=5, task=policy_task(policy))
    assert noop["episodes"] == 2


def test_pusht_env_and_expert_smoke():
    pytest.importorskip("gym_pusht")
    from cachekit.evaluation.tasks.pointmass import evaluate_baseline
    from train_policy import PushTExpert
    from cachekit.evaluation.tasks.pointmass import make_env
    import numpy as np

    res = evaluate_baseline("random", episodes=1, seed=0, max_steps=3, task="pusht")
    assert res["episodes"] == 1 and 0.0 <= res["mean_max_score"] <= 1.0
    env = make_env("pusht")
    env.reset(seed=0)
    a = PushTExpert(env, np.random.default_rng(0)).act()
    assert a.shape == (2,)
    env.close()
