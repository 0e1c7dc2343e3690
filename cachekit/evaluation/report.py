"""Reports: report.json (machine-readable), report.md, and PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema", "model", "kind", "config", "inputs", "seeds", "steps", "speed", "quality",
                 "per_step_error", "environment", "files")


def plain(x: Any) -> Any:
    """JSON-safe: numpy to Python, non-finite floats to strings ("inf"), tuples to lists."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    return x


def write_json(report: dict, path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in report]
    if missing:
        raise ValueError(f"report lacks {missing}")
    path.write_text(json.dumps(plain(report), indent=2))


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)


def markdown(report: dict) -> str:
    sp, q = report["speed"], report["quality"]
    lines = [
        f"# cachekit eval: {report['model']}",
        "",
        f"Config: `{report['config']}`  ",
        f"Inputs: {len(report['inputs'])} x seeds {report['seeds']}, steps {report['steps']}  ",
        f"Device: {report['environment']['device']}  ",
        f"Command: `{report['environment']['command']}`",
        "",
        "| | uncached | cached |",
        "|---|---|---|",
        f"| wall time (median of {sp['repeats']}) | {_fmt(sp['uncached_s'], 3)} s | {_fmt(sp['cached_s'], 3)} s |",
        f"| speedup | | {_fmt(sp['speedup'])}x |",
        f"| computed fraction (ideal speedup) | 1.00 | {_fmt(sp['computed_fraction'], 3)} ({_fmt(sp['ideal_speedup'])}x) |",
        f"| PSNR vs uncached (mean) | inf | {_fmt(q['psnr_mean'])} dB |",
        f"| SSIM vs uncached (mean) | 1.000 | {_fmt(q['ssim_mean'], 4)} |",
        f"| LPIPS | | {_fmt(q.get('lpips'), 4) if q.get('lpips') is not None else 'skipped: ' + str(q.get('lpips_skipped'))} |",
    ]
    for name, val in (report.get("extra") or {}).items():
        if isinstance(val, dict) and {"uncached", "cached"} <= set(val):
            lines.append(f"| {name} | {_fmt(val['uncached'], 3)} | {_fmt(val['cached'], 3)} |")
    proxies = q.get("vbench_proxies")
    if proxies:
        lines += ["", "| VBench-style proxy | uncached | cached | difference |", "|---|---|---|---|"]
        for k in proxies["uncached"]:
            lines.append(f"| {k} | {_fmt(proxies['uncached'][k], 4)} | {_fmt(proxies['cached'][k], 4)} | "
                         f"{_fmt(proxies['difference'][k], 4)} |")
    if report["files"]:
        lines += ["", "Files: " + ", ".join(f"[{v}]({v})" for v in report["files"].values())]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display here), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_samples(ref: torch.Tensor, cached: torch.Tensor, path: Path, max_items: int = 10) -> None:
    """Images: uncached (top) over cached (bottom). Video: the first clip's frames, same order."""
    plt = pyplot()
    if ref.dim() == 5:
        ref, cached = ref[0], cached[0]
    n = min(max_items, ref.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for row, (label, imgs) in enumerate((("uncached", ref), ("cached", cached))):
        for i in range(n):
            img = imgs[i].permute(1, 2, 0).numpy()
            ax = axes[row][i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_plan(plan: np.ndarray, steps: np.ndarray, block_names: list[str] | None, path: Path, title: str = "") -> None:
    """Heatmap of one generation's plan: rows = model calls (labelled by step), columns = blocks."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.35 * plan.shape[1]), min(10, 1.5 + 0.12 * plan.shape[0])))
    ax.imshow(plan.astype(float), aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("block")
    ax.set_ylabel("model call (step)")
    ticks = list(range(0, plan.shape[0], max(1, plan.shape[0] // 10)))
    ax.set_yticks(ticks, [f"{i} ({steps[i]})" for i in ticks])
    ax.set_title(title or f"recompute plan: green = computed ({plan.mean():.0%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_error_curve(per_step: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([p["call"] for p in per_step], [p["rel_l1"] for p in per_step], marker=".")
    ax.set_xlabel("model call")
    ax.set_ylabel("mean|x_cached - x| / mean|x|")
    ax.set_title("model-input latent, cached vs uncached")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
