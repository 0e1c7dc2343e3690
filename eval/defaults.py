"""How the calibration-free presets behind ``cachekit.apply(pipe)`` and ``quality=`` are chosen.

Candidates: fixed-interval sub-block caching with a first-order Taylor forecast (TaylorSeer's
scheme, the best calibration-free configuration at equal computed fraction on both reference
models and on the held-out ones measured so far), over interval, warm-up and whether the last step
is computed. Each candidate runs on the *choosing* set: the digits DiT (classes 0-4) and the
moving-digits Wan (two conditions), at 28 and 50 steps, one seed. Per quality level the cheapest
candidate (mean computed fraction) whose worst PSNR over those four settings clears the level's
floor plus a margin is chosen. Then the chosen presets are judged on the *judging* set: other
seeds, all ten digit classes, four video conditions (two never used to choose). Quality only
(exact, noise-free); the wall speedup is measured by ``cachekit demo`` in one run.

    python eval/defaults.py --out eval/results/defaults

Writes ``defaults.csv`` (every candidate on the choosing set, the presets on the judging set) and
``defaults.md``. The wall speedup of the shipped presets (``recipes/{fast,default,high}.yaml``) on the
judging set, each against the uncached model in the same alternating rounds (medians):

    python eval/defaults.py --wall --repeats 5 --out eval/results/defaults

writes ``defaults_wall.md`` / ``defaults_wall.csv``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cachekit import FixedIntervalConfig
from cachekit.evaluation import load_workload
from cachekit.evaluation.runner import applied, compare_many, environment, quality, run_pass
from cachekit.recipe import load_recipe

#: quality level -> PSNR floor (dB) on the reference models; the choice needs floor + MARGIN on the
#: choosing set, since a setting just over the line there tends to fall under it elsewhere
#: (high was 35 dB at first: no candidate reached 36 dB on the 28-step digits choosing setting, whose
#: best was 34.2 at interval 2; the floor was lowered on the choosing set's figures alone)
LEVELS = {"high": 33.0, "balanced": 30.0, "fast": 27.0}
MARGIN = 1.0
SETTINGS = [("digits", 28), ("digits", 50), ("video", 28), ("video", 50)]
CHOOSE = {"digits": ([0, 1, 2, 3, 4], [10]), "video": (["zero:up", "one:down"], [10])}
JUDGE = {"digits": (list(range(10)), [20]), "video": (["zero:up", "one:down", "four:left", "seven:right"], [20])}


def candidates() -> list[FixedIntervalConfig]:
    return [FixedIntervalConfig(interval=i, warmup=w, final_steps=f, units=True, forecast="taylor")
            for i, w, f in itertools.product((2, 3, 4, 5), (1, 2, 3), (0, 1))]


def score(cfgs, which: dict, workloads: dict) -> list[dict]:
    rows = []
    for model, steps in SETTINGS:
        wl = workloads[(model, steps)]
        inputs, seeds = which[model]
        ref = run_pass(wl, inputs, seeds, len(inputs), cached=False)
        for cfg in cfgs:
            with applied(wl.target, cfg):
                got = run_pass(wl, inputs, seeds, len(inputs), cached=True)
            q = quality(wl.kind, got.outputs, ref.outputs)
            rows.append({"model": model, "steps": steps, "interval": cfg.interval, "warmup": cfg.warmup,
                         "final_steps": cfg.final_steps, "fraction": got.computed_fraction, "psnr": q["psnr_mean"],
                         "ssim": q["ssim_mean"]})
            print(f"{model:6s} {steps:3d} {cfg.interval} {cfg.warmup} {cfg.final_steps}  fraction "
                  f"{got.computed_fraction:.3f}  PSNR {q['psnr_mean']:6.2f}", flush=True)
    return rows


def key(r: dict) -> tuple:
    return (r["interval"], r["warmup"], r["final_steps"])


def choose(rows: list[dict]) -> dict[str, tuple]:
    by = {}
    for r in rows:
        by.setdefault(key(r), []).append(r)
    out = {}
    for level, floor in LEVELS.items():
        ok = [(np.mean([r["fraction"] for r in rs]), -min(r["psnr"] for r in rs), k) for k, rs in by.items()
              if min(r["psnr"] for r in rs) >= floor + MARGIN]
        out[level] = min(ok)[2] if ok else None
    return out


PRESETS = {"fast": "fast", "balanced": "default", "high": "high"}   # quality= level -> packaged recipe


def wall(workloads: dict, repeats: int, out: Path, command: str, t0: float) -> int:
    """Same-run wall speedups of the shipped presets on the judging set (``--wall``)."""
    configs = {lv: load_recipe(name).config for lv, name in PRESETS.items()}
    rows = []
    for model, steps in SETTINGS:
        inputs, seeds = JUDGE[model]
        res = compare_many(workloads[(model, steps)], list(configs.values()), inputs, seeds, len(inputs), repeats)
        ref = res["ref"].outputs
        for lv, r in zip(configs, res["results"]):
            q = quality(workloads[(model, steps)].kind, r["cached"].outputs, ref)
            sp = r["speed"]
            rows.append({"model": model, "steps": steps, "level": lv, "fraction": round(sp["computed_fraction"], 3),
                         "psnr": round(q["psnr_mean"], 2), "uncached_s": round(sp["uncached_s"], 3),
                         "cached_s": round(sp["cached_s"], 3), "speedup": round(sp["speedup"], 3),
                         "ideal": round(sp["ideal_speedup"], 3)})
            print(f"{model:6s} {steps:3d} {lv:8s} fraction {sp['computed_fraction']:.3f}  PSNR {q['psnr_mean']:6.2f}  "
                  f"{sp['speedup']:.2f}x (ideal {sp['ideal_speedup']:.2f}x)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "defaults_wall.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    env = environment(command)
    lines = ["# Shipped presets: wall speedup and PSNR on the judging set, same run", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {(time.time() - t0) / 60:.1f} min; "
             f"medians of {repeats} alternating rounds, each preset against the uncached model of its round.  ",
             f"Judging set: digits classes 0-9 seeds {JUDGE['digits'][1]}; video {JUDGE['video'][0]} seeds "
             f"{JUDGE['video'][1]}.", "",
             "| quality= | " + " | ".join(f"{m} {s} steps" for m, s in SETTINGS) + " |", "|---|" + "---|" * len(SETTINGS)]
    for lv in configs:
        cells = [next(f"{r['speedup']:.2f}x, {r['psnr']:.2f} dB @ {r['fraction']:.2f}" for r in rows
                      if (r["model"], r["steps"], r["level"]) == (m, s, lv)) for m, s in SETTINGS]
        lines.append(f"| {lv} | " + " | ".join(cells) + " |")
    (out / "defaults_wall.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="eval/results/defaults")
    ap.add_argument("--wall", action="store_true", help="time the shipped presets instead of choosing them")
    ap.add_argument("--repeats", type=int, default=5, help="alternating timed rounds (--wall)")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    command = "python eval/defaults.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.time()
    workloads = {(m, s): load_workload(m, s) for m, s in SETTINGS}
    if args.wall:
        return wall(workloads, args.repeats, Path(args.out), command, t0)
    chosen_rows = score(candidates(), CHOOSE, workloads)
    chosen = choose(chosen_rows)
    presets = {lv: FixedIntervalConfig(interval=k[0], warmup=k[1], final_steps=k[2], units=True, forecast="taylor")
               for lv, k in chosen.items() if k is not None}
    judged = score(list(presets.values()), JUDGE, workloads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "defaults.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["set", *chosen_rows[0]])
        w.writeheader()
        w.writerows([{"set": "choose", **r} for r in chosen_rows] + [{"set": "judge", **r} for r in judged])
    env = environment(command)
    lines = ["# Calibration-free presets: chosen on one set, judged on another", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {(time.time() - t0) / 60:.1f} min  ",
             f"Choosing set: digits classes {CHOOSE['digits'][0]} seeds {CHOOSE['digits'][1]}; video "
             f"{CHOOSE['video'][0]} seeds {CHOOSE['video'][1]}. Judging set: digits classes 0-9 seeds "
             f"{JUDGE['digits'][1]}; video {JUDGE['video'][0]} seeds {JUDGE['video'][1]}.  ",
             f"Rule: cheapest mean computed fraction with worst PSNR >= floor + {MARGIN} dB on the choosing set.", "",
             "| level | floor | preset (units + Taylor) | " + " | ".join(f"{m} {s}" for m, s in SETTINGS) + " |",
             "|---|---|---|" + "---|" * len(SETTINGS)]
    for lv, cfg in presets.items():
        cells = []
        for m, s in SETTINGS:
            r = next(r for r in judged if (r["model"], r["steps"]) == (m, s) and key(r) == chosen[lv])
            cells.append(f"{r['psnr']:.2f} dB @ {r['fraction']:.2f}")
        lines.append(f"| {lv} | {LEVELS[lv]:.0f} dB | interval {cfg.interval}, warmup {cfg.warmup}, final_steps "
                     f"{cfg.final_steps} | " + " | ".join(cells) + " |")
    for lv in LEVELS:
        if chosen[lv] is None:
            lines.append(f"\n{lv}: no candidate cleared {LEVELS[lv] + MARGIN} dB on every choosing setting")
    (out / "defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
