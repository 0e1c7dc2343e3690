"""``cachekit tune``: the fastest settings that keep a quality target, written as a recipe.

1. Calibration: one uncached pass on the calibration inputs, then one cached pass per candidate
   setting. Speed is ranked by the computed fraction of block evaluations (exact, noise-free on a
   busy machine), quality by PSNR / SSIM against the uncached outputs.
2. Validation: the cheapest passing candidates, in order, are re-run on held-out inputs with timed,
   alternating repeats; the first that still passes wins (a setting tuned on the same inputs it is
   judged on would overfit them). After a miss, later candidates must clear the target on
   calibration by the PSNR drop just seen, so attempts are not spent on near-identical settings.
3. The winner is written as a recipe YAML with the measured figures, the inputs and the command.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Sequence

from ..adapters import find_model
from ..config import CacheConfig, config_classes
from ..recipe import save_recipe
from .runner import applied, compare, environment, quality, run_pass
from .workloads import Workload

SEARCH_SPACES: dict[str, dict[str, list]] = {
    # threshold spans EasyCache's published 0.025-0.05 defaults and beyond, roughly geometric
    "easycache": {"threshold": [0.02, 0.05, 0.1, 0.15, 0.2], "warmup": [2], "forecast": ["none", "taylor"]},
    # units: sub-block outputs re-modulated each step (with taylor: TaylorSeer's scheme); on DDIM
    # the last step forecast (final_steps 0) beat computing it on the digits DiT (38.3 vs 35.9 dB)
    "fixed_interval": {"interval": [2, 3, 4, 5], "warmup": [2], "final_steps": [0, 1], "units": [False, True],
                       "forecast": ["none", "taylor"]},
    # cache-dit's default threshold 0.08 in the middle of the grid
    "block_drift": {"threshold": [0.05, 0.1, 0.2, 0.3], "fn": [1], "warmup": [2], "forecast": ["none", "taylor"]},
    # calibrated on the calibration inputs first (full runs), one plan per computed fraction
    "ertacache": {"fraction": [0.25, 0.35, 0.5, 0.65]},
    # global schedules from final-output edge errors (units + Taylor); the costliest calibration:
    # about (max_skip - 1) x steps / 2 generations per calibration run (prefixes replayed)
    "lemica": {"fraction": [0.25, 0.35, 0.5, 0.65]},
}
CALIBRATED = ("ertacache", "lemica")


class TuneFailed(RuntimeError):
    """No candidate met the target on the held-out inputs."""


def candidates(methods: Sequence[str], steps: int | None) -> list[CacheConfig]:
    out = []
    classes = config_classes()
    for m in methods:
        if m in CALIBRATED:
            continue  # made by ``calibrated_candidates`` from full runs
        space = SEARCH_SPACES[m]
        keys = list(space)
        for combo in itertools.product(*(space[k] for k in keys)):
            settings = dict(zip(keys, combo))
            if steps is not None and settings.get("warmup", 0) >= steps:
                continue   # warm-up covering every step is the uncached run
            out.append(classes[m](**settings))
    return out


def calibrated_candidates(workload: Workload, methods: Sequence[str], inputs: Sequence, seeds: Sequence[int],
                          batch_size: int) -> list[CacheConfig]:
    """ERTACache plans and LeMiCa schedules made from runs of the calibration inputs (never the
    held-out ones)."""
    from ..calibration import measure, plan

    runs = workload.runs(inputs, seeds, batch_size)
    out: list[CacheConfig] = []
    if "ertacache" in methods:
        rec = measure(workload.target, runs, "ertacache")
        out += [plan(rec, fraction=f).config for f in SEARCH_SPACES["ertacache"]["fraction"]]
    if "lemica" in methods:
        steps = workload.steps or 50
        table = measure(workload.target, runs, "lemica", max_skip=max(4, round(steps / 6)))
        out += [plan(table, fraction=f).config for f in SEARCH_SPACES["lemica"]["fraction"]]
    return out


def _passes(q: dict, target_psnr: float | None, max_ssim_drop: float | None) -> bool:
    ok = True
    if target_psnr is not None:
        ok &= q["psnr_mean"] >= target_psnr
    if max_ssim_drop is not None:
        ok &= (1.0 - q["ssim_mean"]) <= max_ssim_drop
    return bool(ok)


def tune(workload: Workload, methods: Sequence[str], calib_inputs: Sequence, calib_seeds: Sequence[int],
         holdout_inputs: Sequence, holdout_seeds: Sequence[int], *, target_psnr: float | None,
         max_ssim_drop: float | None, batch_size: int, repeats: int, out: str | Path,
         attempts: int = 3, progress: bool = True, command: str | None = None) -> dict:
    from tqdm.auto import tqdm

    if target_psnr is None and max_ssim_drop is None:
        raise ValueError("give a quality target: --target-psnr and/or --max-ssim-drop")
    cands = candidates(methods, workload.steps) + calibrated_candidates(workload, methods, calib_inputs,
                                                                         calib_seeds, batch_size)
    ref = run_pass(workload, calib_inputs, calib_seeds, batch_size, cached=False)
    scored = []
    for cfg in tqdm(cands, desc="tune: calibration", disable=not progress, unit="setting"):
        with applied(workload.target, cfg):
            got = run_pass(workload, calib_inputs, calib_seeds, batch_size, cached=True)
        q = quality(workload.kind, got.outputs, ref.outputs)
        scored.append({"config": cfg, "computed_fraction": got.computed_fraction,
                       "psnr_mean": q["psnr_mean"], "ssim_mean": q["ssim_mean"],
                       "passes": _passes(q, target_psnr, max_ssim_drop)})
    passing = sorted((s for s in scored if s["passes"]), key=lambda s: (s["computed_fraction"], -s["psnr_mean"]))
    passing = [s for s in passing if s["computed_fraction"] < 1.0]
    log = {"calibration": [_row(s) for s in scored], "validation": []}
    winner, margin, tried = None, 0.0, 0
    for s in passing:
        # After a held-out miss, demand that much more calibration PSNR from the next candidate:
        # candidates just over the line on calibration inputs tend to miss the same way.
        if tried >= attempts:
            break
        if target_psnr is not None and s["psnr_mean"] < target_psnr + margin:
            continue
        tried += 1
        res = compare(workload, s["config"], holdout_inputs, holdout_seeds, batch_size, repeats)
        q = quality(workload.kind, res["cached"].outputs, res["ref"].outputs)
        v = {**_row(s), "holdout": {"speedup": res["speed"]["speedup"],
                                    "computed_fraction": res["speed"]["computed_fraction"],
                                    "psnr_mean": q["psnr_mean"], "ssim_mean": q["ssim_mean"],
                                    "passes": _passes(q, target_psnr, max_ssim_drop)}}
        log["validation"].append(v)
        if v["holdout"]["passes"]:
            winner = (s, v)
            break
        if target_psnr is not None:
            margin = max(margin, s["psnr_mean"] - q["psnr_mean"])   # calibration-to-held-out drop
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".tune.json")
    env = environment(command)
    from .report import plain

    log_path.write_text(json.dumps(plain({"target_psnr": target_psnr, "max_ssim_drop": max_ssim_drop,
                                           "environment": env, **log}), indent=2))
    if winner is None:
        best = max(scored, key=lambda s: s["psnr_mean"] if s["computed_fraction"] < 1 else -math.inf)
        raise TuneFailed(f"no setting met the target on {'held-out' if passing else 'calibration'} inputs "
                         f"(best calibration PSNR {best['psnr_mean']:.2f} dB with {best['config']}); see {log_path}")
    s, v = winner
    model_cls = type(find_model(workload.target)[0]).__name__
    measured = {
        "target": {"psnr_min_db": target_psnr, "ssim_drop_max": max_ssim_drop},
        "calibration": {"inputs": [str(i) for i in calib_inputs], "seeds": list(calib_seeds),
                        "computed_fraction": s["computed_fraction"], "psnr_mean": s["psnr_mean"],
                        "ssim_mean": s["ssim_mean"]},
        "holdout": {"inputs": [str(i) for i in holdout_inputs], "seeds": list(holdout_seeds), **{
            k: v["holdout"][k] for k in ("speedup", "computed_fraction", "psnr_mean", "ssim_mean")}},
        "steps": workload.steps, "model": workload.name, "device": env["device"],
    }
    save_recipe(s["config"], out, models=(model_cls,), measured=plain(measured),
                source=f"measured by `{env['command']}` on {workload.name} ({env['device']})",
                notes=f"fastest of {len(cands)} candidate settings meeting the target on calibration "
                      f"inputs that also met it on held-out inputs; log: {log_path.name}")
    return {"config": s["config"], "measured": measured, "recipe": str(out), "log": str(log_path)}


def _row(s: dict) -> dict:
    return {"method": s["config"].method, "settings": dataclasses.asdict(s["config"]),
            "computed_fraction": s["computed_fraction"], "psnr_mean": s["psnr_mean"],
            "ssim_mean": s["ssim_mean"], "passes": s["passes"]}
