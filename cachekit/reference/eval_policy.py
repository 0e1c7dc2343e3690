"""Closed-loop evaluation of the reference PushT diffusion policy (gym-pusht, state observations).

    python -m cachekit.reference.eval_policy --episodes 50 --json eval.json

From Python, with anything done to ``policy.model`` beforehand (e.g. ``cachekit.apply(policy.model, ...)``):

    from cachekit.reference.eval_policy import evaluate
    res = evaluate(policy, episodes=50, seed=0, before_predict=lambda p: cachekit.reset(p.model))

Episodes are run in lock-step batches: one ``predict_action`` call serves every still-running episode of
the batch (same observation history of 2 steps, the first observation repeated at reset, as in Diffusion
Policy). Each episode lasts at most 300 env steps; success = goal coverage > 0.95 (the env terminates);
score = the episode's maximum coverage. Results depend on ``seed`` and on ``batch_size`` (the sampling
noise of a batch comes from one seeded generator).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

__all__ = ["make_env", "evaluate", "evaluate_baseline", "summarize", "time_predict_action", "main"]

MAX_STEPS = 300
SUCCESS_THRESHOLD = 0.95


def make_env():
    """A headless gym-pusht env with state observations (the unwrapped ``PushTEnv``: episodes are capped
    by this module, not by a TimeLimit wrapper)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import gym_pusht  # noqa: F401  (registers the env)

    return gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True).unwrapped


def summarize(successes, scores) -> dict:
    """Success rate (Wilson 95% interval) and mean score (std, normal-approximation 95% interval)."""
    s = np.asarray(successes, dtype=float)
    c = np.asarray(scores, dtype=float)
    n = len(s)
    p = float(s.mean()) if n else float("nan")
    z = 1.96
    if n:
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        wil = [max(0.0, mid - half), min(1.0, mid + half)]
    else:
        wil = [float("nan")] * 2
    m = float(c.mean()) if n else float("nan")
    sd = float(c.std(ddof=1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n else float("nan")
    return {
        "episodes": n,
        "success_rate": p,
        "success_rate_ci95": wil,
        "success_rate_std": float(s.std(ddof=1)) if n > 1 else 0.0,
        "mean_max_coverage": m,
        "max_coverage_std": sd,
        "mean_max_coverage_ci95": [m - z * se, m + z * se],
        "per_episode_max_coverage": [round(float(x), 4) for x in c],
        "per_episode_success": [bool(x) for x in s],
    }


def evaluate(policy, episodes: int = 50, seed: int = 0, max_steps: int = MAX_STEPS,
             batch_size: int | None = None, num_inference_steps: int | None = None,
             before_predict=None, progress: bool = False) -> dict:
    """Run ``episodes`` closed-loop PushT episodes with env seeds ``seed .. seed+episodes-1``.

    ``policy`` is a :class:`~cachekit.reference.policy.DiffusionPolicy` (whatever was done to its
    ``.model`` is kept). ``before_predict(policy)``, if given, is called before every ``predict_action``
    call (e.g. to reset a cache). Returns :func:`summarize`'s dict plus timing fields.
    """
    cfg = policy.cfg
    batch_size = episodes if batch_size is None else int(batch_size)
    successes, scores, lengths = [], [], []
    n_calls, t_pred = 0, 0.0
    t0 = time.perf_counter()
    for b0 in range(0, episodes, batch_size):
        seeds = list(range(seed + b0, seed + min(episodes, b0 + batch_size)))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b0)
        envs = [make_env() for _ in seeds]
        obs = [e.reset(seed=s)[0] for e, s in zip(envs, seeds)]
        hist = [[o] * cfg.n_obs_steps for o in obs]
        done = [False] * len(envs)
        succ = [False] * len(envs)
        maxcov = [float(e._get_coverage()) for e in envs]
        steps = [0] * len(envs)
        while not all(done):
            idx = [i for i, d in enumerate(done) if not d]
            oh = torch.as_tensor(np.stack([np.stack(hist[i][-cfg.n_obs_steps:]) for i in idx]), dtype=torch.float32)
            if before_predict is not None:
                before_predict(policy)
            tp = time.perf_counter()
            acts = policy.predict_action(oh, generator=gen, num_inference_steps=num_inference_steps).cpu().numpy()
            t_pred += time.perf_counter() - tp
            n_calls += 1
            for j, i in enumerate(idx):
                for a in acts[j]:
                    o, _, term, _, info = envs[i].step(a.astype(np.float64))
                    hist[i].append(o)
                    steps[i] += 1
                    maxcov[i] = max(maxcov[i], float(info["coverage"]))
                    if term:
                        succ[i] = True
                    if term or steps[i] >= max_steps:
                        done[i] = True
                        break
                hist[i] = hist[i][-cfg.n_obs_steps:]
            if progress:
                print(f"  batch {b0 // batch_size}: {sum(done)}/{len(done)} done, "
                      f"success so far {sum(succ)}", flush=True)
        for e in envs:
            e.close()
        successes += succ
        scores += maxcov
        lengths += steps
    out = summarize(successes, scores)
    out.update({
        "policy": "diffusion_policy", "seed": seed, "max_steps": max_steps, "batch_size": batch_size,
        "num_inference_steps": num_inference_steps or cfg.num_inference_steps,
        "mean_episode_length": float(np.mean(lengths)),
        "predict_action_calls": n_calls, "predict_action_total_s": t_pred,
        "wall_s": time.perf_counter() - t0,
    })
    return out


def evaluate_baseline(kind: str, episodes: int = 50, seed: int = 0, max_steps: int = MAX_STEPS) -> dict:
    """``kind="random"``: a uniformly random target in [0, 512]^2 every step (seeded);
    ``kind="noop"``: the target is the agent's current position (it stays put)."""
    rng = np.random.default_rng(seed)
    successes, scores = [], []
    for s in range(seed, seed + episodes):
        env = make_env()
        obs, _ = env.reset(seed=s)
        best, ok = float(env._get_coverage()), False
        for _ in range(max_steps):
            if kind == "random":
                a = rng.uniform(0, 512, size=2)
            elif kind == "noop":
                a = np.asarray(obs[:2], dtype=np.float64)
            else:
                raise ValueError(kind)
            obs, _, term, _, info = env.step(a)
            best = max(best, float(info["coverage"]))
            if term:
                ok = True
                break
        env.close()
        successes.append(ok)
        scores.append(best)
    out = summarize(successes, scores)
    out.update({"policy": kind, "seed": seed, "max_steps": max_steps})
    return out


def time_predict_action(policy, repeats: int = 3, batch: int = 1, num_inference_steps: int | None = None) -> dict:
    """Wall time of one ``predict_action`` call (median of ``repeats``, after one warm-up)."""
    cfg = policy.cfg
    env = make_env()
    o, _ = env.reset(seed=0)
    oh = torch.as_tensor(np.stack([o, o])[None].repeat(batch, 0), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    policy.predict_action(oh, generator=g, num_inference_steps=num_inference_steps)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        policy.predict_action(oh, generator=g, num_inference_steps=num_inference_steps)
        ts.append(time.perf_counter() - t)
    return {"batch": batch, "num_inference_steps": num_inference_steps or cfg.num_inference_steps,
            "median_s": float(np.median(ts)), "all_s": ts, "threads": torch.get_num_threads()}


def _load_hook(spec: str):
    import importlib

    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=None, help="policy folder (default: the shipped assets/pusht_policy)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="env seeds are seed .. seed+episodes-1")
    ap.add_argument("--max-steps", type=int, default=MAX_STEPS)
    ap.add_argument("--batch-size", type=int, default=None, help="episodes per lock-step batch (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's 100)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-baselines", action="store_true", help="skip the random and no-op policies")
    ap.add_argument("--hook", default=None,
                    help="'module:function' called once with the loaded policy before evaluation "
                         "(e.g. to apply caching to policy.model); if it returns a callable, that is "
                         "called before every predict_action")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from cachekit.reference.policy import load_policy

    policy = load_policy(args.policy)
    before = None
    if args.hook:
        r = _load_hook(args.hook)(policy)
        before = r if callable(r) else None
    res = {"command": "python -m cachekit.reference.eval_policy " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    res["predict_action_time"] = time_predict_action(policy, num_inference_steps=args.steps)
    print(f"predict_action (batch 1, {res['predict_action_time']['num_inference_steps']} steps): "
          f"{res['predict_action_time']['median_s']:.3f} s", flush=True)
    res["diffusion_policy"] = evaluate(policy, args.episodes, args.seed, args.max_steps, args.batch_size,
                                       args.steps, before_predict=before, progress=True)
    if not args.no_baselines:
        res["random"] = evaluate_baseline("random", args.episodes, args.seed, args.max_steps)
        res["noop"] = evaluate_baseline("noop", args.episodes, args.seed, args.max_steps)
    for k in ("diffusion_policy", "random", "noop"):
        if k in res:
            r = res[k]
            print(f"{k:17s} success {r['success_rate']:.3f} (95% CI {r['success_rate_ci95'][0]:.3f}-"
                  f"{r['success_rate_ci95'][1]:.3f})  mean max coverage {r['mean_max_coverage']:.3f} "
                  f"+- {r['max_coverage_std']:.3f} std (95% CI {r['mean_max_coverage_ci95'][0]:.3f}-"
                  f"{r['mean_max_coverage_ci95'][1]:.3f})  n={r['episodes']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
