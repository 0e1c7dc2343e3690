"""Does the demo's verdict hold on a busy machine? ``cachekit demo`` run under load and without.

Issue 29 item 4: a reviewer saw the recipe-vs-anchor verdict flip between runs (three timed rounds
decided it). The demo now times ``cachekit.demo.DEMO_REPEATS`` rounds, shows each speedup as the
median of per-round ratios with their interquartile range, and says "within noise" when the ranges
of a cachekit column and the anchor overlap. This runs the demo in a fresh process per run,
alternately with ``--load`` busy-loop processes (one per core by default, killed in a finally) and
without, and writes every table and verdict into one markdown file with the command of each run.

    python eval/demo_load.py --out eval/results/demo_load

Other jobs on the machine are not controlled: the 1-minute load average before and after each run
is written beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachekit.demo import DEMO_REPEATS

BUSY = "while True: pass"


def classify(line: str) -> str:
    """One verdict line -> beats / within noise / slower / lower PSNR (joined with + when several)."""
    if " beats " in line:
        return "beats"
    kinds = [k for k, pat in (("within noise", "within noise"), ("slower", "slower ("), ("lower PSNR", "lower PSNR"))
             if pat in line]
    return " + ".join(kinds) or "?"


def run_once(cmd: list[str], busy: int) -> dict:
    """One demo process, with ``busy`` busy-loop processes beside it for its whole run."""
    load = []
    try:
        load = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        before = os.getloadavg()[0]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - t0
        after = os.getloadavg()[0]
    finally:
        for p in load:   # always: a forgotten busy loop would skew every later measurement on the machine
            p.kill()
            p.wait()
    if done.returncode != 0:
        raise RuntimeError(f"demo exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    out = done.stdout
    table = out[out.index("\n\n", out.index("best anchor (")) + 2:out.index("\nwrote ")].rstrip()
    verdicts = [ln for ln in table.splitlines() if "beat the best anchor" in ln or "beats the best anchor" in ln]
    return {"wall_s": wall, "load_before": before, "load_after": after, "table": table,
            "verdicts": {ln.split(" does not ")[0].split(" beats ")[0]: classify(ln) for ln in verdicts}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="eval/results/demo_load", help="folder for README.md and runs.json (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=2, help="runs per condition (default: %(default)s)")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2,
                    help="busy-loop processes in a loaded run (default: one per core, %(default)s)")
    ap.add_argument("--repeats", type=int, default=DEMO_REPEATS, help="timed rounds per demo (default: %(default)s)")
    ap.add_argument("--model", default="digits", choices=("digits", "video"), help="demo model (default: %(default)s)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # loaded and quiet runs interleaved, so a drift in other jobs on the machine hits both
        for k in range(2 * args.runs):
            busy = args.load if k % 2 == 0 else 0
            cmd = [sys.executable, "-m", "cachekit", "demo", "--model", args.model, "--repeats", str(args.repeats),
                   "--out", f"{tmp}/run{k}"]
            print(f"run {k + 1}/{2 * args.runs}: {busy} busy-loop processes", flush=True)
            r = run_once(cmd, busy)
            r.update(busy=busy, command=shlex.join(["python", *cmd[1:-1], f"/tmp/run{k}"]))
            print(f"  {r['wall_s']:.0f} s: {r['verdicts']}", flush=True)
            runs.append(r)
    (out / "README.md").write_text(markdown(runs, args, argv if argv is not None else sys.argv[1:]))
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {out / 'README.md'}")
    return 0


def markdown(runs: list[dict], args: argparse.Namespace, argv: list[str]) -> str:
    from cachekit.evaluation.runner import environment

    pp = os.environ.get("PYTHONPATH")   # named when set: the children import cachekit from it too
    env = environment((f"PYTHONPATH={pp} " if pp else "") + shlex.join(["python", "eval/demo_load.py", *argv]))
    columns = list(runs[0]["verdicts"])
    lines = [
        f"# `cachekit demo --model {args.model}` under load and without",
        "",
        f"Produced by `{env['command']}` on {env['device']}, torch {env['versions']['torch']}, "
        f"{time.strftime('%Y-%m-%d')}. Model: the {args.model} reference model shipped with cachekit.",
        "",
        f"Each run is a fresh `cachekit demo` process timing {args.repeats} alternating rounds (uncached, recipe, "
        "`cachekit.apply(pipe)`, best anchor in each round). A loaded run has "
        f"{args.load} `python -c \"{BUSY}\"` processes beside it for its whole run (started before, killed "
        "after, by this script). Loaded and quiet runs alternate. Other engineers' jobs share this 2-core "
        "machine and are not controlled: the 1-minute load average before and after each run is in the summary "
        "(a quiet machine with no other job reads about 1 during a run, the demo's own threads).",
        "",
        "Speedups are the median of per-round ratios (uncached time / pass time of the same round) with their "
        "interquartile range; a verdict says beats or slower only when the ranges of the cachekit column and "
        "the anchor are apart, and \"within noise\" when they overlap. PSNR is deterministic.",
        "",
        "## Summary",
        "",
        "| run | busy-loop processes | wall | load avg before / after | " + " | ".join(columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for k, r in enumerate(runs):
        lines.append(f"| {k + 1} | {r['busy']} | {r['wall_s']:.0f} s | {r['load_before']:.1f} / {r['load_after']:.1f} | "
                     + " | ".join(r["verdicts"].get(c, "-") for c in columns) + " |")
    lines.append("")
    for c in columns:
        said = []
        for name, rs in (("loaded", [r for r in runs if r["busy"]]), ("quiet", [r for r in runs if not r["busy"]])):
            seen = sorted({r["verdicts"].get(c, "-") for r in rs})
            said.append(f"{name}: {seen[0]} in all {len(rs)} runs" if len(seen) == 1 else
                        f"{name}: differs between runs ({', '.join(seen)})")
        every = [r["verdicts"].get(c, "") for r in runs]
        flip = any(v.startswith("beats") for v in every) and any(v.startswith("slower") for v in every)
        lines.append(f"- {c}: " + "; ".join(said) + ". Beats in one run and slower in another: "
                     + ("yes." if flip else "no."))
    for k, r in enumerate(runs):
        lines += ["", f"## Run {k + 1}: {'%d busy-loop processes' % r['busy'] if r['busy'] else 'no extra load'}", "",
                  f"`{r['command']}` ({r['wall_s']:.0f} s wall)", "", "```", r["table"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
