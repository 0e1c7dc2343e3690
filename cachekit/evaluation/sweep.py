"""``cachekit sweep``: a grid over methods' settings against one shared uncached baseline."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import CacheConfig, ConfigError, config_classes
from . import report as _report
from .runner import compare_many, environment, quality
from .workloads import Workload


def expand(spec: str, kind: str) -> list:
    """``lo:hi:n`` (n evenly spaced values, rounded and deduplicated for ints), ``a,b,c``, or one
    value."""
    if kind == "str":
        return [v.strip() for v in spec.split(",") if v.strip()]
    if kind == "bool":
        words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        vals = [v.strip().lower() for v in spec.split(",") if v.strip()]
        if not vals or any(v not in words for v in vals):
            raise ConfigError(f"bad grid {spec!r}: use true/false (or 1/0), comma-separated")
        return [words[v] for v in vals]
    cast = int if kind == "int" else float
    try:
        if spec.count(":") == 2:
            lo, hi, count = spec.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            vals = np.linspace(float(lo), float(hi), n).tolist()
            vals = [int(round(v)) for v in vals] if kind == "int" else [round(v, 6) for v in vals]
            return list(dict.fromkeys(vals))
        return [cast(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"bad grid {spec!r}: use lo:hi:n, a,b,c or one {kind}") from None


def grid_configs(method: str, specs: dict[str, str]) -> list[CacheConfig]:
    """Every combination of the given settings (others at their defaults)."""
    classes = config_classes()
    if method not in classes:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(sorted(classes))}")
    cls = classes[method]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    axes = []
    for key, spec in specs.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r} for method {method!r}; allowed: {', '.join(fields)}")
        kind = fields[key].type if isinstance(fields[key].type, str) else fields[key].type.__name__
        axes.append([(key, v) for v in expand(spec, kind)])
    return [cls(**dict(combo)) for combo in itertools.product(*axes)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (quality up, speed up)."""
    front = []
    for i, (q, s) in enumerate(points):
        if not any((q2 >= q and s2 >= s) and (q2 > q or s2 > s) for j, (q2, s2) in enumerate(points) if j != i):
            front.append(i)
    return front


def sweep(workload: Workload, configs: Sequence[CacheConfig], inputs: Sequence, seeds: Sequence[int], *,
          batch_size: int, repeats: int = 2, out_dir: str | Path = "cachekit-sweep", progress: bool = True,
          command: str | None = None) -> dict:
    from tqdm.auto import tqdm

    n_chunks = -(-len(inputs) // batch_size) * len(seeds)
    with tqdm(total=max(1, repeats) * (1 + len(configs)) * n_chunks, desc=f"sweep {workload.name}",
              disable=not progress, unit="batch") as bar:
        res = compare_many(workload, configs, inputs, seeds, batch_size, repeats, bar)
    rows = []
    # The workload's own quality metric (class recognition, content/direction recovery), if any.
    extra = workload.extra_metrics
    ref_out = res["ref"].outputs
    uncached_extra = extra(ref_out, inputs) if extra is not None else {}
    for cfg, r in zip(configs, res["results"]):
        q = quality(workload.kind, r["cached"].outputs, ref_out)
        rows.append({"method": cfg.method, "settings": dataclasses.asdict(cfg), **r["speed"],
                     "psnr_mean": q["psnr_mean"], "ssim_mean": q["ssim_mean"],
                     "extra": extra(r["cached"].outputs, inputs) if extra is not None else {}})
    finite = [(min(r["psnr_mean"], 99.0), r["speedup"]) for r in rows]
    for i in pareto_front(finite):
        rows[i]["pareto"] = True
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = {"schema": _report.SCHEMA_VERSION, "model": workload.name, "kind": workload.kind,
           "inputs": [str(i) for i in inputs], "seeds": list(seeds), "steps": workload.steps,
           "extra_uncached": uncached_extra, "rows": rows, "environment": environment(command),
           "files": {"json": "sweep.json", "markdown": "sweep.md", "plot": "pareto.png"}}
    (out / "sweep.json").write_text(json.dumps(_report.plain(rep), indent=2))
    (out / "sweep.md").write_text(markdown(rep))
    _plot(rows, out / "pareto.png", workload.name)
    return rep


def markdown(rep: dict) -> str:
    lines = [f"# cachekit sweep: {rep['model']}", "",
             f"Command: `{rep['environment']['command']}`  ", f"Device: {rep['environment']['device']}", ""]
    names = list(rep.get("extra_uncached") or {})
    if names:
        lines += ["Uncached: " + ", ".join(f"{k} {v:.3f}" for k, v in rep["extra_uncached"].items()), ""]
    lines += ["| method | settings | speedup | computed fraction | PSNR (dB) | SSIM | " +
              "".join(f"{n} | " for n in names) + "Pareto |",
              "|---|---|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in sorted(rep["rows"], key=lambda r: (r["method"], -r["computed_fraction"])):
        settings = ", ".join(f"{k}={_short(v)}" for k, v in r["settings"].items())
        lines.append(f"| {r['method']} | {settings} | {r['speedup']:.2f}x | {r['computed_fraction']:.3f} | "
                     f"{_report._fmt(r['psnr_mean'])} | {r['ssim_mean']:.4f} | " +
                     "".join(f"{r['extra'].get(n, float('nan')):.3f} | " for n in names) +
                     f"{'*' if r.get('pareto') else ''} |")
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    """A setting as shown in a table: a BAC plan is summarised by its size, not printed."""
    if isinstance(value, (tuple, list)) and len(str(value)) > 60:
        return f"<{len(value)} entries>"
    return str(value)


def _plot(rows: list[dict], path: Path, title: str) -> None:
    plt = _report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = sorted((min(r["psnr_mean"], 99.0), r["speedup"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    front = [(min(r["psnr_mean"], 99.0), r["speedup"]) for r in rows if r.get("pareto")]
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=120, facecolors="none", edgecolors="k",
               label="Pareto front")
    ax.set_xlabel("PSNR vs uncached (dB)")
    ax.set_ylabel("wall-clock speedup (same run)")
    ax.set_title(f"{title}: speed vs quality")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
