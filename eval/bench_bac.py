"""BAC vs EasyCache vs fixed interval on a reference DiT (digits or video), one shared uncached run.

    OMP_NUM_THREADS=1 python eval/bench_bac.py --model video --updates 10,20,30 \
        --easycache 0.02,0.05,0.1 --interval 2,3 --out bench_bac_video

BAC plans are calibrated on the workload's default inputs with --calib-seeds (never the evaluation
seeds), then every config is timed against the same uncached passes (alternating, median of
--repeats) and compared with the uncached outputs (PSNR/SSIM) and with the model's own quality
metric (class recognition for digits; content/direction recovery for video). Writes sweep.json,
sweep.md, pareto.png (speedup vs PSNR, one series per method) and bench.md (one row per config).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import cachekit
from cachekit import EasyCacheConfig, FixedIntervalConfig
from cachekit.evaluation import load_workload
from cachekit.evaluation.sweep import sweep
from cachekit.planning import plan_bac


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="video", help="digits or video (a shipped reference model)")
    ap.add_argument("--updates", default="10,20,30", help="BAC budgets M (updates per unit)")
    ap.add_argument("--top-n", type=int, default=4)
    ap.add_argument("--metric", default="cosine", choices=("cosine", "l1", "mse"))
    ap.add_argument("--easycache", default="0.02,0.05,0.1", help="EasyCache thresholds (warm-up --warmup)")
    ap.add_argument("--interval", default="2,3", help="fixed intervals (warm-up --warmup, last step computed)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seeds", default="0", help="evaluation seeds")
    ap.add_argument("--calib-seeds", default="100", help="calibration seeds (BAC)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 50)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_bac")
    args = ap.parse_args()
    torch.set_flush_denormal(True)   # denormals slow CPU matmuls several-fold; same for every config
    command = "python eval/bench_bac.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    workload = load_workload(args.model, args.steps)
    inputs = list(workload.default_inputs)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    rec = cachekit.record(workload.target, workload.runs(inputs, [int(s) for s in args.calib_seeds.split(",")],
                                                         len(inputs)))
    print(f"calibrated on {len(rec.runs)} run(s) of {len(inputs)} inputs in {time.time() - t0:.0f} s", flush=True)

    labelled = [(f"easycache threshold={t}", EasyCacheConfig(threshold=t, warmup=args.warmup))
                for t in _floats(args.easycache)]
    labelled += [(f"fixed_interval interval={int(i)}",
                  FixedIntervalConfig(interval=int(i), warmup=args.warmup, final_steps=1)) for i in _floats(args.interval)]
    labelled += [(f"bac M={m}, top-{args.top_n}, {args.metric}",
                  plan_bac(rec, updates=m, top_n=args.top_n, metric=args.metric).config)
                 for m in (int(v) for v in args.updates.split(","))]
    labels, configs = [lab for lab, _ in labelled], [cfg for _, cfg in labelled]

    out = Path(args.out)
    rep = sweep(workload, configs, inputs, seeds, batch_size=len(inputs), repeats=args.repeats, out_dir=out,
                command=command)
    names = list(rep["extra_uncached"])
    lines = [f"# BAC vs EasyCache vs fixed interval: {workload.name} reference model", "",
             f"Command: `{command}`  ", f"Device: {rep['environment']['device']}  ",
             f"Inputs: {len(inputs)} x seeds {seeds}, {workload.steps} steps; BAC calibrated with seeds "
             f"{args.calib_seeds}; uncached " + ", ".join(f"{k} {v:.3f}" for k, v in rep["extra_uncached"].items()), "",
             "| config | speedup | computed fraction | ideal speedup | PSNR (dB) | SSIM | " + " | ".join(names) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(names)]
    for label, row in zip(labels, rep["rows"]):
        lines.append(f"| {label} | {row['speedup']:.2f}x | {row['computed_fraction']:.3f} | "
                     f"{1 / row['computed_fraction']:.2f}x | {row['psnr_mean']:.2f} | {row['ssim_mean']:.4f} | " +
                     " | ".join(f"{row['extra'][n]:.3f}" for n in names) + " |")
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
