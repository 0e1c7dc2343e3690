"""Caching on quantized transformers: the joint error against the full-precision uncached output.

For one reference model, per quantization (torchao int8 weight-only / int8 dynamic activations,
optimum-quanto int4 weights / int4 weights + int8 activations), PSNR and SSIM against the
full-precision uncached outputs on judged inputs and seeds never used for calibration, of:
quantized only; naive stacking (the default ``cachekit.apply``; fixed-interval units + Taylor at
an aggressive fraction, with and without int8 history); plans calibrated on the quantized model at
the same fraction: CacheQuant (DP schedule against the full-precision recording + per-channel
correction; without the correction; its schedule run with units + Taylor) and optionally LeMiCa.
``--wall`` times uncached, quantized, cached and both in alternating rounds (same run); ``--history``
measures the forecast history stored in bf16 / int8 / fp8 (error and bytes).

    python eval/bench_quant.py --model digits --out eval/results/quant
    python eval/bench_quant.py --model video --out eval/results/quant
    python eval/bench_quant.py --model digits --wall 5 --out eval/results/quant
    python eval/bench_quant.py --model digits --history --out eval/results/quant
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import cachekit
from cachekit import FixedIntervalConfig, ScheduleConfig
from cachekit.calibration import calibrate
from cachekit.evaluation import load_workload
from cachekit.evaluation.runner import environment
from cachekit.metrics import mean_finite, psnr, ssim
from cachekit.planning import plan_cachequant

QUANTS = ("none", "w8", "w8a8", "w4", "w4a8")
LABEL = {"none": "full precision", "w8": "int8 weights (torchao)", "w8a8": "int8 weights + int8 dynamic "
         "activations (torchao)", "w4": "int4 weights (quanto)", "w4a8": "int4 weights + int8 activations (quanto)"}


def quantize(model: torch.nn.Module, how: str, calib_runs: list) -> None:
    if how in ("w8", "w8a8"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig() if how == "w8" else Int8DynamicActivationInt8WeightConfig())
    elif how in ("w4", "w4a8"):
        import optimum.quanto as q

        q.quantize(model, weights=q.qint4, activations=q.qint8 if how == "w4a8" else None)
        if how == "w4a8":   # activation ranges from the calibration runs, never the judged ones
            with q.Calibration(momentum=0.9):
                for run in calib_runs:
                    run()
        q.freeze(model)


def frames(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1) if x.dim() == 5 else x   # video (B, F, C, H, W): frames as a batch


def scores(out: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"psnr": mean_finite(psnr(frames(out), frames(ref))), "ssim": float(statistics.mean(ssim(frames(out), frames(ref))))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits", choices=("digits", "video"))
    ap.add_argument("--steps", type=int, default=None, help="default: digits 28, video 20")
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--interval", type=int, default=5, help="the aggressive fixed interval (fraction <= 0.3)")
    ap.add_argument("--lemica", default="", help="quantizations to also calibrate LeMiCa on (slow), e.g. w8a8,w4")
    ap.add_argument("--wall", type=int, default=0, help="instead: alternating timed rounds of uncached / w8a8 / cached / both")
    ap.add_argument("--history", action="store_true", help="instead: the older forecast entries stored in "
                    "fp32 / bf16 / int8 / fp8 on the full-precision model: PSNR and cached bytes")
    ap.add_argument("--out", default="eval/results/quant")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    command = "python eval/bench_quant.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    steps = args.steps or (28 if args.model == "digits" else 20)
    inputs = list(load_workload(args.model, steps).default_inputs)
    # calibration: the first inputs, seeds 100-102; judged: the other inputs, seeds 0-1
    n_cal = len(inputs) // 2
    calib, judged = inputs[:n_cal], inputs[n_cal:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.wall:
        return wall(args, steps, calib, judged, command, out)
    if args.history:
        return history(args, steps, judged, command, out)

    def fresh():
        wl = load_workload(args.model, steps)
        return wl, wl.runs(calib, [100, 101, 102], len(calib)), wl.runs(judged, [0, 1], len(judged))

    t0 = time.time()
    wl, cal_runs, judged_runs = fresh()
    ref = torch.cat([r() for r in judged_runs])
    reference = cachekit.record(wl.target, cal_runs, level="stack")   # the full-precision stack, for CacheQuant
    rows = []

    def judge(quant: str, label: str, config, target, **apply_kw) -> dict:
        if config is not None:
            cachekit.apply(target, config, **apply_kw) if config != "default" else cachekit.apply(target, **apply_kw)
        try:
            y = torch.cat([r() for r in judged_runs])
            frac = cachekit.stats(target).computed_fraction if config is not None else 1.0
        finally:
            if config is not None:
                cachekit.remove(target)
        row = {"quant": quant, "cache": label, "fraction": round(float(frac), 3), **scores(y, ref)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    for quant in args.quants.split(","):
        if quant != "none":
            wl, cal_runs, judged_runs = fresh()
            quantize(wl.target.transformer, quant, cal_runs)
        target = wl.target
        judge(quant, "uncached", None, target)
        judge(quant, "default (cachekit.apply)", "default", target)
        aggressive = FixedIntervalConfig(interval=args.interval, units=True, forecast="taylor")
        frac = judge(quant, f"units + Taylor every {args.interval}", aggressive, target)["fraction"]
        judge(quant, f"units + Taylor every {args.interval}, history int8", aggressive, target, history="int8")
        cal = calibrate(target, cal_runs, "cachequant", fraction=frac, reference=reference)
        judge(quant, f"CacheQuant as calibrated ({cal.plan.schedule} schedule, {cal.details['chosen']})", cal.config,
              target)["calibration"] = {k: cal.details[k] for k in ("validation", "checked_final_error", "chosen")}
        plain = dataclasses.replace(cal.plan.config, correction=())
        variants = {"stack + correction": cal.plan.config, "stack": plain,
                    "units + Taylor": dataclasses.replace(plain, units=True, forecast="taylor", forecast_order=1)}
        for name, cfg in variants.items():
            if cfg != cal.config and (name != "stack + correction" or cfg.correction):
                judge(quant, f"CacheQuant's schedule, {name}", cfg, target)
        # the paper's DPS: full-precision features only (no quantization error in the objective)
        fp_only = plan_cachequant(reference, fraction=frac, correct=False).computed
        judge(quant, "DP schedule of the full-precision model, units + Taylor", ScheduleConfig(
            compute_steps=fp_only, num_steps=steps, units=True, forecast="taylor"), target)
        if quant in args.lemica.split(","):
            lem = calibrate(target, cal_runs, "lemica", fraction=frac)
            judge(quant, "LeMiCa calibrated on this model", lem.config, target)
    env = environment(command)
    lines = [f"# {args.model}, {steps} steps: caching on quantized transformers", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {(time.time() - t0) / 60:.1f} min  ",
             f"Calibration: inputs {calib}, seeds 100-102 (3 generations); judged: inputs {judged}, seeds 0-1. "
             "PSNR / SSIM against the full-precision uncached outputs (video: per frame).", "",
             "| quantization | cache | computed fraction | PSNR dB | SSIM |", "|---|---|---|---|---|"]
    lines += [f"| {LABEL[r['quant']]} | {r['cache']} | {r['fraction']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
              for r in rows]
    (out / f"{args.model}_{steps}.md").write_text("\n".join(lines) + "\n")
    (out / f"{args.model}_{steps}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


def history(args, steps: int, judged: list, command: str, out: Path) -> int:
    """Units + Taylor (orders 1 and 2) with the older history entries as computed, in bf16, int8, fp8."""
    wl = load_workload(args.model, steps)
    runs = wl.runs(judged, [0, 1], len(judged))
    ref = torch.cat([r() for r in runs])
    rows = []
    for order in (1, 2):
        config = FixedIntervalConfig(interval=3, units=True, forecast="taylor", forecast_order=order)
        for h in (None, "bf16", "int8", "fp8"):
            cachekit.apply(wl.target, config, history=h, keep_cache=True)
            try:
                y = torch.cat([r() for r in runs])
                s = cachekit.stats(wl.target)
            finally:
                cachekit.remove(wl.target)
            rows.append({"order": order, "history": h or "as computed (fp32)", "fraction": s.computed_fraction,
                         "bytes": s.cached_bytes, **scores(y, ref)})
            print(json.dumps(rows[-1]), flush=True)
    env = environment(command)
    lines = [f"# {args.model}, {steps} steps: forecast history stored in lower precision", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; judged inputs {judged}, seeds 0-1  ",
             "Units + Taylor every 3rd step; PSNR / SSIM against the uncached outputs; cached bytes: "
             "`cachekit.stats(...).cached_bytes` after the last generation (newest entries + older ones + scales).", "",
             "| Taylor order | older entries | computed fraction | cached MB | PSNR dB | SSIM |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['history']} | {r['fraction']:.3f} | {r['bytes'] / 1e6:.2f} | {r['psnr']:.2f} | "
              f"{r['ssim']:.4f} |" for r in rows]
    (out / f"{args.model}_{steps}_history.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def wall(args, steps: int, calib: list, judged: list, command: str, out: Path) -> int:
    """Same-run wall ratios: full precision and int8-dynamic models side by side, each uncached and
    with the default cache, timed in alternating rounds; medians and interquartile ranges."""
    fp, q = load_workload(args.model, steps), load_workload(args.model, steps)
    quantize(q.target.transformer, "w8a8", [])
    arms = {"uncached": (fp, False), "int8 dynamic": (q, False), "cached (default)": (fp, True),
            "int8 dynamic + cached (default)": (q, True)}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for wl, cached in arms.values():   # warm-up: first calls, lazy inits
        wl.generate(judged, 0)
    for _ in range(args.wall):
        for name, (wl, cached) in arms.items():
            if cached:
                cachekit.apply(wl.target)
            t = time.perf_counter()
            wl.generate(judged, 0)
            times[name].append(time.perf_counter() - t)
            if cached:
                cachekit.remove(wl.target)
    base = statistics.median(times["uncached"])
    env = environment(command)
    lines = [f"# {args.model}, {steps} steps: wall time, full precision vs int8 dynamic, each uncached and cached", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {args.wall} alternating rounds, batch of {len(judged)}  ",
             "Speed-up: uncached full-precision median / this arm's median (interquartile range of the rounds).", "",
             "| arm | median s | speed-up | IQR of speed-up |", "|---|---|---|---|"]
    for name, ts in times.items():
        q1, _, q3 = statistics.quantiles(ts, n=4) if len(ts) > 1 else (ts[0], 0, ts[0])
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {base / statistics.median(ts):.2f}x | "
                     f"{base / q3:.2f}-{base / q1:.2f}x |")
    (out / f"{args.model}_{steps}_wall.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
