"""``cachekit demo``: a shipped reference model (the digits DiT by default, or the moving-digits Wan
video model), uncached vs its recipe, same seeds, same process."""

from __future__ import annotations

import math

import torch

from .evaluation import evaluate
from .evaluation.reference_models import digits_workload, video_workload
from .recipe import load_recipe

DEMO_SEEDS = (0,)   # x 20 labels (2 of each digit) = 20 samples per run: about a minute on 2 cores

#: model -> (workload factory, what it is, what one output is called, table row of each quality metric)
DEMO_MODELS = {
    "digits": (digits_workload, "digits reference DiT", "samples",
               {"class recognition": "class recognised (classifier on real digits)"}),
    "video": (video_workload, "moving-digits Wan video model", "clips",
              {"content recovered": "digit recognised (classifier on real digits)",
               "direction recovered": "direction recovered (ink centroid track)",
               "both recovered": "both right"}),
}


def run_demo(out: str = "cachekit-demo", steps: int = 50, repeats: int = 3, recipe: str | None = None,
             model: str = "digits") -> int:
    # Denormal floats slow CPU matmuls several-fold late in sampling; flushing them applies to both
    # runs alike (it is this process's setting, as in our training scripts).
    torch.set_flush_denormal(True)
    if model not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {model!r}; choose from {sorted(DEMO_MODELS)}")
    factory, title, unit, metric_rows = DEMO_MODELS[model]
    recipe = recipe or model
    workload = factory(steps)
    config = load_recipe(recipe).config
    rep = evaluate(workload, config, workload.default_inputs, DEMO_SEEDS,
                   batch_size=len(workload.default_inputs), repeats=repeats, out_dir=out)
    sp, q = rep["speed"], rep["quality"]
    n = len(workload.default_inputs) * len(DEMO_SEEDS)
    psnr = "inf" if math.isinf(q["psnr_mean"]) else f"{q['psnr_mean']:.2f} dB"
    rows = [
        ("", "uncached", f"cached ({config.method})"),
        (f"wall time, {n} {unit} x {steps} steps (median of {repeats})", f"{sp['uncached_s']:.2f} s", f"{sp['cached_s']:.2f} s"),
        ("speedup", "1.00x", f"{sp['speedup']:.2f}x"),
        ("computed fraction of block evaluations", "1.000", f"{sp['computed_fraction']:.3f}"),
        ("PSNR vs uncached", "inf", psnr),
        ("SSIM vs uncached", "1.0000", f"{q['ssim_mean']:.4f}"),
    ]
    rows += [(metric_rows.get(name, name), f"{v['uncached']:.1%}", f"{v['cached']:.1%}") for name, v in rep["extra"].items()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\ncachekit demo: {title}, recipe '{recipe}': {config}")
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, width)))
        if i == 0:
            print("  ".join("-" * w for w in width))
    print(f"\nwrote {out}/samples.png (uncached top, cached bottom), {out}/plan.png (calls x blocks), "
          f"{out}/report.md, {out}/report.json")
    return 0
