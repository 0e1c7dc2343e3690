"""cachekit against diffusers' caches and cache-dit on a reference model, one process, same seeds.

    python eval/bench_compare.py --model digits --steps 50 28 --inputs 4 --out eval/results/compare

``--lemica-fractions`` adds global schedules (``cachekit.planning.lemica``, sub-block units with a
Taylor forecast) planned from final-output errors on the calibration seeds and the first
``--calib-inputs`` inputs; the report then has a table of PSNR at computed fractions 0.35 and 0.5
(each method's upper envelope, interpolated) against the anchors and cachekit's earlier methods.

Per step count: one uncached pass, then every cachekit config (``CACHEKIT_GRID`` or ``--cachekit``)
and every anchor setting (``eval/anchors``: FirstBlockCache, MagCache calibrated on
this model and step count, TaylorSeer, PyramidAttentionBroadcast, FasterCache, cache-dit DBCache with
and without its TaylorSeer calibrator). For every row: the computed fraction as Linear
multiply-adds inside the blocks over the uncached count (one yardstick for block-, sub-block- and
batch-level methods), cachekit's own block fraction where it applies, PSNR / SSIM against the
uncached outputs, and with ``--time`` the wall speedup (alternating passes against a same-run
baseline, median of ``--repeats`` >= 3). Anchors that cannot run on a model get a row with the reason.

Writes per model: ``<model>.csv``, ``<model>.md`` (per method the best speedup at PSNR >= 30 and
>= 35 dB; "ideal" = 1 / fraction when not timed), ``<model>_speedup_psnr.png`` and
``<model>_psnr_fraction.png`` (one panel per step count, Pareto front circled).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager

import anchors as A   # eval/anchors, beside this script
import numpy as np
import torch

from cachekit import api
from cachekit.config import CacheConfig
from cachekit.evaluation import load_workload
from cachekit.evaluation.macs import count_linear_macs
from cachekit.evaluation.report import pyplot
from cachekit.evaluation.runner import applied, quality
from cachekit.evaluation.sweep import grid_configs, pareto_front
from cachekit.evaluation.timing import Pass, alternate
from cachekit.methods.schedule import ScheduleConfig
from cachekit.calibration import measure, plan

#: method -> grid specs as ``cachekit sweep`` takes them (``sweep.grid_configs``); add a method
#: here (or pass ``--cachekit method:key=spec:...``) to put it in the comparison.
CACHEKIT_GRID: dict[str, list[dict[str, str]]] = {
    "easycache": [{"threshold": "0.05,0.1,0.15,0.2", "warmup": "3"},
                  {"threshold": "0.05,0.1,0.15", "warmup": "3", "forecast": "taylor"}],
    "fixed_interval": [{"interval": "2,3,4", "warmup": "3", "final_steps": "1"},
                       # sub-block units with a Taylor forecast, the last step forecast too
                       {"interval": "2,3,4,5", "warmup": "2", "final_steps": "0", "units": "1", "forecast": "taylor"}],
    "block_drift": [{"threshold": "0.1,0.2", "warmup": "3", "forecast": "taylor"}],
}

FIELDS = ["model", "steps", "family", "method", "params", "mac_fraction", "block_fraction", "ideal_speedup",
          "psnr", "ssim", "wall_speedup", "status"]


def parse_cachekit(specs: list[str]) -> dict[str, list[dict[str, str]]]:
    """``easycache:threshold=0.05,0.1:warmup=3`` -> {"easycache": [{"threshold": "0.05,0.1", "warmup": "3"}]}."""
    out: dict[str, list[dict[str, str]]] = {}
    for spec in specs:
        method, *pairs = spec.split(":")
        out.setdefault(method, []).append(dict(p.split("=", 1) for p in pairs))
    return out


def cachekit_configs(grid: dict[str, list[dict[str, str]]], steps: int, bac_recipes: list[str],
                     bac_updates: list[int], calibrate: Callable[[list[int]], list[CacheConfig]]) -> list[CacheConfig]:
    cfgs = [c for method, specs in grid.items() for s in specs for c in grid_configs(method, s)]
    from cachekit.recipe import load_recipe

    for path in bac_recipes:   # a BAC plan is only valid for the step count it was calibrated at
        cfg = load_recipe(path).config
        if getattr(cfg, "num_steps", None) == steps:
            cfgs.append(cfg)
    cfgs += calibrate(bac_updates)
    return cfgs


def _timed(base: Callable[[], object], row: Callable[[], object], around: Callable[[], ContextManager],
           repeats: int) -> float:
    """Wall speedup of ``row`` (inside ``around``: apply / install, untimed) over ``base``."""
    tb, tr = alternate([Pass(lambda r: base()), Pass(lambda r: row(), around=around)], max(3, repeats))
    return tb.median / tr.median


def bench_steps(model: str, steps: int, args, log) -> list[dict]:
    wl = load_workload(model, steps)
    inputs = list(wl.default_inputs)[:args.inputs]
    seeds = args.seeds
    layers = [m for b in A.block_modules(wl.target) for m in b.modules() if isinstance(m, torch.nn.Linear)]
    # Linear objects gathered once: a library that re-homes a block's module (cache-dit's DiT patch
    # shares block 0's embedding as transformer._norm1_emb) is still counted the same way.

    def generate(before: Callable[[], None] = lambda: None) -> torch.Tensor:
        outs = []
        for s in seeds:
            before()
            outs.append(wl.generate(inputs, s))
        return torch.cat(outs)

    def counted(before: Callable[[], None] = lambda: None) -> tuple[torch.Tensor, int]:
        with count_linear_macs(layers) as c:
            out = generate(before)
        return out, c.macs

    t0 = time.time()
    ref, full = counted()
    log(f"[{model} {steps} steps] uncached: {full / 1e9:.3f} GMAC over {len(inputs)} inputs x {len(seeds)} seeds "
        f"({time.time() - t0:.0f} s)")
    rows = []

    def add(family, method, params, out=None, macs=None, block_fraction=None, speed=None, status="ok"):
        row = {"model": model, "steps": steps, "family": family, "method": method,
               "params": json.dumps(params, sort_keys=True, default=str), "status": status,
               "mac_fraction": None, "block_fraction": block_fraction, "ideal_speedup": None,
               "psnr": None, "ssim": None, "wall_speedup": speed}
        if out is not None:
            q = quality(wl.kind, out, ref)
            frac = macs / full
            row.update(mac_fraction=frac, ideal_speedup=1 / frac if frac else math.inf,
                       psnr=q["psnr_mean"], ssim=q["ssim_mean"])
        rows.append(row)
        log(f"  {family:9s} {method:26s} {row['params']:70s} " + (
            f"frac {row['mac_fraction']:.3f}  PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.4f}" if out is not None
            else status))

    add("none", "uncached", {}, ref, full, 1.0)

    calib_inputs = list(wl.default_inputs)[:args.calib_inputs or args.inputs]
    # two runs per seed at least, so that ERTACache's fit is cross-validated across runs
    calib_batch = max(1, -(-len(calib_inputs) // 2))

    def calibrate_bac(updates: list[int]) -> list[CacheConfig]:
        runs = wl.runs(calib_inputs, args.calib_seeds, calib_batch)
        cfgs = [plan(rec, updates=m, top_n=4).config for rec in [measure(wl.target, runs, "bac")]
                for m in updates] if updates else []
        if args.erta_fractions:   # ERTACache plans from full runs on the same calibration seeds
            rec = measure(wl.target, runs, "ertacache")
            cfgs += [plan(rec, fraction=f).config for f in args.erta_fractions]
        if args.lemica_fractions:   # global schedules from final-output edge errors, same calibration runs
            t0 = time.time()
            edges = measure(wl.target, runs, "lemica", template=ScheduleConfig(units=True, forecast="taylor"),
                            max_skip=max(4, round(steps / 6)))
            table = edges.data
            log(f"  LeMiCa edges: {table.model_calls} model calls ({table.full_calls} without shared prefixes), "
                f"{time.time() - t0:.0f} s")
            for f in args.lemica_fractions:   # minimax or min-sum, whichever is closer on the calibration runs
                lp = plan(edges, fraction=f, refine=args.lemica_refine).plan
                log(f"  LeMiCa {f}: {lp.criterion} chosen; calibration errors "
                    f"{ {k: round(v, 6) for k, v in lp.checked.items()} }; {lp.refine_calls} model calls to choose")
                cfgs.append(lp.config)
        return cfgs

    for cfg in cachekit_configs(args.cachekit, steps, args.bac_recipe, args.bac_updates, calibrate_bac):
        fractions = []

        def stats() -> None:   # cachekit's own block fraction of the generation just finished
            fractions.append(api.stats(wl.target).computed_fraction)

        with applied(wl.target, cfg):
            with count_linear_macs(layers) as c:
                outs = []
                for s in seeds:
                    outs.append(wl.generate(inputs, s))
                    stats()
            out, macs = torch.cat(outs), c.macs
        speed = None
        if args.time:   # apply/remove around each timed pass so uncached passes really are uncached
            speed = _timed(generate, generate, lambda cfg=cfg: applied(wl.target, cfg), args.repeats)
        params = dict(cfg.to_dict().get("settings", {}))
        if "plan" in params:   # a BAC plan: summarised, not printed
            params = {"num_steps": params.get("num_steps"), "plan": f"<{len(params['plan'])} units>"}
        if "compute_steps" in params:   # a global schedule: its steps
            params = {"num_steps": params["num_steps"], "compute_steps": params["compute_steps"],
                      "units": params["units"], "forecast": params.get("forecast", "none")}
        if "coefficients" in params:   # an ERTACache plan: summarised
            params = {"num_steps": params["num_steps"], "reused": len(params["reuse_steps"]),
                      "correction": params["correction"]}
        add("cachekit", cfg.method, params, out, macs, statistics.mean(fractions), speed)

    mag = None
    try:
        mag = A.calibrate_mag_ratios(wl.target, steps, lambda: wl.generate(inputs, args.calib_seeds[0]))
        log(f"  MagCache ratios ({steps}): " + ", ".join(f"{r:.3f}" for r in mag))
    except A.AnchorUnavailable as e:
        log(f"  MagCache calibration failed: {e}")
    for anchor in A.default_anchors(mag, set(args.anchors) if args.anchors else None):
        try:
            anchor.install(wl.target, steps)
        except A.AnchorUnavailable as e:
            add(anchor.family, anchor.method, anchor.params, status=f"cannot run: {e}")
            continue
        try:
            out, macs = counted(anchor.reset)
        finally:
            anchor.remove()
        speed = None
        if args.time:
            speed = _timed_anchor(anchor, wl.target, steps, generate, args.repeats)
        add(anchor.family, anchor.method, anchor.params, out, macs, None, speed)
    return rows


def _timed_anchor(anchor, target, steps, generate, repeats) -> float:
    """Alternate uncached passes with installed passes: install/remove around each cached pass."""
    return _timed(generate, lambda: generate(anchor.reset), lambda: anchor.installed(target, steps), repeats)


# ------------------------------------------------------------------------------------------------
# reports
# ------------------------------------------------------------------------------------------------
def _label(r: dict) -> str:
    return f"{r['family']}:{r['method']}"


def _speed(r: dict) -> float:
    return r["wall_speedup"] if r["wall_speedup"] is not None else r["ideal_speedup"]


def markdown(model: str, rows: list[dict], command: str, timed: bool, versions: dict, note: str) -> str:
    kind = "wall speedup (same-run, median)" if timed else "ideal speedup (1 / MAC fraction)"
    lines = [f"# cachekit vs diffusers caches vs cache-dit: {model}", "", f"Command: `{command}`  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "  ", note, "",
             f"Speed column: {kind}. Fraction: Linear multiply-adds inside the blocks over the uncached count.", ""]
    for steps in sorted({r["steps"] for r in rows}, reverse=True):
        rs = [r for r in rows if r["steps"] == steps and r["status"] == "ok" and r["method"] != "uncached"]
        lines += [f"## {steps} steps", "", "| family | method | best at PSNR >= 30 | params | fraction | PSNR | SSIM | "
                  "best at PSNR >= 35 | params | fraction | PSNR | SSIM |", "|---|---|" + "---|" * 10]
        for fam, meth in dict.fromkeys((r["family"], r["method"]) for r in rs):
            cells = []
            for floor in (30, 35):
                ok = [r for r in rs if (r["family"], r["method"]) == (fam, meth) and r["psnr"] >= floor
                      and r["mac_fraction"] < 0.999]   # a setting that reused nothing is not a result
                if not ok:
                    cells.append("none reusing | | | | |")
                    continue
                b = max(ok, key=_speed)
                cells.append(f"{_speed(b):.2f}x{'' if timed else ' ideal'} | `{b['params']}` | {b['mac_fraction']:.3f} | "
                             f"{min(b['psnr'], 99):.2f} | {b['ssim']:.4f} |")
            lines.append(f"| {fam} | {meth} | " + " ".join(cells))
        lines += ["", "All rows:", "", "| family | method | params | MAC fraction | block fraction | PSNR | SSIM |"
                  + (" wall speedup |" if timed else ""), "|---|---|---|---|---|---|---|" + ("---|" if timed else "")]
        for r in (r for r in rows if r["steps"] == steps and r["status"] == "ok"):
            bf = "" if r["block_fraction"] is None else f"{r['block_fraction']:.3f}"
            lines.append(f"| {r['family']} | {r['method']} | `{r['params']}` | {r['mac_fraction']:.3f} | {bf} | "
                         f"{min(r['psnr'], 99):.2f} | {r['ssim']:.4f} |" +
                         (f" {r['wall_speedup']:.2f}x |" if timed and r["wall_speedup"] else (" |" if timed else "")))
        lines += equal_fraction(rs)
        cannot = [r for r in rows if r["steps"] == steps and r["status"] != "ok"]
        if cannot:
            lines += ["", "Could not run:", ""] + [f"- {r['family']} {r['method']} `{r['params']}`: "
                                                   f"{r['status'].removeprefix('cannot run: ')}" for r in cannot]
        lines.append("")
    return "\n".join(lines)


#: the other libraries' strongest caches, as the targets name them
STRONGEST_ANCHORS = (("diffusers", "TaylorSeer"), ("cache-dit", "DBCache+TaylorSeer"), ("diffusers", "MagCache"))
FRACTIONS = (0.35, 0.5)


def envelope(points: list[tuple[float, float]], f: float) -> float:
    """Best PSNR reachable at or below fraction f on the upper envelope of (fraction, PSNR) points,
    linearly interpolated between Pareto points; NaN below the cheapest point."""
    front = []
    for x, y in sorted(points):
        if not front or y > front[-1][1]:
            front.append((x, y))
    if not front or f < front[0][0]:
        return float("nan")
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if x0 <= f <= x1:
            return y0 + (y1 - y0) * (f - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)
    return front[-1][1]


def equal_fraction(rs: list[dict]) -> list[str]:
    """PSNR of every method at computed fractions 0.35 and 0.5, and the global schedule against the
    best of the strongest anchors and of cachekit's other methods."""
    groups = {}
    for r in rs:
        groups.setdefault((r["family"], r["method"]), []).append((r["mac_fraction"], min(r["psnr"], 99.0)))
    at = {k: {f: envelope(v, f) for f in FRACTIONS} for k, v in groups.items()}
    lines = ["", "PSNR at equal computed fraction (upper envelope of each method's rows, interpolated):", "",
             "| family | method | @0.35 | @0.5 |", "|---|---|---|---|"]
    lines += [f"| {fam} | {m} | " + " | ".join("-" if np.isnan(v[f]) else f"{v[f]:.2f}" for f in FRACTIONS) + " |"
              for (fam, m), v in at.items()]
    if ("cachekit", "schedule") in at:
        lines.append("")
        for f in FRACTIONS:
            new = at[("cachekit", "schedule")][f]
            rivals = [(v[f], f"{fam} {m}") for (fam, m), v in at.items()
                      if ((fam, m) in STRONGEST_ANCHORS or (fam == "cachekit" and m != "schedule")) and not np.isnan(v[f])]
            if rivals and not np.isnan(new):
                best = max(rivals)
                lines.append(f"- fraction {f}: global schedule {new:.2f} dB vs best rival {best[1]} {best[0]:.2f} dB: "
                             f"**{new - best[0]:+.2f} dB**")
    return lines


def plot(model: str, rows: list[dict], out: Path, timed: bool) -> None:
    plt = pyplot()
    steps_list = sorted({r["steps"] for r in rows}, reverse=True)
    for name, xy, xl, yl in (
            ("speedup_psnr", lambda r: (min(r["psnr"], 60.0), _speed(r)), "PSNR vs uncached (dB)",
             "wall speedup" if timed else "ideal speedup (1 / MAC fraction)"),
            ("psnr_fraction", lambda r: (r["mac_fraction"], min(r["psnr"], 60.0)), "computed fraction (Linear MACs)",
             "PSNR vs uncached (dB)")):
        fig, axes = plt.subplots(1, len(steps_list), figsize=(6.5 * len(steps_list), 4.8), squeeze=False)
        for ax, steps in zip(axes[0], steps_list):
            rs = [r for r in rows if r["steps"] == steps and r["status"] == "ok" and r["method"] != "uncached"]
            for lab in dict.fromkeys(_label(r) for r in rs):
                pts = sorted(xy(r) for r in rs if _label(r) == lab)
                style = "-o" if lab.startswith("cachekit") else ("--s" if lab.startswith("diffusers") else ":^")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=lab, ms=5)
            # Pareto in (quality up, speed up)
            q = [(min(r["psnr"], 60.0), _speed(r)) for r in rs]
            front = [rs[i] for i in pareto_front(q)]
            fp = [xy(r) for r in front]
            ax.scatter([p[0] for p in fp], [p[1] for p in fp], s=160, facecolors="none", edgecolors="k",
                       label="Pareto front")
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.set_title(f"{model}, {steps} steps")
            ax.grid(alpha=0.3)
            if name == "psnr_fraction":
                ax.axhline(30, color="grey", lw=0.8)
        axes[0][-1].legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out / f"{model}_{name}.png", dpi=90)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["digits"], choices=("digits", "video"))
    ap.add_argument("--steps", nargs="+", type=int, default=[50, 28])
    ap.add_argument("--inputs", type=int, default=4, help="first N default inputs of the model")
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    ap.add_argument("--calib-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[100],
                    help="MagCache and BAC calibration seeds (never the evaluation seeds)")
    ap.add_argument("--cachekit", action="append", default=None, metavar="METHOD:KEY=SPEC[:KEY=SPEC]",
                    help="a cachekit grid (repeatable), e.g. easycache:threshold=0.05,0.1:warmup=3; "
                         "default: CACHEKIT_GRID in this file")
    ap.add_argument("--bac-recipe", action="append", default=[], help="BAC recipe YAML (used at its num_steps)")
    ap.add_argument("--bac-updates", type=lambda s: [int(v) for v in s.split(",") if v], default=[],
                    help="calibrate BAC here with these budgets M (on --calib-seeds)")
    ap.add_argument("--erta-fractions", type=lambda s: [float(v) for v in s.split(",") if v], default=[],
                    help="calibrate ERTACache here for these computed fractions (on --calib-seeds)")
    ap.add_argument("--lemica-fractions", type=lambda s: [float(v) for v in s.split(",") if v], default=[],
                    help="plan global schedules (LeMiCa, units + Taylor) for these computed fractions (on --calib-seeds)")
    ap.add_argument("--lemica-refine", type=int, default=0,
                    help="sweeps of local search on the calibration runs after choosing a LeMiCa plan (default: 0)")
    ap.add_argument("--calib-inputs", type=int, default=None,
                    help="calibrate BAC / ERTACache / LeMiCa on the first N default inputs (default: --inputs)")
    ap.add_argument("--anchors", nargs="*", default=None, help="only these anchor methods (default: all)")
    ap.add_argument("--time", action="store_true", help="also wall-time every row (alternating, median)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="eval/results/compare")
    args = ap.parse_args()
    args.cachekit = parse_cachekit(args.cachekit) if args.cachekit else CACHEKIT_GRID
    torch.set_flush_denormal(True)   # denormals slow CPU matmuls several-fold; same for every row
    command = "python eval/bench_compare.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, **A.library_versions()}

    def log(msg: str) -> None:
        print(msg, flush=True)

    for model in args.model:
        rows = []
        for steps in args.steps:
            rows += bench_steps(model, steps, args, log)
        with open(out / f"{model}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        note = (f"Inputs: first {args.inputs} default inputs x seeds {args.seeds}; calibration: first "
                f"{args.calib_inputs or args.inputs} inputs x seeds {args.calib_seeds}; one process, same seeds and "
                f"inputs for every row.")
        (out / f"{model}.md").write_text(markdown(model, rows, command, args.time, versions, note))
        plot(model, rows, out, args.time)
        log(f"wrote {out / model}.csv/.md/_speedup_psnr.png/_psnr_fraction.png")


if __name__ == "__main__":
    main()
