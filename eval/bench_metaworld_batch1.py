"""Batch-1 prediction time of the calibration-free rows of ``eval/bench_metaworld.py``, same rounds.

    python eval/bench_metaworld_batch1.py --env metaworld:push-v3 --policy reference_weights/metaworld_push_policy \\
        --out eval/results/policy_metaworld/push-v3

For a run that was stopped before its own batch-1 timing (``eval/salvage_metaworld_log.py``): the
uncached policy and the uniform plans (whole stack every N, units + Taylor every N, BAC's runtime
with every unit every N-th step) alternate in the same rounds (``timing.alternate``), median of
``--repeats``, on one real observation (the first scene of episode seed 10000). The rows of
PREFIX.json with the same labels get the times; PREFIX.md / .csv are rewritten.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metaworld import batch1_times, first_scenes, nth, write  # noqa: E402

import cachekit  # noqa: E402
from cachekit import BACConfig, FixedIntervalConfig  # noqa: E402
from cachekit.evaluation.tasks import metaworld as mw  # noqa: E402
from cachekit.reference.policy import load_policy  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--fractions", default="0.2,0.1")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=0,
                    help="also time one prediction over this many real scenes (seeds 10000..), same rounds: "
                         "compute-bound like the batched closed loop, without its row-to-row machine drift")
    ap.add_argument("--batched-only", action="store_true",
                    help="keep the rows' batch-1 times (a finished run measured them with every config) and add only --batch")
    ap.add_argument("--out", required=True, help="the bench's output prefix (PREFIX.json is updated)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    command = "python eval/bench_metaworld_batch1.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    policy = load_policy(args.policy)
    env = mw.make_env(args.env)
    env.seed(10_000)
    o = env.reset()[0]
    obs1 = torch.as_tensor(np.stack([o, o])[None], dtype=torch.float32)
    rec = cachekit.record(policy, [lambda: policy.predict_action(obs1, generator=torch.Generator().manual_seed(0))])
    T = rec.num_steps
    configs = []
    for f in (float(v) for v in args.fractions.split(",")):
        n = round(1 / f)
        plan = {u: sorted(set(range(0, T, n)) | {T - 1}) for u in rec.columns}
        configs += [(f"every {nth(n)} step, whole stack, held", f, FixedIntervalConfig(interval=n, warmup=1, final_steps=1), {}),
                    (f"fixed interval {n} + Taylor, units", f,
                     FixedIntervalConfig(interval=n, warmup=1, final_steps=1, forecast="taylor", units=True), {}),
                    (f"BAC runtime, uniform plan every {nth(n)} step", f, BACConfig(plan=plan, num_steps=T, model=rec.fingerprint), {})]
    times = batch1_times(policy, obs1, configs, args.repeats)
    batched = None
    if args.batch:
        batched = batch1_times(policy, first_scenes(mw.task_spec(args.env), 10_000, args.batch), configs,
                               max(3, args.repeats // 2))
    by_label = {"uncached": times[0], **{c[0]: t for c, t in zip(configs, times[1:])}}
    by_label_b = {} if batched is None else {"uncached": batched[0], **{c[0]: t for c, t in zip(configs, batched[1:])}}
    prefix = Path(args.out)
    doc = json.loads(prefix.with_suffix(".json").read_text())
    for r in doc["rows"]:
        if r["config"] in by_label and not args.batched_only:
            r["batch1_ms"] = by_label[r["config"]] * 1e3
            r["batch1_speedup"] = times[0] / by_label[r["config"]]
        if r["config"] in by_label_b:
            r["batched_size"] = args.batch
            r["batched_speedup"] = batched[0] / by_label_b[r["config"]]
    doc["meta"]["batch1_command"] = command
    if not args.batched_only:
        doc["meta"]["salvaged"] = doc["meta"].get("salvaged", "") + (f"; batch-1 timing of the uniform plans by `{command}`")
    write(prefix, doc["rows"], doc["meta"])
    print(json.dumps({k: round(times[0] / v, 2) for k, v in by_label.items()}, indent=1))
    if batched is not None:
        print(json.dumps({f"batch {args.batch}: {k}": round(batched[0] / v, 2) for k, v in by_label_b.items()}, indent=1))


if __name__ == "__main__":
    main()
