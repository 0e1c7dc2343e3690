"""Quality vs computed fraction for every cachekit method on one reference model and schedule.

One uncached pass, then one cached pass per setting, all on the same held-out inputs and seeds;
the calibrated methods (BAC, ERTACache) are calibrated first on other seeds (``--calib-seeds``), so
no plan is fitted on the outputs it is judged by. The runtime methods are swept over fixed grids
written below (chosen before any run, the same for every model), and each method's curve is the
upper envelope (Pareto front) of its grid. Quality and fractions are exact and noise-free; no time
is measured here (see ``eval/bench_compare.py --time``).

    python eval/curves.py --model digits --steps 50 --out eval/results/curves
    python eval/curves.py --model video --steps 28 --out eval/results/curves

Writes ``<model>_<steps>.csv`` (one row per setting), ``<model>_<steps>.png`` (PSNR and SSIM vs
fraction, one line per method) and ``<model>_<steps>.md`` (PSNR at fractions 0.35 and 0.5,
interpolated along each curve; the best new method against the best of EasyCache / fixed interval /
BAC).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import cachekit
from cachekit import (BlockDriftConfig, EasyCacheConfig, FixedIntervalConfig)
from cachekit.evaluation import load_workload
from cachekit.evaluation.runner import applied, environment, quality, run_pass
from cachekit.planning import plan_bac, plan_erta

BASELINES = ("easycache", "fixed_interval", "bac")
TARGET_FRACTIONS = (0.35, 0.5)


def grids(steps: int) -> dict[str, list]:
    """Settings per curve. Warm-ups scale with the schedule (2 of 28, 3 of 50)."""
    w = 2 if steps < 40 else 3
    ec = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
    fi = [2, 3, 4, 5, 6]
    bd = [0.05, 0.1, 0.2, 0.3, 0.45]
    return {
        "easycache": [EasyCacheConfig(threshold=t, warmup=1) for t in ec],
        "fixed_interval": [FixedIntervalConfig(interval=i, warmup=1) for i in fi],
        "fixed_interval+taylor": [FixedIntervalConfig(interval=i, warmup=w, forecast="taylor") for i in fi],
        "fixed_interval+foca": [FixedIntervalConfig(interval=i, warmup=w, forecast="foca") for i in fi[1:]],
        "easycache+taylor": [EasyCacheConfig(threshold=t, warmup=w, forecast="taylor") for t in ec[1:]],
        "block_drift": [BlockDriftConfig(fn=1, threshold=t, warmup=w) for t in bd],
        "block_drift+taylor": [BlockDriftConfig(fn=1, threshold=t, warmup=w, forecast="taylor") for t in bd],
        # sub-block units, re-modulated each step; the last step forecast, not computed
        "units+taylor": [FixedIntervalConfig(interval=i, warmup=w - 1, final_steps=0, units=True, forecast="taylor")
                         for i in fi],
        "units+foca": [FixedIntervalConfig(interval=i, warmup=w - 1, final_steps=0, units=True, forecast="foca")
                       for i in fi[1:]],
    }


CALIBRATED_FRACTIONS = (0.25, 0.35, 0.5, 0.65)


def calibrated(workload, inputs, seeds, batch, methods) -> dict[str, list]:
    """BAC and ERTACache plans for ``CALIBRATED_FRACTIONS`` from full runs on the calibration seeds."""
    runs = workload.runs(inputs, seeds, batch)
    T = workload.steps
    out: dict[str, list] = {}
    if "bac" in methods:
        rec = cachekit.record(workload.target, runs)
        out["bac"] = [plan_bac(rec, updates=max(2, round(f * T))).config for f in CALIBRATED_FRACTIONS]
    for name, corr in (("ertacache", "linear"), ("ertacache+scale", "scale")):
        if name in methods:
            if "_erta_rec" not in out:
                out["_erta_rec"] = cachekit.record(workload.target, runs, level="stack")
            rec = out["_erta_rec"]
            out[name] = [plan_erta(rec, fraction=f, correction=corr).config
                         for f in CALIBRATED_FRACTIONS]
    out.pop("_erta_rec", None)
    return out


def envelope(points: list[tuple[float, float]], f: float) -> float:
    """Value at fraction f of the upper envelope of (fraction, quality) points: the best quality
    reachable at or below f, linearly interpolated between Pareto points; NaN below the cheapest."""
    pts = sorted(points)
    front = []
    for x, y in pts:
        if not front or y > front[-1][1]:
            front.append((x, y))
    if not front or f < front[0][0]:
        return float("nan")
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if x0 <= f <= x1:
            return y0 + (y1 - y0) * (f - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)
    return front[-1][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=("digits", "video"))
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--inputs", default=None, help="comma-separated inputs (default: the model's first --n-inputs)")
    ap.add_argument("--n-inputs", type=int, default=10, help="how many default inputs (default: 10)")
    ap.add_argument("--seeds", default="1", help="evaluation seeds (default: 1)")
    ap.add_argument("--calib-seeds", default="0", help="calibration seeds for BAC / ERTACache (default: 0)")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--methods", default=None, help="comma-separated curves (default: all)")
    ap.add_argument("--out", default="eval/results/curves")
    args = ap.parse_args(argv)
    command = "python eval/curves.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    workload = load_workload(args.model, args.steps)
    inputs = args.inputs.split(",") if args.inputs else list(workload.default_inputs)[:args.n_inputs]
    seeds = [int(s) for s in args.seeds.split(",")]
    calib_seeds = [int(s) for s in args.calib_seeds.split(",")]
    all_grids = grids(args.steps)
    methods = args.methods.split(",") if args.methods else [*all_grids, "bac", "ertacache"]
    t0 = time.time()
    cal = calibrated(workload, inputs, calib_seeds, args.batch_size, methods)
    configs = {m: (all_grids.get(m) or cal.get(m) or []) for m in methods}
    ref = run_pass(workload, inputs, seeds, args.batch_size, cached=False)
    rows = []
    for method, cfgs in configs.items():
        for cfg in cfgs:
            with applied(workload.target, cfg):
                res = run_pass(workload, inputs, seeds, args.batch_size, cached=True)
                cached_mb = cachekit.stats(workload.target).cached_bytes / 2**20
            q = quality(workload.kind, res.outputs, ref.outputs)
            settings = {k: v for k, v in cfg.to_dict()["settings"].items() if k not in ("plan", "coefficients", "model")}
            rows.append({"method": method, "settings": json.dumps(settings, default=str), "fraction": res.computed_fraction,
                         "psnr": q["psnr_mean"], "ssim": q["ssim_mean"], "cached_mb": cached_mb})
            print(f"{method:24s} fraction {res.computed_fraction:.3f} PSNR {q['psnr_mean']:6.2f} SSIM "
                  f"{q['ssim_mean']:.4f}  {settings}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.model}_{args.steps}"
    if args.methods and Path(f"{stem}.csv").exists():   # rerun of some curves: keep the others' rows
        with open(f"{stem}.csv", newline="") as fh:
            kept = [{**r, "fraction": float(r["fraction"]), "psnr": float(r["psnr"]), "ssim": float(r["ssim"]),
                     "cached_mb": float(r["cached_mb"])} for r in csv.DictReader(fh) if r["method"] not in methods]
        methods = list(dict.fromkeys([r["method"] for r in kept] + methods))
        rows = kept + rows
        command += f"  (other curves from the earlier run in {stem}.csv)"
    with open(f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows, methods)
    env = environment(command)
    md = report(args, summary, command, env, inputs, seeds, calib_seeds, time.time() - t0)
    Path(f"{stem}.md").write_text(md)
    plot(rows, methods, f"{stem}.png", f"{args.model}, {args.steps} steps: quality vs computed fraction")
    print(md)
    return 0


def summarise(rows: list[dict], methods: list[str]) -> dict:
    table = {}
    for m in methods:
        pts = [(r["fraction"], r["psnr"]) for r in rows if r["method"] == m]
        spts = [(r["fraction"], r["ssim"]) for r in rows if r["method"] == m]
        table[m] = {f: (envelope(pts, f), envelope(spts, f)) for f in TARGET_FRACTIONS}
    best = {}
    for f in TARGET_FRACTIONS:
        base = max((table[m][f][0], m) for m in methods if m in BASELINES and not np.isnan(table[m][f][0]))
        new = max((table[m][f][0], m) for m in methods if m not in BASELINES and not np.isnan(table[m][f][0]))
        best[f] = {"baseline": base, "new": new, "gain_db": new[0] - base[0]}
    return {"table": table, "best": best}


def report(args, summary, command, env, inputs, seeds, calib_seeds, seconds) -> str:
    lines = [f"# {args.model}, {args.steps} steps: PSNR / SSIM at equal computed fraction", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {seconds / 60:.1f} min; inputs {len(inputs)} x "
             f"seeds {seeds}; BAC / ERTACache calibrated on seeds {calib_seeds}", "",
             "| method | PSNR @0.35 | SSIM @0.35 | PSNR @0.5 | SSIM @0.5 |", "|---|---|---|---|---|"]
    for m, vals in summary["table"].items():
        cells = [f"{vals[f][0]:.2f} | {vals[f][1]:.4f}" if not np.isnan(vals[f][0]) else "- | -" for f in TARGET_FRACTIONS]
        lines.append(f"| {m}{'' if m not in BASELINES else ' (baseline)'} | " + " | ".join(cells) + " |")
    lines.append("")
    for f, b in summary["best"].items():
        lines.append(f"- fraction {f}: best new **{b['new'][1]}** {b['new'][0]:.2f} dB vs best baseline "
                     f"{b['baseline'][1]} {b['baseline'][0]:.2f} dB: **{b['gain_db']:+.2f} dB**")
    return "\n".join(lines) + "\n"


def plot(rows, methods, path, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in methods:
        pts = sorted((r["fraction"], r["psnr"], r["ssim"]) for r in rows if r["method"] == m)
        if not pts:
            continue
        style = "--" if m in BASELINES else "-"
        for ax, k in zip(axes, (1, 2)):
            ax.plot([p[0] for p in pts], [p[k] for p in pts], style, marker="o", ms=3, label=m)
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("computed fraction of block evaluations")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        for f in TARGET_FRACTIONS:
            ax.axvline(f, color="grey", lw=0.5)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
