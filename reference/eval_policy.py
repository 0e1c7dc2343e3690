"""Closed-loop evaluation of the reference diffusion policy (with timing and baselines).

    python reference/eval_policy.py --episodes 50 --json eval.json

The task (``pointmass``, the shipped policy, or ``pusht``, which needs ``pip install gym-pusht``) is
read from the policy's config. The task environments and the evaluation loop are library code in
:mod:`cachekit.evaluation.tasks.pointmass`; from Python, with anything done to ``policy.model`` beforehand:

    from cachekit.evaluation.tasks.pointmass import evaluate
    res = evaluate(policy, episodes=50, seed=0, before_predict=lambda p: cachekit.reset(p.model))

This script adds the wall time of one ``predict_action`` call, the random and no-op baselines on the
same episode seeds, and ``--hook`` to apply something (e.g. caching) to the loaded policy first.
Results depend on ``seed`` and on ``--batch-size`` (the sampling noise of a batch comes from one
seeded generator).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cachekit.evaluation.tasks.pointmass import evaluate, evaluate_baseline, make_task_env, policy_task


def time_predict_action(policy, repeats: int = 3, batch: int = 1, num_inference_steps: int | None = None) -> dict:
    """Wall time of one ``predict_action`` call (median of ``repeats``, after one warm-up)."""
    cfg = policy.cfg
    env = make_task_env(policy_task(policy))
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
    ap.add_argument("--policy", default=None, help="policy folder (default: the shipped assets/pointmass_policy)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="env seeds are seed .. seed+episodes-1")
    ap.add_argument("--max-steps", type=int, default=None, help="default: the task's (pointmass 60, pusht 300)")
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
    res = {"command": "python reference/eval_policy.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    res["predict_action_time"] = time_predict_action(policy, num_inference_steps=args.steps)
    print(f"predict_action (batch 1, {res['predict_action_time']['num_inference_steps']} steps): "
          f"{res['predict_action_time']['median_s']:.3f} s", flush=True)
    res["diffusion_policy"] = evaluate(policy, args.episodes, args.seed, args.max_steps, args.batch_size,
                                       args.steps, before_predict=before, progress=True)
    if not args.no_baselines:
        task = policy_task(policy)
        res["random"] = evaluate_baseline("random", args.episodes, args.seed, args.max_steps, task)
        res["noop"] = evaluate_baseline("noop", args.episodes, args.seed, args.max_steps, task)
    for k in ("diffusion_policy", "random", "noop"):
        if k in res:
            r = res[k]
            print(f"{k:17s} success {r['success_rate']:.3f} (95% CI {r['success_rate_ci95'][0]:.3f}-"
                  f"{r['success_rate_ci95'][1]:.3f})  mean max score {r['mean_max_score']:.3f} "
                  f"+- {r['max_score_std']:.3f} std (95% CI {r['mean_max_score_ci95'][0]:.3f}-"
                  f"{r['mean_max_score_ci95'][1]:.3f})  n={r['episodes']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
