"""BAC vs uniform every-N vs EasyCache on the shipped diffusion policy (100 DDPM steps), same run.

    python eval/bench_policy.py [--episodes 50] [--updates 5,7,10,20] [--metrics cosine,l1] [--out bench_policy.md]
    python eval/bench_policy.py --env metaworld:push-v3 --policy reference_weights/metaworld_push_policy ...   # eval/bench_metaworld.py

BAC plans are calibrated on observation histories from closed-loop rollouts with episode seeds
1000.. (never the evaluation seeds 0..episodes-1). Every config is scored on the same episode seeds
against the same uncached policy: closed-loop success (Wilson 95% interval), mean max score, the
wall time of one batch-1 action prediction (median of alternating repeats) and control rate.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from cachekit import BACConfig, EasyCacheConfig, FixedIntervalConfig
import cachekit
from cachekit.planning import plan_bac
from cachekit.evaluation.policy import evaluate_policy, load_reference_policy, rollout_observations


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default="pointmass")
    env = pre.parse_known_args()[0].env
    if env.startswith("metaworld:"):   # the Meta-World benchmark has its own rows and options
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_metaworld import main as bench_metaworld

        return bench_metaworld(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="pointmass", choices=["pointmass"],
                    help="pointmass (the shipped policy) or metaworld:TASK (see eval/bench_metaworld.py --help)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--updates", default="5,7,10,20")
    ap.add_argument("--top-n", type=int, default=4)
    ap.add_argument("--calib-episodes", type=int, default=10)
    ap.add_argument("--metrics", default="cosine", help="similarity metric(s) for BAC plans, e.g. cosine,l1")
    ap.add_argument("--uniform-plans", default="10",
                    help="also run BACConfig with a uniform plan (every N-th step + the last, every unit): "
                         "the unit-level runtime without the calibrated schedule")
    ap.add_argument("--no-baselines", action="store_true", help="skip the every-N and EasyCache rows")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench_policy.md")
    args = ap.parse_args()
    torch.set_flush_denormal(True)   # denormals slow CPU matmuls ~5x; same setting for every config
    command = "python eval/bench_policy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    policy = load_reference_policy()

    t0 = time.time()
    obs = torch.cat(rollout_observations(policy, episodes=args.calib_episodes, seed=1000))
    batches = [obs[i:i + 16] for i in range(0, len(obs), 16)]
    rec = cachekit.record(policy, [(lambda b=b, k=k: policy.predict_action(b, generator=torch.Generator().manual_seed(k)))
                                   for k, b in enumerate(batches)])
    print(f"recorded {len(batches)} calibration runs ({len(obs)} observation histories) in {time.time() - t0:.0f} s")

    configs: list[tuple[str, object]] = [] if args.no_baselines else [
        ("uniform every 3rd step", FixedIntervalConfig(interval=3, warmup=1, final_steps=1)),
        ("uniform every 5th step", FixedIntervalConfig(interval=5, warmup=1, final_steps=1)),
        ("uniform every 10th step", FixedIntervalConfig(interval=10, warmup=1, final_steps=1)),
        ("EasyCache tau=0.1, R=5", EasyCacheConfig(threshold=0.1, warmup=5)),
        ("EasyCache tau=0.3, R=5", EasyCacheConfig(threshold=0.3, warmup=5)),
    ]
    units = list(rec.columns)
    for n in (int(v) for v in args.uniform_plans.split(",") if v.strip()):
        plan = {u: sorted(set(range(0, rec.num_steps, n)) | {rec.num_steps - 1}) for u in units}
        configs.append((f"BAC runtime, uniform plan every {n}th step", BACConfig(plan=plan, num_steps=rec.num_steps,
                                                                              model=rec.fingerprint)))
    for metric in args.metrics.split(","):
        for m in (int(v) for v in args.updates.split(",")):
            cal = plan_bac(rec, updates=m, top_n=args.top_n, metric=metric)
            configs.append((f"BAC M={m}, top-{args.top_n} bubbling, {metric}", cal.config))

    from cachekit.evaluation.tasks import pointmass as ep

    base = ep.evaluate(policy, episodes=args.episodes, seed=0)   # deterministic: once for every config
    rows = []
    for label, cfg in configs:
        rep = evaluate_policy(cfg, episodes=args.episodes, seed=0, repeats=args.repeats, policy=policy,
                              baseline=base, command=command)
        sp, cl = rep["speed"], rep["quality"]["closed_loop"]
        rows.append({"config": label, **{k: sp[k] for k in ("speedup", "computed_fraction", "uncached_s", "cached_s")},
                     "hz": sp["control_rate_hz"], "uncached": cl["uncached"], "cached": cl["cached"],
                     "action_diff": rep["quality"]["action_mean_abs_diff"]})
        print(f"{label}: speedup {sp['speedup']:.2f}x, fraction {sp['computed_fraction']:.3f}, success "
              f"{cl['cached']['success_rate']:.2f} (uncached {cl['uncached']['success_rate']:.2f})", flush=True)

    u = rows[0]["uncached"]
    lines = [f"Policy reference model (`assets/pointmass_policy`, 100 DDPM steps), {args.episodes} episodes "
             f"(seeds 0..{args.episodes - 1}); `{command}`", "",
             f"Uncached: success {u['success_rate']:.2f} [{u['success_rate_ci95'][0]:.2f}, {u['success_rate_ci95'][1]:.2f}], "
             f"score {u['mean_max_score']:.3f} +- {u['max_score_std']:.3f}", "",
             "| config | speedup (batch-1 prediction) | control rate | computed fraction | success [95% CI] | score +- std | mean abs action diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cached"]
        lines.append(f"| {r['config']} | {r['speedup']:.2f}x | {r['hz']['cached']:.1f} Hz (uncached {r['hz']['uncached']:.1f}) | "
                     f"{r['computed_fraction']:.3f} | {c['success_rate']:.2f} [{c['success_rate_ci95'][0]:.2f}, "
                     f"{c['success_rate_ci95'][1]:.2f}] | {c['mean_max_score']:.3f} +- {c['max_score_std']:.3f} | "
                     f"{r['action_diff']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump(rows, f, indent=2, default=str)


if __name__ == "__main__":
    main()
