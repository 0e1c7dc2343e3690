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


#: The best other-library cache on each demo model (highest ideal speedup at PSNR >= 30 dB, 50 steps)
#: in ``eval/results/compare/<model>.md`` (``python eval/bench_compare.py --model <model> ...``):
#: the demo times it in the same run as cachekit's recipe, so a newcomer sees where we stand.
DEMO_ANCHORS = {
    "digits": ("diffusers", "TaylorSeer", {"cache_interval": 3, "max_order": 1, "warmup": 3, "identifiers": "attn+ffn"}),
    "video": ("diffusers", "TaylorSeer", {"cache_interval": 5, "max_order": 1, "warmup": 3, "identifiers": "attn+ffn"}),
}


def _anchor_row(model: str, workload, inputs, uncached: torch.Tensor, steps: int, repeats: int) -> dict:
    """Time and score the model's best anchor: one warm-up pass, then ``repeats`` timed passes."""
    import statistics
    import time

    from .evaluation import anchors as A
    from .evaluation.runner import quality

    family, method, params = DEMO_ANCHORS[model]
    grid = A.DIFFUSERS_GRID if family == "diffusers" else A.CACHE_DIT_GRID
    anchor = grid[method][0](family, method, dict(params))
    label = f"{family} {anchor.label}"
    try:
        anchor.install(workload.target, steps)
    except A.AnchorUnavailable as e:
        return {"label": label, "error": str(e)}
    try:
        times, out = [], None
        for i in range(repeats + 1):
            anchor.reset()
            t0 = time.perf_counter()
            out = workload.generate(inputs, DEMO_SEEDS[0])
            if i:
                times.append(time.perf_counter() - t0)
    finally:
        anchor.remove()
    q = quality(workload.kind, out, uncached)
    return {"label": label, "seconds": statistics.median(times), "psnr": q["psnr_mean"], "ssim": q["ssim_mean"]}


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
    anchor = _anchor_row(model, workload, workload.default_inputs, rep["_outputs"]["uncached"], steps, repeats) \
        if model in DEMO_ANCHORS else None
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
    if anchor is not None:   # one more column: the best other-library cache, same run, same inputs
        if "error" in anchor:
            extra = ["best anchor", "cannot run", "", "", "", ""]
        else:
            ap = "inf" if math.isinf(anchor["psnr"]) else f"{anchor['psnr']:.2f} dB"
            extra = ["best anchor", f"{anchor['seconds']:.2f} s", f"{sp['uncached_s'] / anchor['seconds']:.2f}x",
                     "-", ap, f"{anchor['ssim']:.4f}"]
        rows = [(*r, extra[i] if i < len(extra) else "") for i, r in enumerate(rows)]
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\ncachekit demo: {title}, recipe '{recipe}': {config}")
    if anchor is not None:
        print(f"best anchor (other libraries, eval/results/compare/{model}.md): {anchor['label']}"
              + (f": {anchor['error']}" if "error" in anchor else ""))
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in width))
    print(f"\nwrote {out}/samples.png (uncached top, cached bottom), {out}/plan.png (calls x blocks), "
          f"{out}/report.md, {out}/report.json")
    return 0
