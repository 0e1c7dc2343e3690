"""``cachekit demo``: a shipped reference model (the digits DiT by default, or the moving-digits Wan
video model), uncached vs ``cachekit.apply(pipe)`` with no config vs the model's recipe, same seeds,
same process.

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


def _default_pass(workload: Any, inputs: Any) -> tuple[Any, dict, Pass]:
    """``cachekit.apply(pipe)`` with no config, as one more pass of the timing loop."""
    from . import api
    from .evaluation.runner import applied
    from .recipe import recipe_for_model
    from .adapters import find_model

    config = recipe_for_model(type(find_model(workload.target)[0]).__name__).config
    info: dict = {}

    def body(_round: int) -> torch.Tensor:
        out = workload.generate(inputs, DEMO_SEEDS[0])
        info["fraction"] = api.stats(workload.target).computed_fraction
        return out

    return config, info, Pass(body, around=lambda: applied(workload.target, config))


def run_demo(out: str = "cachekit-demo", steps: int = 50, repeats: int = 3, recipe: str | None = None,
             model: str = "digits") -> int:
    """Run the demo and print its table: uncached, ``cachekit.apply(pipe)`` with no config, the
    model's recipe, and the best other-library cache, all timed in the same alternating rounds.
    Process settings are the caller's: the ``cachekit`` command flushes denormal floats (they slow
    CPU matmuls several-fold late in sampling)."""
    if model not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {model!r}; choose from {sorted(DEMO_MODELS)}")
    factory, title, unit, metric_rows = DEMO_MODELS[model]
    recipe = recipe or model
    workload = factory(steps)
    config = load_recipe(recipe).config
    inputs = workload.default_inputs
    default_cfg, default_info, default_pass = _default_pass(workload, inputs)
    extra = {"default": default_pass}
    anchor, anchor_pass = _anchor_pass(model, workload, inputs, steps) if model in DEMO_ANCHORS else (None, None)
    if anchor_pass is not None:
        extra["anchor"] = anchor_pass
    rep = evaluate(workload, config, inputs, DEMO_SEEDS, batch_size=len(inputs), repeats=repeats, out_dir=out,
                   extra=extra)
    from .evaluation.runner import quality

    sp, q, uncached = rep["speed"], rep["quality"], rep["_outputs"]["uncached"]
    timed = rep["_extra"]
    dq = quality(workload.kind, timed["default"].first, uncached)
    if anchor_pass is not None:
        aq = quality(workload.kind, timed["anchor"].first, uncached)
        anchor.update(seconds=timed["anchor"].median, psnr=aq["psnr_mean"], ssim=aq["ssim_mean"])
    n = len(inputs) * len(DEMO_SEEDS)

    def db(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.2f} dB"

    d_s = timed["default"].median
    cols = [
        ("", "uncached", "cachekit.apply(pipe)", f"recipe '{recipe}'"),
        (f"wall time, {n} {unit} x {steps} steps (median of {repeats})", f"{sp['uncached_s']:.2f} s", f"{d_s:.2f} s",
         f"{sp['cached_s']:.2f} s"),
        ("speedup", "1.00x", f"{sp['uncached_s'] / d_s:.2f}x", f"{sp['speedup']:.2f}x"),
        ("computed fraction of block evaluations", "1.000", f"{default_info['fraction']:.3f}",
         f"{sp['computed_fraction']:.3f}"),
        ("PSNR vs uncached", "inf", db(dq["psnr_mean"]), db(q["psnr_mean"])),
        ("SSIM vs uncached", "1.0000", f"{dq['ssim_mean']:.4f}", f"{q['ssim_mean']:.4f}"),
    ]
    if workload.extra_metrics is not None:
        dm = workload.extra_metrics(timed["default"].first, inputs)
        cols += [(metric_rows.get(k, k), f"{v['uncached']:.1%}", f"{dm[k]:.1%}", f"{v['cached']:.1%}")
                 for k, v in rep["extra"].items()]
    if anchor is not None:   # one more column: the best other-library cache, same run, same inputs
        if "error" in anchor:
            more = ["best anchor", "skipped", "", "", "", ""]
        else:
            more = ["best anchor", f"{anchor['seconds']:.2f} s", f"{sp['uncached_s'] / anchor['seconds']:.2f}x",
                    "-", db(anchor["psnr"]), f"{anchor['ssim']:.4f}"]
        cols = [(*r, more[i] if i < len(more) else "") for i, r in enumerate(cols)]
    width = [max(len(r[i]) for r in cols) for i in range(len(cols[0]))]
    print(f"\ncachekit demo: {title}")
    print(f"  cachekit.apply(pipe): {default_cfg}")
    print(f"  recipe '{recipe}': {config}")
    if anchor is not None:
        print(f"  best anchor (other libraries, eval/results/compare/{model}.md): {anchor['label']}"
              + (f": skipped: {anchor['error']}" if "error" in anchor else ""))
    print()
    for i, r in enumerate(cols):
        print("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in width))
    if anchor is not None and "error" not in anchor:
        print("\n" + verdict(("cachekit.apply(pipe)", sp["uncached_s"] / d_s, dq["psnr_mean"]),
                             (f"recipe '{recipe}'", sp["speedup"], q["psnr_mean"]),
                             ("the best anchor", sp["uncached_s"] / anchor["seconds"], anchor["psnr"])))
    print(f"\nwrote {out}/samples.png (uncached top, recipe bottom), {out}/plan.png (calls x blocks), "
          f"{out}/report.md, {out}/report.json")
    return 0


def verdict(*columns: tuple[str, float, float]) -> str:
    """One plain sentence: which cachekit column beats the anchor (the last column) on both speed and
    PSNR, or where it falls short. Speed within 3% counts as equal (run-to-run noise here)."""
    (*ours, (aname, aspeed, apsnr)) = columns
    lines = []
    for name, speed, psnr in ours:
        faster = speed >= aspeed * 0.97
        better = psnr >= apsnr
        if faster and better:
            lines.append(f"{name} beats {aname}: {speed:.2f}x vs {aspeed:.2f}x at {psnr:.2f} vs {apsnr:.2f} dB.")
        else:
            why = [] if faster else [f"slower ({speed:.2f}x vs {aspeed:.2f}x)"]
            why += [] if better else [f"{apsnr - psnr:.2f} dB lower PSNR ({psnr:.2f} vs {apsnr:.2f})"]
            lines.append(f"{name} does not beat {aname}: " + " and ".join(why) + ".")
    return "\n".join(lines)
