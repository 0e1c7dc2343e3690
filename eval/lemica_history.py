"""How far a global schedule's edge errors are from the error of the plan itself.

An edge i -> j is weighed alone: every other step computed, and the forecast's history computed
densely on the uncached trajectory just before i. In a plan the history comes from the plan's own
earlier computed steps and the segments' errors compound. This script plans with both criteria
(minimax, min-sum) at several budgets from one edge table, then measures each plan's final-output
error on the calibration runs and on held-out runs (other seed, other inputs), beside what the
edges predicted (largest edge, summed edges).

    python eval/lemica_history.py --model digits --steps 28 --out eval/results/plans
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cachekit import api
from cachekit.evaluation import load_workload
from cachekit.evaluation.runner import environment
from cachekit.methods.schedule import ScheduleConfig
from cachekit.calibration import _error, lemica_edges
from cachekit.planning import plan_lemica
from cachekit.planning.lemica import CRITERIA


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits", choices=("digits", "video"))
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--fractions", default="0.25,0.35,0.5,0.65")
    ap.add_argument("--out", default="eval/results/plans")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    command = "python eval/lemica_history.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    wl = load_workload(args.model, args.steps)
    inputs = list(wl.default_inputs)
    calib, held = (inputs[:5], inputs[:10]) if args.model == "digits" else (inputs[:2], inputs[:4])
    runs = wl.runs(calib, [100], max(1, -(-len(calib) // 2)))
    held_runs = wl.runs(held, [0], len(held))
    t0 = time.time()
    table = lemica_edges(wl.target, runs, template=ScheduleConfig(units=True, forecast="taylor"),
                         max_skip=max(4, round(args.steps / 6)))
    held_ref = [r() for r in held_runs]
    rows = []
    for f in (float(v) for v in args.fractions.split(",")):
        for c in CRITERIA:
            plan = plan_lemica(table, fraction=f, criterion=c)
            api.apply(wl.target, plan.config)
            try:
                cal_err = float(np.mean([_error(r(), ref) for r, ref in zip(runs, table.uncached_outputs)]))
                held_err = float(np.mean([_error(r(), ref) for r, ref in zip(held_runs, held_ref)]))
            finally:
                api.remove(wl.target)
            rows.append({"fraction": f, "criterion": c, "computed": plan.computed,
                         "max_edge": plan.predicted, "sum_edges": float(np.sum(plan.edge_errors)),
                         "calibration_error": cal_err, "heldout_error": held_err})
            print(json.dumps(rows[-1]), flush=True)
    env = environment(command)
    lines = [f"# {args.model}, {args.steps} steps: a schedule's edge errors against its own error", "",
             f"Command: `{command}`  ", f"Device: {env['device']}; {(time.time() - t0) / 60:.1f} min; edges: "
             f"{table.model_calls} model calls ({table.full_calls} without shared prefixes)  ",
             f"Calibration: inputs {calib} seed 100; held-out: inputs {held} seed 0. Errors: mean absolute "
             "error of the final output against the uncached one.", "",
             "| fraction | criterion | largest edge | summed edges | plan, calibration runs | plan, held-out runs |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['fraction']} | {r['criterion']} | {r['max_edge']:.5f} | {r['sum_edges']:.5f} | "
              f"{r['calibration_error']:.5f} | {r['heldout_error']:.5f} |" for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.model}_{args.steps}_history.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
