"""``cachekit eval --model policy``: the shipped diffusion policy, uncached vs cached, closed loop.

Speed is the wall time of one action prediction (batch 1, the control-loop setting), alternating
uncached / cached calls, median of repeats; control rate = predictions per second. Quality is the
closed-loop success rate and score over seeded episodes (same seeds for both), with 95% intervals,
plus how far the cached actions land from the uncached ones for the same observations and noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import api
from ..config import CacheConfig
from . import report as _report
from .runner import applied, environment
from .timing import Pass, alternate


def load_reference_policy() -> Any:
    from ..reference.policy import load_policy

    return load_policy()


def rollout_observations(policy: Any, episodes: int, seed: int) -> list[torch.Tensor]:
    """Observation histories met by the uncached policy in closed loop (one per prediction):
    calibration inputs that cover whole trajectories, not only initial states."""
    from .tasks import pointmass as ep

    seen: list[torch.Tensor] = []
    original = policy.predict_action

    def recording(obs_history: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.as_tensor(obs_history).clone())
        return original(obs_history, *args, **kwargs)

    policy.predict_action = recording   # instance attribute, removed below
    try:
        ep.evaluate(policy, episodes=episodes, seed=seed)
    finally:
        del policy.predict_action
    return seen


def evaluate_policy(config: CacheConfig, *, episodes: int = 50, seed: int = 0, repeats: int = 5,
                    out_dir: str | Path | None = None, command: str | None = None, policy: Any = None,
                    baseline: dict | None = None) -> dict:
    """Uncached vs ``config`` on the shipped policy (or ``policy``). ``baseline``: the uncached
    closed-loop result for the same episodes and seed (``pointmass.evaluate``), when a caller
    compares several configs and has it already; the closed loop is deterministic, so it is the
    same numbers as running it again."""
    from .tasks import pointmass as ep

    policy = policy or load_reference_policy()
    obs1 = rollout_observations(policy, episodes=1, seed=10_000)[0][:1]   # a real state, batch 1

    def predict(_round: int) -> torch.Tensor:
        return policy.predict_action(obs1, generator=torch.Generator().manual_seed(0))

    timed_unc, timed_cac = alternate([Pass(predict), Pass(predict, around=lambda: applied(policy, config))], repeats)
    unc, cac, t_unc, t_cac = timed_unc.median, timed_cac.median, timed_unc.times, timed_cac.times

    base = baseline if baseline is not None else ep.evaluate(policy, episodes=episodes, seed=seed)
    counts = [0, 0]

    def tally(p: Any) -> None:   # called before each prediction: the previous one is complete
        s = api.stats(p)
        counts[0] += int(s.plan.sum())
        counts[1] += s.plan.size

    with applied(policy, config):
        cached = ep.evaluate(policy, episodes=episodes, seed=seed, before_predict=tally)
        tally(policy)
        obs = torch.cat(rollout_observations(policy, episodes=2, seed=20_000)[:8])
        a_cac = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))
    a_unc = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))
    fraction = counts[0] / counts[1] if counts[1] else 1.0
    keep = ("episodes", "success_rate", "success_rate_ci95", "mean_max_score", "max_score_std", "mean_max_score_ci95")
    rep = {
        "schema": _report.SCHEMA_VERSION, "model": "policy", "kind": "policy", "config": config.to_dict(),
        "inputs": [f"episode seeds {seed}..{seed + episodes - 1}"], "seeds": [seed], "steps": policy.cfg.num_inference_steps,
        "speed": {"uncached_s": unc, "cached_s": cac, "speedup": unc / cac, "computed_fraction": fraction,
                  "ideal_speedup": 1 / fraction, "repeats": repeats, "times_s": {"uncached": t_unc, "cached": t_cac},
                  "control_rate_hz": {"uncached": 1 / unc, "cached": 1 / cac},
                  "actions_per_prediction": policy.cfg.n_action_steps},
        "quality": {"closed_loop": {"uncached": {k: base[k] for k in keep if k in base},
                                    "cached": {k: cached[k] for k in keep if k in cached}},
                    "action_mean_abs_diff": float((a_cac - a_unc).abs().mean()),
                    "psnr_mean": None, "ssim_mean": None, "lpips": None, "lpips_skipped": "not an image model"},
        "per_step_error": [], "environment": environment(command), "files": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rep["files"] = {"json": "report.json", "markdown": "report.md"}
        (out / "report.json").write_text(json.dumps(_report.plain(rep), indent=2))
        (out / "report.md").write_text(markdown(rep))
    return rep


def markdown(rep: dict) -> str:
    sp, cl = rep["speed"], rep["quality"]["closed_loop"]

    def ci(d: dict, key: str) -> str:
        lo, hi = d.get(key, (None, None))
        return f"[{lo:.2f}, {hi:.2f}]" if lo is not None else ""

    u, c = cl["uncached"], cl["cached"]
    return "\n".join([
        "# cachekit eval: policy", "", f"Config: `{rep['config']}`  ", f"Device: {rep['environment']['device']}  ",
        f"Command: `{rep['environment']['command']}`", "",
        "| | uncached | cached |", "|---|---|---|",
        f"| action prediction, batch 1 (median of {sp['repeats']}) | {sp['uncached_s'] * 1e3:.0f} ms | {sp['cached_s'] * 1e3:.0f} ms |",
        f"| speedup | | {sp['speedup']:.2f}x |",
        f"| control rate (predictions/s) | {sp['control_rate_hz']['uncached']:.1f} Hz | {sp['control_rate_hz']['cached']:.1f} Hz |",
        f"| computed fraction (ideal speedup) | 1.00 | {sp['computed_fraction']:.3f} ({sp['ideal_speedup']:.2f}x) |",
        f"| success rate, {u['episodes']} episodes (95% CI) | {u['success_rate']:.2f} {ci(u, 'success_rate_ci95')} | "
        f"{c['success_rate']:.2f} {ci(c, 'success_rate_ci95')} |",
        f"| score mean +- std | {u['mean_max_score']:.3f} +- {u['max_score_std']:.3f} | "
        f"{c['mean_max_score']:.3f} +- {c['max_score_std']:.3f} |",
        f"| mean abs action difference vs uncached | 0 | {rep['quality']['action_mean_abs_diff']:.4f} |",
    ]) + "\n"
