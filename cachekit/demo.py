"""``cachekit demo``: a shipped reference model (the digits DiT by default, or the moving-digits Wan
video model), uncached vs its recipe, same seeds, same process.

A third column, the best other-library cache on that model, is timed in the same alternating
rounds when the repository's ``eval/anchors`` adapters are beside this install (a checkout or an
editable install) and the other library imports; otherwise it is skipped with one line saying why.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .evaluation import Pass, evaluate
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


#: Where the anchor adapters live: the repository's eval/ folder, not this package.
ANCHORS_DIR = Path(__file__).resolve().parents[1] / "eval" / "anchors"


def load_anchors(path: Path | None = None) -> tuple[ModuleType | None, str]:
    """The ``eval/anchors`` package of the repository beside this install (or at ``path``), or
    (None, why not)."""
    path = ANCHORS_DIR if path is None else Path(path)
    init = path / "__init__.py"
    if not init.is_file():
        return None, f"{path} not found (the comparison needs a checkout of the repository)"
    name = "_cachekit_eval_anchors"
    if name in sys.modules:
        return sys.modules[name], ""
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        del sys.modules[name]
        return None, f"cannot import the anchor adapters ({e})"
    return module, ""


def _anchor_pass(model: str, workload: Any, inputs: Any, steps: int) -> tuple[dict, Pass | None]:
    """The model's best anchor as a pass for the timing loop (install / remove around each round),
    or why it cannot run."""
    A, why = load_anchors()
    family, method, params = DEMO_ANCHORS[model]
    if A is None:
        return {"label": f"{family} {method}", "error": why}, None
    grid = A.DIFFUSERS_GRID if family == "diffusers" else A.CACHE_DIT_GRID
    anchor = grid[method][0](family, method, dict(params))
    label = f"{family} {anchor.label}"
    try:   # refused here (not inside the timing loop) when it cannot run on this model
        anchor.install(workload.target, steps)
        anchor.remove()
    except A.AnchorUnavailable as e:
        return {"label": label, "error": str(e)}, None

    def body(_round: int) -> torch.Tensor:
        anchor.reset()
        return workload.generate(inputs, DEMO_SEEDS[0])

    return {"label": label}, Pass(body, around=lambda: anchor.installed(workload.target, steps))


def run_demo(out: str = "cachekit-demo", steps: int = 50, repeats: int = 3, recipe: str | None = None,
             model: str = "digits") -> int:
    """Run the demo and print its table. Process settings are the caller's: the ``cachekit`` command
    flushes denormal floats (they slow CPU matmuls several-fold late in sampling)."""
    if model not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {model!r}; choose from {sorted(DEMO_MODELS)}")
    factory, title, unit, metric_rows = DEMO_MODELS[model]
    recipe = recipe or model
    workload = factory(steps)
    config = load_recipe(recipe).config
    anchor, anchor_pass = _anchor_pass(model, workload, workload.default_inputs, steps) \
        if model in DEMO_ANCHORS else (None, None)
    rep = evaluate(workload, config, workload.default_inputs, DEMO_SEEDS, batch_size=len(workload.default_inputs),
                   repeats=repeats, out_dir=out, extra={"anchor": anchor_pass} if anchor_pass else None)
    sp, q = rep["speed"], rep["quality"]
    if anchor_pass is not None:
        from .evaluation.runner import quality

        timed = rep["_extra"]["anchor"]
        aq = quality(workload.kind, timed.first, rep["_outputs"]["uncached"])
        anchor.update(seconds=timed.median, psnr=aq["psnr_mean"], ssim=aq["ssim_mean"])
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
            extra = ["best anchor", "skipped", "", "", "", ""]
        else:
            ap = "inf" if math.isinf(anchor["psnr"]) else f"{anchor['psnr']:.2f} dB"
            extra = ["best anchor", f"{anchor['seconds']:.2f} s", f"{sp['uncached_s'] / anchor['seconds']:.2f}x",
                     "-", ap, f"{anchor['ssim']:.4f}"]
        rows = [(*r, extra[i] if i < len(extra) else "") for i, r in enumerate(rows)]
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\ncachekit demo: {title}, recipe '{recipe}': {config}")
    if anchor is not None:
        print(f"best anchor (other libraries, eval/results/compare/{model}.md): {anchor['label']}"
              + (f": skipped: {anchor['error']}" if "error" in anchor else ""))
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in width))
    print(f"\nwrote {out}/samples.png (uncached top, cached bottom), {out}/plan.png (calls x blocks), "
          f"{out}/report.md, {out}/report.json")
    return 0
