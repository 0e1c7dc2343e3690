"""Every cachekit method on a Meta-World diffusion policy at matched computed fractions, closed loop.

    python eval/bench_policy.py --env metaworld:push-v3 --policy reference_weights/metaworld_push_policy \\
        --episodes 200 --fractions 0.2,0.1 --out eval/results/policy_metaworld/push-v3

Rows, at each computed fraction f (N = round(1/f), M = round(100 f) of the 100 DDPM steps):
uncached; whole-stack every-N (held); fixed interval N + Taylor on sub-block units; BAC's runtime with
a uniform plan (every unit every N-th step); BAC calibrated (Adaptive Caching Scheduler, M updates
per unit, L1) with and without Bubbling Union (top-4); EasyCache with the threshold that computes f
on the calibration inputs; ERTACache (fraction f, fits cross-validated across calibration runs);
LeMiCa (global schedule of M steps from final-output edge errors, units + Taylor).

Calibration (BAC, ERTACache, LeMiCa, EasyCache's threshold) uses observation histories that the
uncached policy met in closed loop on episode seeds ``--calib-seed ..`` (default 10000..), never
the evaluation seeds 0..episodes-1. Every row runs the same evaluation episodes as one batch (one
``predict_action`` per control step for every running episode, per-episode noise streams).

Speed, three same-run ratios of policy inference time: (1) batch 1 (the control-loop setting): one
prediction on a real observation, every config and the uncached policy alternating in the same
rounds (``timing.alternate``), median of ``--repeats``; (2) batch ``--timing-batch`` (64): the same,
on one prediction over 64 real scenes, the compute-bound regime of the batched closed loop; (3) closed
loop: time inside ``predict_action`` per episode-prediction over the row's batched episodes, against
the uncached row's. (3) is measured minutes apart per row, so load on the machine moves it; (1) and
(2) alternate the configs round by round and are the figures to quote.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cachekit
from cachekit import BACConfig, EasyCacheConfig, FixedIntervalConfig, ScheduleConfig
from cachekit.evaluation.runner import applied
from cachekit.evaluation.timing import Pass, alternate
from cachekit.calibration import measure, plan
from cachekit.planning import plan_bac
from cachekit.evaluation.tasks import metaworld as mw
from cachekit.reference.policy import load_policy


def calibration_runs(policy, obs: torch.Tensor, runs: int, batch: int) -> list:
    """``runs`` callables, each one batched prediction over ``batch`` histories spread evenly over
    the calibration trajectories (fixed noise per run)."""
    pick = np.linspace(0, len(obs) - 1, runs * batch).round().astype(int)
    chunks = [obs[pick[k * batch:(k + 1) * batch]] for k in range(runs)]
    return [(lambda b=b, k=k: policy.predict_action(b, generator=torch.Generator().manual_seed(k))) for k, b in enumerate(chunks)]


def nth(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def computed_fraction_on(policy, cfg, runs) -> float:
    vals = []
    with applied(policy, cfg):
        for run in runs:
            run()
            vals.append(cachekit.stats(policy).computed_fraction)
    return float(np.mean(vals))


def easycache_for(policy, runs, fraction: float, warmup: int = 3) -> tuple[EasyCacheConfig, float]:
    """The EasyCache threshold whose computed fraction on the calibration runs is closest to
    ``fraction`` (bisection on log threshold; the fraction falls as the threshold grows)."""
    lo, hi = math.log(1e-3), math.log(5.0)
    best = None
    for _ in range(9):
        mid = (lo + hi) / 2
        cfg = EasyCacheConfig(threshold=round(math.exp(mid), 4), warmup=warmup)
        f = computed_fraction_on(policy, cfg, runs)
        if best is None or abs(f - fraction) < abs(best[1] - fraction):
            best = (cfg, f)
        if f > fraction:
            lo = mid
        else:
            hi = mid
    return best


def build_configs(policy, runs, lemica_runs, fractions, lemica_fractions, log, lean=()) -> list[tuple[str, float, object, dict]]:
    """(label, target fraction, config, calibration notes) for every row. LeMiCa measures its edges
    on ``lemica_runs`` (one run of ``--calib-batch`` histories spread over the same trajectories):
    its cost is model calls, ~50 per edge and run; 700 edges at f=0.2 are ~35,000 calls. At the
    ``lean`` fractions only the uniform plans, units + Taylor and BAC calibrated with Bubbling Union run."""
    t0 = time.time()
    rec = cachekit.record(policy, runs)
    rec_stack = measure(policy, runs, "ertacache")
    T = rec.num_steps
    log(f"  recorded {len(runs)} calibration runs (units and stack) in {time.time() - t0:.0f} s")
    table = None
    if lemica_fractions:
        t0 = time.time()
        # an edge must span 1/f steps for a plan of f*T computed steps to exist; 1.6/f leaves room
        skip = max(4, math.ceil(1.6 / min(lemica_fractions)))
        table = measure(policy, lemica_runs, "lemica", template=ScheduleConfig(units=True, forecast="taylor"),
                        max_skip=skip)
        log(f"  LeMiCa edges (max_skip {skip}): {table.data.model_calls} model calls, {time.time() - t0:.0f} s")
    out = []
    for f in fractions:
        n, m = max(1, round(1 / f)), max(2, round(f * T))
        uniform = {u: sorted(set(range(0, T, n)) | {T - 1}) for u in rec.columns}
        out += [
            (f"every {nth(n)} step, whole stack, held", f, FixedIntervalConfig(interval=n, warmup=1, final_steps=1), {}),
            (f"fixed interval {n} + Taylor, units", f,
             FixedIntervalConfig(interval=n, warmup=1, final_steps=1, forecast="taylor", units=True), {}),
            (f"BAC runtime, uniform plan every {nth(n)} step", f, BACConfig(plan=uniform, num_steps=T, model=rec.fingerprint), {}),
        ]
        for top in ((4,) if f in lean else (4, 0)):
            bac = plan_bac(rec, updates=m, top_n=top, metric="l1")
            name = f"BAC calibrated M={m}, " + ("Bubbling Union top-4" if top else "no Bubbling Union") + ", L1"
            out.append((name, f, bac.config, {"selected": bac.selected}))
        if f in lean:
            continue
        t0 = time.time()
        ec, ef = easycache_for(policy, runs, f)
        out.append((f"EasyCache tau={ec.threshold:g}, R={ec.warmup}", f, ec,
                    {"calibration_fraction": ef, "search_s": time.time() - t0}))
        ep = plan(rec_stack, fraction=f).plan
        out.append((f"ERTACache f={f:g}", f, ep.config, {"validation": {k: v for k, v in ep.validation.items() if k != "cv"}}))
        if table is not None and f in lemica_fractions:
            lp = plan(table, fraction=f).plan
            out.append((f"LeMiCa {lp.criterion} {len(lp.computed)} steps, units + Taylor", f, lp.config,
                        {"computed": lp.computed, "checked": lp.checked}))
    return out


def calibration_error(policy, runs, configs) -> list[float]:
    """Open-loop mean absolute action difference from the uncached policy on the calibration runs
    (env units), per config: what a planner can see, beside the closed-loop success it cannot."""
    refs = [run() for run in runs]
    out = []
    for _, _, cfg, _ in configs:
        with applied(policy, cfg):
            out.append(float(np.mean([float((run() - ref).abs().mean()) for run, ref in zip(runs, refs)])))
    return out


def plan_shape(cfg, num_steps: int) -> dict:
    """Where a BAC plan spends its updates: mean updates per unit, and the share before mid-sampling."""
    if not isinstance(cfg, BACConfig):
        return {}
    steps = [s for _, s in cfg.plan]
    early = [sum(1 for t in s if t < num_steps // 2) / len(s) for s in steps]
    return {"updates_per_unit": float(np.mean([len(s) for s in steps])), "share_in_first_half": float(np.mean(early))}


def closed_loop(policy, task, episodes, seed, envs, cfg=None) -> dict:
    """One row: the episodes in one batch, with ``cfg`` applied (None: uncached), plus the computed
    fraction weighted by the episodes each prediction served."""
    acc = [0.0, 0]

    def tally(p, rows: int) -> None:
        if cfg is not None:
            acc[0] += cachekit.stats(p).computed_fraction * rows
            acc[1] += rows

    if cfg is None:
        res = mw.evaluate(policy, task, episodes, seed, envs=envs)
    else:
        with applied(policy, cfg):
            res = mw.evaluate(policy, task, episodes, seed, envs=envs, after_predict=tally)
    res["computed_fraction"] = acc[0] / acc[1] if acc[1] else 1.0
    return res


def batch1_times(policy, obs1: torch.Tensor, configs, repeats: int) -> list[float]:
    """Median batch-1 prediction time of the uncached policy (first) and every config, alternating."""
    def predict(_r):
        return policy.predict_action(obs1, generator=torch.Generator().manual_seed(0))

    passes = [Pass(predict)] + [Pass(predict, around=lambda c=c: applied(policy, c)) for _, _, c, _ in configs]
    return [t.median for t in alternate(passes, repeats)]


def first_scenes(spec, seed: int, n: int) -> torch.Tensor:
    """(n, 2, obs_dim): the first observation of episode seeds seed..seed+n-1, as a history of two."""
    env = mw.make_env(spec)
    scenes = []
    for k in range(n):
        env.seed(seed + k)
        o = env.reset()[0]
        scenes.append(np.stack([o, o]))
    env.close()
    return torch.as_tensor(np.stack(scenes), dtype=torch.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True, help="metaworld:TASK, e.g. metaworld:push-v3")
    ap.add_argument("--policy", required=True, help="trained policy folder (reference_weights/metaworld_..._policy, assets/metaworld_door_open_policy)")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="evaluation episode seeds seed..seed+episodes-1")
    ap.add_argument("--calib-episodes", type=int, default=16)
    ap.add_argument("--calib-seed", type=int, default=10_000)
    ap.add_argument("--calib-runs", type=int, default=4, help="calibration runs (predictions) for the planners")
    ap.add_argument("--calib-batch", type=int, default=8, help="observation histories per calibration run")
    ap.add_argument("--fractions", default="0.2,0.1", help="target computed fractions")
    ap.add_argument("--lemica-fractions", default="0.2",
                    help="fractions with a LeMiCa row ('' none). Its edges must span 1.6/f steps: at f=0.2, 700 edges "
                         "x ~50 model calls; at f=0.1, 1,500 (~20 min on one core here), so 0.2 only by default")
    ap.add_argument("--lean-fractions", default="",
                    help="fractions that get only the uniform plans, units + Taylor and BAC with Bubbling Union "
                         "(a shorter table when the machine is shared)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timing-batch", type=int, default=64,
                    help="also time every row on one prediction over this many real scenes (first scenes of episode "
                         "seeds --calib-seed..), same rounds: compute-bound like the batched closed loop, without its "
                         "row-to-row machine drift (0: off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="output prefix: writes PREFIX.md, .csv, .json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)   # denormals slow CPU matmuls several-fold; same for every row
    command = "python eval/bench_policy.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    fractions = [float(v) for v in args.fractions.split(",") if v.strip()]
    lem = [float(v) for v in args.lemica_fractions.split(",") if v.strip()]
    spec = mw.task_spec(args.env)
    log = lambda s: print(s, flush=True)  # noqa: E731
    t_all = time.time()
    policy = load_policy(args.policy)
    if policy.cfg.extra.get("task_name") != mw.TASK_PREFIX + spec.name:
        raise SystemExit(f"{args.policy} was trained on {policy.cfg.extra.get('task_name')!r}, not {args.env!r}")
    if set(range(args.seed, args.seed + args.episodes)) & set(range(args.calib_seed, args.calib_seed + args.calib_episodes)):
        raise SystemExit("calibration and evaluation episode seeds overlap")
    log(command)
    t0 = time.time()
    envs = mw.VectorEnv(spec, max(args.episodes, args.calib_episodes))
    log(f"[{spec.name}] {len(envs.envs)} environments in {time.time() - t0:.0f} s")

    t0 = time.time()
    calib_obs = mw.rollout_observations(policy, spec, args.calib_episodes, args.calib_seed, envs=envs)
    runs = calibration_runs(policy, calib_obs, args.calib_runs, args.calib_batch)
    lemica_runs = calibration_runs(policy, calib_obs, 1, args.calib_batch)
    lean = [float(v) for v in args.lean_fractions.split(",") if v.strip()]
    configs = build_configs(policy, runs, lemica_runs, fractions, lem, log, lean)
    calib_err = calibration_error(policy, runs, configs)
    for (_, _, cfg, notes), e in zip(configs, calib_err):
        notes.update(plan_shape(cfg, policy.cfg.num_inference_steps))
    t_calib = time.time() - t0
    log(f"  calibration: {len(calib_obs)} histories from {args.calib_episodes} episodes, {len(configs)} configs, {t_calib:.0f} s")

    rows = []
    t0 = time.time()
    base = closed_loop(policy, spec, args.episodes, args.seed, envs)
    log(f"  uncached: success {base['success_rate']:.3f} {np.round(base['success_rate_ci95'], 3).tolist()}, "
        f"{base['predict_s']:.0f} s in predict_action, {time.time() - t0:.0f} s")
    per_row_base = base["predict_s"] / base["predicted_rows"]
    results = [("uncached", 1.0, None, {}, base)]
    for label, f, cfg, notes in configs:
        t0 = time.time()
        r = closed_loop(policy, spec, args.episodes, args.seed, envs, cfg)
        results.append((label, f, cfg, notes, r))
        log(f"  {label}: fraction {r['computed_fraction']:.3f}, success {r['success_rate']:.3f}, "
            f"closed-loop speedup {per_row_base / (r['predict_s'] / r['predicted_rows']):.2f}x, {time.time() - t0:.0f} s")
    t_rows = sum(r["wall_s"] for *_, r in results)
    t0 = time.time()
    obs1 = calib_obs[len(calib_obs) // 2][None]
    times = batch1_times(policy, obs1, configs, args.repeats)
    batched = None
    if args.timing_batch:
        scenes = first_scenes(spec, args.calib_seed, args.timing_batch)
        batched = batch1_times(policy, scenes, configs, max(3, args.repeats // 2))
    t_b1 = time.time() - t0
    envs.close()

    lo, hi = base["success_rate_ci95"]
    for k, (label, f, cfg, notes, r) in enumerate(results):
        rows.append({
            "task": spec.name, "config": label, "target_fraction": f, "computed_fraction": r["computed_fraction"],
            "success": r["success_rate"], "ci_lo": r["success_rate_ci95"][0], "ci_hi": r["success_rate_ci95"][1],
            "episodes": r["episodes"], "successes": int(round(r["success_rate"] * r["episodes"])),
            "inside_uncached_ci": bool(lo <= r["success_rate"] <= hi),
            "batch1_ms": times[k] * 1e3, "batch1_speedup": times[0] / times[k],
            "closed_loop_s_per_prediction": r["predict_s"] / r["predicted_rows"],
            "closed_loop_speedup": per_row_base / (r["predict_s"] / r["predicted_rows"]),
            "mean_episode_length": r["mean_episode_length"], "row_wall_s": r["wall_s"],
            "calib_action_mae": 0.0 if k == 0 else calib_err[k - 1],
            "config_repr": "" if cfg is None else _short(cfg), "notes": json.dumps(notes, default=str),
            "per_episode_success": "".join("1" if s else "0" for s in r["per_episode_success"]),
        })
        if batched is not None:
            rows[-1].update(batched_size=args.timing_batch, batched_speedup=batched[0] / batched[k])
    meta = {"command": command, "policy": args.policy, "task": spec.name, "episodes": args.episodes,
            "eval_seeds": [args.seed, args.seed + args.episodes - 1],
            "calib_seeds": [args.calib_seed, args.calib_seed + args.calib_episodes - 1],
            "calib_histories": len(calib_obs), "calib_runs": args.calib_runs, "calib_batch": args.calib_batch,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "calibration_s": t_calib,
            "rows_s": t_rows, "batch1_timing_s": t_b1, "total_s": time.time() - t_all, "repeats": args.repeats}
    write(Path(args.out), rows, meta)
    log(f"[{spec.name}] done in {meta['total_s']:.0f} s (calibration {t_calib:.0f} s, rows {t_rows:.0f} s)")


def _short(cfg) -> str:
    d = cfg.to_dict()
    s = dict(d.get("settings", {}))
    for k in ("plan", "coefficients"):
        if k in s:
            s[k] = f"<{len(s[k])} entries>"
    if "reuse_steps" in s:
        s["reuse_steps"] = f"<{len(s['reuse_steps'])} steps>"
    return f"{d.get('method')} {json.dumps(s, default=str)}"


def _f(v, spec: str, suffix: str = "") -> str:
    return "not measured" if v is None else f"{v:{spec}}{suffix}"


def markdown(rows: list[dict], meta: dict) -> str:
    b = rows[0]
    lines = [f"# Meta-World {meta['task']}: cachekit methods at matched computed fractions", "",
             f"Policy `{meta['policy']}`, 100 DDPM steps; {meta['episodes']} episodes (seeds {meta['eval_seeds'][0]}-"
             f"{meta['eval_seeds'][1]}) per row, one batch; calibration on {meta['calib_histories']} observation "
             f"histories from episode seeds {meta['calib_seeds'][0]}-{meta['calib_seeds'][1]}. torch {meta['torch']}, "
             f"{meta['threads']} thread(s). Total {meta['total_s'] / 60:.1f} min (calibration {meta['calibration_s']:.0f} s, "
             f"rows {meta['rows_s']:.0f} s, batch-1 timing {meta['batch1_timing_s']:.0f} s).", "",
             f"Command: `{meta['command']}`", "",
             f"Uncached success {b['success']:.3f} [{b['ci_lo']:.3f}, {b['ci_hi']:.3f}] (Wilson 95%), "
             f"batch-1 prediction {_f(b['batch1_ms'], '.0f', ' ms')}." + (f" **{meta['salvaged']}.**" if meta.get("salvaged") else ""), "",
             "| config | computed fraction | success [95% CI] | inside uncached CI | speedup, batch 1 | speedup, closed loop (batched) | "
             "open-loop action MAE, calibration | mean episode length |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['computed_fraction']:.3f} | {r['success']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}] | "
                     f"{'yes' if r['inside_uncached_ci'] else 'no'} | {_f(r['batch1_speedup'], '.2f', 'x')} | {r['closed_loop_speedup']:.2f}x | "
                     f"{_f(r['calib_action_mae'], '.4f')} | {_f(r['mean_episode_length'], '.0f')} |")
    if any(r.get("batched_speedup") for r in rows):
        bs = next(r["batched_size"] for r in rows if r.get("batched_size"))
        src = (f"calibration-free rows, `{meta['batch1_command']}`" if meta.get("batch1_command") else
               f"first scenes of episode seeds {meta['calib_seeds'][0]}.., every row, by the command above")
        lines += ["", f"Same-rounds prediction speedup at batch {bs} (real scenes; {src}):", "",
                  "| config | speedup, batch " + str(bs) + " |", "|---|---|"]
        lines += [f"| {r['config']} | {r['batched_speedup']:.2f}x |" for r in rows if r.get("batched_speedup")]
    return "\n".join(lines) + "\n"


def write(prefix: Path, rows: list[dict], meta: dict) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".md").write_text(markdown(rows, meta))
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "per_episode_success"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    prefix.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
