"""Meta-World pieces of the policy benchmark: seeded scenes, batched stepping, expert demos, one
bench row on a tiny untrained policy. Skipped without metaworld (``pip install metaworld packaging``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld", reason="Meta-World tests need `pip install metaworld packaging` (the [metaworld] extra)")

import cachekit  # noqa: E402
from cachekit import FixedIntervalConfig  # noqa: E402
from cachekit.evaluation.tasks import metaworld as mw  # noqa: E402
from cachekit.reference.policy import DiffusionPolicy, PolicyConfig, load_policy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval"))
import bench_metaworld  # noqa: E402
import report_policy_metaworld  # noqa: E402

TASK = "push-v3"


def tiny_policy(steps: int = 10) -> DiffusionPolicy:
    torch.manual_seed(0)
    cfg = PolicyConfig(obs_dim=39, cond_dim=39, obs_transform="identity", action_dim=4, n_emb=16, n_layer=2, n_head=2,
                       num_train_timesteps=steps, num_inference_steps=steps,
                       extra={"task_name": mw.TASK_PREFIX + TASK})
    return DiffusionPolicy(cfg).eval()


def test_task_names_and_errors():
    assert mw.task_spec("metaworld:push-v3").name == "push-v3"
    assert mw.task_spec("pick-place-v3").expert_class == "SawyerPickPlaceV3Policy"
    with pytest.raises(ValueError, match="v3 task name"):
        mw.task_spec("metaworld:push")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        mw.make_env("no-such-task-v3")


def test_reset_is_seeded_and_scenes_differ():
    a, b = mw.VectorEnv(TASK, 3), mw.VectorEnv(TASK, 2)
    o1 = a.reset([5, 6, 7])
    o2 = a.reset([5, 6, 7])          # the same env objects, reset again
    o3 = b.reset([6, 5])             # other env objects, other order
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(o1[[1, 0]], o3)
    assert o1.shape == (3, 39)
    assert not np.allclose(o1[0, 4:7], o1[1, 4:7])    # the puck is elsewhere in another scene
    assert not np.allclose(o1[0, 36:], o1[1, 36:])    # and so is the goal


def test_batched_step_matches_single_envs_and_stops_done_episodes():
    v = mw.VectorEnv(mw.MetaWorldTask(TASK, max_steps=3), 2)
    obs = v.reset([1, 2])
    acts = np.array([[0.5, 0.0, -0.2, 1.0], [-0.3, 0.4, 0.0, -1.0]])
    for _ in range(3):
        obs, succ, done = v.step(acts, obs)
    assert done.all() and v.steps.tolist() == [3, 3]
    frozen = obs.copy()
    obs, _, _ = v.step(acts, obs)                     # done episodes are not stepped again
    np.testing.assert_array_equal(obs, frozen)
    single = mw.make_env(TASK)
    single.seed(2)
    o, _ = single.reset()
    for _ in range(3):
        o = single.step(acts[1])[0]
    np.testing.assert_array_equal(o, frozen[1])


def test_expert_demos_shapes_and_success():
    demos, stats = mw.collect_demos(TASK, 2, seed=100_000, log=lambda s: None)
    assert stats["episodes"] == 2 and stats["kept_demos"] == len(demos) == 2   # the push expert solves these
    for o, a in demos:
        assert o.shape[1] == 39 and a.shape[1] == 4 and len(o) == len(a) and o.dtype == np.float32
        assert np.abs(a).max() <= 1.0
    again, _ = mw.collect_demos(TASK, 2, seed=100_000, log=lambda s: None)
    np.testing.assert_array_equal(demos[0][1], again[0][1])


def test_per_episode_noise_does_not_depend_on_the_batch():
    p = tiny_policy()
    obs = torch.randn(3, 2, 39)
    full = p.predict_action(obs, generator=mw.episode_generators([0, 1, 2]))
    part = p.predict_action(obs[1:], generator=mw.episode_generators([1, 2]))
    torch.testing.assert_close(full[1:], part, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="generators for a batch"):
        p.predict_action(obs, generator=mw.episode_generators([0]) * 2)


def test_bench_row_on_a_tiny_policy():
    p = tiny_policy()
    envs = mw.VectorEnv(TASK, 2)
    base = bench_metaworld.closed_loop(p, TASK, 2, 0, envs)
    row = bench_metaworld.closed_loop(p, TASK, 2, 0, envs, FixedIntervalConfig(interval=2, warmup=1, final_steps=1))
    assert base["episodes"] == row["episodes"] == 2
    assert base["computed_fraction"] == 1.0
    assert row["computed_fraction"] == pytest.approx(0.6)      # steps 0, 2, 4, 6, 8 and the last of 10
    assert base["predict_calls"] == 25 and base["mean_episode_length"] == 200   # untrained: never succeeds
    # the row left nothing applied behind it
    with pytest.raises(cachekit.NotAppliedError):
        cachekit.remove(p)


def test_bench_main_writes_md_csv_json(tmp_path):
    p = tiny_policy(steps=6)
    p.save(tmp_path / "pol", extra=p.cfg.extra)
    assert load_policy(tmp_path / "pol").cfg.extra["task_name"] == "metaworld:push-v3"
    out = tmp_path / "res" / TASK
    bench_metaworld.main(["--env", "metaworld:push-v3", "--policy", str(tmp_path / "pol"), "--episodes", "2",
                          "--calib-episodes", "1", "--calib-runs", "2", "--calib-batch", "2", "--fractions", "0.5",
                          "--lemica-fractions", "", "--repeats", "1", "--timing-batch", "3", "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert "Same-rounds prediction speedup at batch 3" in text
    assert "uncached" in text and "BAC calibrated M=3" in text and "ERTACache" in text and "EasyCache" in text
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 7          # header, uncached, 7 methods at one fraction
    pytest.importorskip("matplotlib")
    report_policy_metaworld.main([str(out.parent)])
    summary = (out.parent / "summary.md").read_text()
    assert "| push-v3 | 0.000 [0.000, 0.658] |" in summary       # 0 of 2 episodes: Wilson upper bound 0.658
    assert "batch-3 speedup" in summary and "rows timed at batch" not in summary   # every row timed at batch 3
    assert (out.parent / "success_vs_speedup.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="overlap"):
        bench_metaworld.main(["--env", "metaworld:push-v3", "--policy", str(tmp_path / "pol"), "--episodes", "2",
                              "--calib-seed", "1", "--out", str(out)])
