"""``cachekit demo``: the shipped digits DiT, uncached vs its recipe, same seeds, same process."""

from __future__ import annotations

import math

import torch

from .evaluation import evaluate
from .evaluation.reference_models import digits_workload
from .recipe import load_recipe

DEMO_SEEDS = (0,)   # x 20 labels (2 of each digit) = 20 samples per run: about a minute on 2 cores


def run_demo(out: str = "cachekit-demo", steps: int = 50, repeats: int = 3, recipe: str = "digits") -> int:
    # Denormal floats slow CPU matmuls several-fold late in sampling; flushing them applies to both
    # runs alike (it is this process's setting, as in our training scripts).
    torch.set_flush_denormal(True)
    workload = digits_workload(steps)
    config = load_recipe(recipe).config
    rep = evaluate(workload, config, workload.default_inputs, DEMO_SEEDS,
                   batch_size=len(workload.default_inputs), repeats=repeats, out_dir=out)
    sp, q, rec = rep["speed"], rep["quality"], rep["extra"]["class recognition"]
    n = len(workload.default_inputs) * len(DEMO_SEEDS)
    psnr = "inf" if math.isinf(q["psnr_mean"]) else f"{q['psnr_mean']:.2f} dB"
    rows = [
        ("", "uncached", f"cached ({config.method})"),
        (f"wall time, {n} samples x {steps} steps (median of {repeats})", f"{sp['uncached_s']:.2f} s", f"{sp['cached_s']:.2f} s"),
        ("speedup", "1.00x", f"{sp['speedup']:.2f}x"),
        ("computed fraction of block evaluations", "1.000", f"{sp['computed_fraction']:.3f}"),
        ("PSNR vs uncached", "inf", psnr),
        ("SSIM vs uncached", "1.0000", f"{q['ssim_mean']:.4f}"),
        ("class recognised (classifier on real digits)", f"{rec['uncached']:.1%}", f"{rec['cached']:.1%}"),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\ncachekit demo: digits reference DiT, recipe '{recipe}': {config}")
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, width)))
        if i == 0:
            print("  ".join("-" * w for w in width))
    print(f"\nwrote {out}/samples.png (uncached top, cached bottom), {out}/plan.png (steps x blocks), "
          f"{out}/report.md, {out}/report.json")
    return 0
