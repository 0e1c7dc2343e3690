"""Summary table, CSV and plot of the Meta-World policy benchmark (``eval/bench_metaworld.py`` outputs).

    python eval/report_policy_metaworld.py eval/results/policy_metaworld

Reads every ``TASK.json`` in the folder; writes ``summary.md`` (per task: uncached success, the
fastest configuration whose success lies inside the uncached 95% interval, and BAC's calibrated
plans beside the uniform plan at each fraction), ``all_rows.csv`` and ``success_vs_speedup.png``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def load(folder: Path) -> list[dict]:
    out = []
    for p in sorted(folder.glob("*.json")):
        doc = json.loads(p.read_text())
        if isinstance(doc, dict) and "rows" in doc and "meta" in doc:
            out.append(doc)
    return out


def fastest_inside(rows: list[dict], key: str) -> dict | None:
    ok = [r for r in rows[1:] if r["inside_uncached_ci"] and r[key] is not None]
    return max(ok, key=lambda r: r[key]) if ok else None


def _cell_fastest(r: dict | None, key: str, note: str = "") -> str:
    if r is None:
        return f"none{note} | |"
    return f"{r['config']} (fraction {r['computed_fraction']:.3f}): {r[key]:.2f}x{note} | {r['success']:.3f} |"


def summary(docs: list[dict]) -> str:
    bs = next((r["batched_size"] for d in docs for r in d["rows"] if r.get("batched_size")), 64)
    lines = [f"| task | uncached success [95% CI] | fastest inside the uncached CI, batch-{bs} speedup | its success | "
             "fastest inside the uncached CI, batch-1 speedup | its success |", "|---|---|---|---|---|---|"]
    for d in docs:
        rows = d["rows"]
        b = rows[0]
        timed = [r for r in rows if r.get("batched_speedup") is not None]
        note = "" if len(timed) == len(rows) else f" ({len(timed) - 1} of {len(rows) - 1} rows timed at batch {bs})"
        lines.append(
            f"| {d['meta']['task']} | {b['success']:.3f} [{b['ci_lo']:.3f}, {b['ci_hi']:.3f}] | "
            + _cell_fastest(fastest_inside(timed, "batched_speedup") if timed else None, "batched_speedup", note) + " "
            + _cell_fastest(fastest_inside(rows, "batch1_speedup"), "batch1_speedup"))
    lines += ["", "BAC's calibrated scheduler against the uniform plan on the same runtime (success [95% CI] at computed fraction, speedups):", "",
              "| task | fraction | BAC runtime, uniform plan | BAC calibrated + Bubbling Union | BAC calibrated, no Bubbling Union |",
              "|---|---|---|---|---|"]
    for d in docs:
        by_f: dict[float, dict[str, dict]] = {}
        for r in d["rows"][1:]:
            by_f.setdefault(r["target_fraction"], {})[r["config"]] = r
        for f, rs in sorted(by_f.items(), reverse=True):
            def cell(prefix: str, extra: str = "") -> str:
                m = [r for k, r in rs.items() if k.startswith(prefix) and extra in k]
                if not m:
                    return "-"
                r = m[0]
                b1 = "" if r["batch1_speedup"] is None else f"{r['batch1_speedup']:.2f}x batch 1, "
                bb = "" if r.get("batched_speedup") is None else f"{r['batched_speedup']:.2f}x batch {r['batched_size']}, "
                return (f"{r['success']:.3f} [{r['ci_lo']:.2f}, {r['ci_hi']:.2f}] at {r['computed_fraction']:.3f}, "
                        f"{b1}{bb}{r['closed_loop_speedup']:.2f}x closed loop")
            lines.append(f"| {d['meta']['task']} | {f:g} | {cell('BAC runtime, uniform')} | "
                         f"{cell('BAC calibrated', 'Bubbling Union top')} | {cell('BAC calibrated', 'no Bubbling')} |")
    lines += ["", "Commands and wall times:", ""]
    for d in docs:
        m = d["meta"]
        lines.append(f"- {m['task']}: `{m['command']}` ({m['total_s'] / 60:.1f} min: calibration {m['calibration_s']:.0f} s, "
                     f"{len(d['rows'])} rows {m['rows_s']:.0f} s, batch-1 timing {m['batch1_timing_s']:.0f} s)")
    return "\n".join(lines) + "\n"


def plot(docs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = next((r["batched_size"] for d in docs for r in d["rows"] if r.get("batched_size")), 64)
    keys = (("batch1_speedup", "speedup of one batch-1 prediction (same rounds)"),
            ("batched_speedup", f"speedup of one batch-{bs} prediction (same rounds)"))
    fig, axes = plt.subplots(2, len(docs), figsize=(5.2 * len(docs), 8.4), squeeze=False)
    marks = {"every": "s", "fixed": "D", "BAC runtime": "^", "BAC calibrated": "v", "EasyCache": "o", "ERTACache": "P",
             "LeMiCa": "*"}
    for (key, xlabel), ax_row in zip(keys, axes):
        for ax, d in zip(ax_row, docs):
            b = d["rows"][0]
            ax.axhspan(b["ci_lo"], b["ci_hi"], color="0.85", label="uncached 95% CI")
            ax.axhline(b["success"], color="0.4", lw=1)
            ax.axvline(3.0, color="tab:red", lw=0.8, ls="--")
            for r in d["rows"][1:]:
                m = next((v for k, v in marks.items() if r["config"].startswith(k)), "x")
                color = "tab:blue" if r["target_fraction"] >= 0.15 else "tab:orange"
                if "no Bubbling" in r["config"]:
                    color = "tab:purple" if r["target_fraction"] >= 0.15 else "tab:pink"
                if r.get(key) is None:   # not timed this way (a salvaged row, or before batched timing): no point
                    continue
                ax.errorbar(r[key], r["success"], yerr=[[r["success"] - r["ci_lo"]], [r["ci_hi"] - r["success"]]],
                            fmt=m, color=color, ms=6, capsize=2, lw=0.8)
            ax.set_title(f"Meta-World {d['meta']['task']} ({b['episodes']} episodes per point)")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("success rate (Wilson 95%)")
    handles = [plt.Line2D([], [], marker=v, ls="", color="k", label=k) for k, v in marks.items()]
    handles += [plt.Line2D([], [], marker="o", ls="", color=c, label=l) for c, l in  # noqa: E741
                (("tab:blue", "f = 0.2"), ("tab:orange", "f = 0.1"), ("tab:purple", "BAC no BU, f = 0.2"), ("tab:pink", "BAC no BU, f = 0.1"))]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    folder = Path((argv or sys.argv[1:] or ["eval/results/policy_metaworld"])[0])
    docs = load(folder)
    if not docs:
        raise SystemExit(f"no bench_metaworld results (*.json) in {folder}")
    (folder / "summary.md").write_text(summary(docs))
    rows = [r for d in docs for r in d["rows"]]
    with open(folder / "all_rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "per_episode_success"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(docs, folder / "success_vs_speedup.png")
    print((folder / "summary.md").read_text())


if __name__ == "__main__":
    main()
