"""How much of the balanced default's margin is seed noise? The default and its neighbours per seed.

The balanced default (units + first-order Taylor, interval 3, warm-up 2) and six calibration-free
neighbours on the digits DiT (the reference model where the floor is tightest), all ten classes,
28 / 40 / 50 steps, four seeds (10 and 11 were the choosing seeds of eval/defaults.py and
eval/default_guard.py; 20 and 21 never chose anything). PSNR is the mean over the ten images of one
seed against the uncached model; quality only (exact, noise-free). About 2 minutes.

    python eval/default_seeds.py --out eval/results/default_seeds
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from cachekit import FixedIntervalConfig as F
from cachekit.evaluation import load_workload
from cachekit.evaluation.runner import applied, environment, quality, run_pass

PRESETS = {
    "default (i3 w2)": F(interval=3, warmup=2, final_steps=0, units=True, forecast="taylor"),
    "i3 w2 last step": F(interval=3, warmup=2, final_steps=1, units=True, forecast="taylor"),
    "i3 w3": F(interval=3, warmup=3, final_steps=0, units=True, forecast="taylor"),
    "i3 w4": F(interval=3, warmup=4, final_steps=0, units=True, forecast="taylor"),
    "i4 w2 last step": F(interval=4, warmup=2, final_steps=1, units=True, forecast="taylor"),
    "i3 w2 Taylor order 2": F(interval=3, warmup=2, final_steps=0, units=True, forecast="taylor", forecast_order=2),
    "i3 w2 FoCa": F(interval=3, warmup=2, final_steps=0, units=True, forecast="foca"),
    "i3 w2 stack-level": F(interval=3, warmup=2, final_steps=0, units=False, forecast="taylor"),
}
STEPS, SEEDS = (28, 40, 50), (10, 11, 20, 21)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="eval/results/default_seeds")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    command = "python eval/default_seeds.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, cells, fractions = time.time(), {}, {}
    for steps in STEPS:
        wl = load_workload("digits", steps)
        for seed in SEEDS:
            ref = run_pass(wl, list(range(10)), [seed], 10, cached=False)
            for name, cfg in PRESETS.items():
                with applied(wl.target, cfg):
                    got = run_pass(wl, list(range(10)), [seed], 10, cached=True)
                cells[name, steps, seed] = quality(wl.kind, got.outputs, ref.outputs)["psnr_mean"]
                fractions[name, steps] = got.computed_fraction
                print(f"{steps:3d} {seed} {name:22s} {cells[name, steps, seed]:.2f} dB @ {got.computed_fraction:.2f}", flush=True)
    env = environment(command)
    cols = [(s, seed) for s in STEPS for seed in SEEDS]
    lines = ["# The balanced default and its neighbours per seed on the digits DiT", "", f"Command: `{command}`  ",
             f"Device: {env['device']}; {(time.time() - t0) / 60:.1f} min. Mean PSNR of the ten classes per seed; "
             "seeds 10, 11 chose the default, 20, 21 never chose anything.", "",
             "| preset | fraction (28/40/50) | " + " | ".join(f"{s} st. s{seed}" for s, seed in cols) + " | worst |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for name in PRESETS:
        vals = [cells[name, s, seed] for s, seed in cols]
        frac = "/".join(f"{fractions[name, s]:.2f}" for s in STEPS)
        lines.append(f"| {name} | {frac} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {min(vals):.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "default_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
