"""Rows of an ``eval/bench_metaworld.py`` run that was stopped before it wrote its files, from its log.

    python eval/salvage_metaworld_log.py LOG OUT_PREFIX

The bench prints one line per finished row (computed fraction, success over the row's episodes,
closed-loop speedup); this turns those lines into the same PREFIX.md / .csv / .json as a finished
run, with the batch-1 timing (measured only at the end of a run) marked as not measured, and the
Wilson 95% interval recomputed from the success count. Nothing is estimated: rows the run did not
reach are absent.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metaworld import write  # noqa: E402

from cachekit.evaluation.tasks.metaworld import wilson  # noqa: E402

ROW = re.compile(r"^  (?P<label>.+?): fraction (?P<frac>[0-9.]+), success (?P<succ>[0-9.]+), "
                 r"closed-loop speedup (?P<speed>[0-9.]+)x, (?P<wall>[0-9]+) s$")
BASE = re.compile(r"^  uncached: success (?P<succ>[0-9.]+) .*?, (?P<pred>[0-9]+) s in predict_action, (?P<wall>[0-9]+) s$")


def parse(text: str, episodes: int) -> tuple[list[dict], dict]:
    lines = text.splitlines()
    command = lines[0].strip()
    task = re.search(r"metaworld:(\S+)", command).group(1)
    rows = []
    for ln in lines:
        m = BASE.match(ln) or ROW.match(ln)
        if not m:
            continue
        d = m.groupdict()
        label = d.get("label", "uncached")
        succ = float(d["succ"])
        k = int(round(succ * episodes))
        lo, hi = wilson(k, episodes)
        frac = float(d.get("frac", 1.0))
        target = 1.0 if label == "uncached" else (0.1 if frac < 0.15 else 0.2)
        rows.append({"task": task, "config": label, "target_fraction": target, "computed_fraction": frac,
                     "success": k / episodes, "ci_lo": lo, "ci_hi": hi, "episodes": episodes, "successes": k,
                     "inside_uncached_ci": None, "batch1_ms": None, "batch1_speedup": None,
                     "closed_loop_s_per_prediction": None, "closed_loop_speedup": float(d.get("speed", 1.0)),
                     "mean_episode_length": None, "row_wall_s": float(d["wall"]), "calib_action_mae": None,
                     "config_repr": "", "notes": "salvaged from the log", "per_episode_success": ""})
    if not rows or rows[0]["config"] != "uncached":
        raise SystemExit("no uncached row in the log")
    b = rows[0]
    for r in rows:
        r["inside_uncached_ci"] = bool(b["ci_lo"] <= r["success"] <= b["ci_hi"])
    calib = next((float(m.group(1)) for m in (re.search(r"calibration: .*?, ([0-9]+) s$", ln) for ln in lines) if m), 0.0)
    hist = next((int(m.group(1)) for m in (re.search(r"calibration: ([0-9]+) histories", ln) for ln in lines) if m), 0)
    meta = {"command": command, "policy": re.search(r"--policy (\S+)", command).group(1), "task": task,
            "episodes": episodes, "eval_seeds": [0, episodes - 1], "calib_seeds": [10_000, 10_015], "calib_histories": hist,
            "calib_runs": 4, "calib_batch": 8, "torch": "", "threads": 1, "calibration_s": calib,
            "rows_s": sum(r["row_wall_s"] for r in rows), "batch1_timing_s": 0.0,
            "total_s": calib + sum(r["row_wall_s"] for r in rows), "repeats": 0,
            "salvaged": "run stopped before its end; rows from its log, no batch-1 timing"}
    return rows, meta


def main(argv=None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit("usage: python eval/salvage_metaworld_log.py LOG OUT_PREFIX")
    text = Path(args[0]).read_text()
    episodes = int(re.search(r"--episodes (\d+)", text).group(1))
    rows, meta = parse(text, episodes)
    write(Path(args[1]), rows, meta)
    print(json.dumps({"rows": len(rows), "out": args[1]}))


if __name__ == "__main__":
    main()
