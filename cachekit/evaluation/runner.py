"""Run a workload uncached and cached with identical seeds; time both in the same process.

Speed: ``timing.alternate`` (one untimed warm-up, then ``repeats`` alternating uncached / cached
passes, median wall time of each: these machines are noisy, a ratio taken in one run is the only
fair figure). Quality: the cached outputs against the uncached ones, per sample.
"""

from __future__ import annotations

import contextlib
import math
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .. import api
from ..adapters import find_model
from ..config import CacheConfig
from ..metrics import (dynamic_degree, mean_finite, motion_smoothness, psnr, ssim, temporal_flickering)
from .timing import Pass, alternate
from .workloads import Workload, chunks

__all__ = ["PassResult", "run_pass", "compare", "compare_many", "quality", "environment", "applied"]


@dataclass
class PassResult:
    outputs: torch.Tensor
    computed_fraction: float = 1.0
    plan: np.ndarray | None = None     # first generation's (calls x blocks) plan
    steps: np.ndarray | None = None    # step of each call of the first generation
    latents: list[torch.Tensor] = field(default_factory=list)  # model input per call, first generation
    peak_mb: float | None = None       # CUDA: peak allocated during the pass; None on CPU


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for name in ("hidden_states", "sample", "x"):
        if isinstance(kwargs.get(name), torch.Tensor):
            return kwargs[name]
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


@contextlib.contextmanager
def applied(target: Any, config: CacheConfig) -> Iterator[None]:
    """cachekit applied for the duration of a block, removed even if it raises."""
    api.apply(target, config)
    try:
        yield
    finally:
        api.remove(target)


def run_pass(workload: Workload, inputs: Sequence, seeds: Sequence[int], batch_size: int,
             cached: bool, record: bool = False, on_chunk: Callable[[], None] | None = None) -> PassResult:
    """One pass over all inputs and seeds (untimed: ``timing.alternate`` times it). ``record`` keeps
    the model's input latent at every call of the first generation (for the per-step error curve)."""
    latents: list[torch.Tensor] = []
    handle = None
    if record:
        model, _ = find_model(workload.target)
        handle = model.register_forward_pre_hook(
            lambda m, a, k: latents.append(_first_tensor(a, k).detach().float().clone()), with_kwargs=True)
    outs, computed, total, plan, steps = [], 0, 0, None, None
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        for seed in seeds:
            for chunk in chunks(list(inputs), batch_size):
                outs.append(workload.generate(chunk, seed))
                if handle is not None:
                    handle.remove()
                    handle = None
                if cached:
                    s = api.stats(workload.target)
                    computed, total = computed + int(s.plan.sum()), total + s.plan.size
                    if plan is None:
                        plan, steps = s.plan, s.steps
                if on_chunk:
                    on_chunk()
    finally:
        if handle is not None:
            handle.remove()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return PassResult(torch.cat(outs), computed / total if total else 1.0, plan, steps, latents, peak)


def compare_many(workload: Workload, configs: Sequence[CacheConfig], inputs: Sequence, seeds: Sequence[int],
                 batch_size: int, repeats: int = 3, progress: Any = None,
                 extra: Mapping[str, Pass] | None = None) -> dict:
    """One shared uncached baseline against each config: speed, computed fraction, outputs,
    per-step error. Each repeat runs the baseline once, then every config, then every ``extra``
    pass (e.g. another library's cache: ``Pass(body, around=install)``), so all ratios come from
    the same stretch of machine time; ``res["extra"][name]`` is its ``timing.Timed``."""
    tick = (lambda: progress.update(1)) if progress is not None else None
    first = list(inputs)[:batch_size]

    def body(cached: bool) -> Callable[[int], Any]:
        # warm-up (-1): one batch, enough for lazy initialisation; round 0 records latents
        return lambda r: (workload.generate(first, seeds[0]) if r < 0 else
                          run_pass(workload, inputs, seeds, batch_size, cached, record=r == 0, on_chunk=tick))

    passes = [Pass(body(False))]
    passes += [Pass(body(True), around=lambda cfg=cfg: applied(workload.target, cfg), warmup=k == 0)
               for k, cfg in enumerate(configs)]
    passes += list((extra or {}).values())
    timed = alternate(passes, repeats)
    base, ref = timed[0], timed[0].first
    results = []
    for k in range(len(configs)):
        t, g = timed[1 + k], timed[1 + k].first
        results.append({
            "cached": g,
            "speed": {
                "uncached_s": base.median, "cached_s": t.median, "speedup": base.median / t.median,
                "computed_fraction": g.computed_fraction,
                "ideal_speedup": 1 / g.computed_fraction if g.computed_fraction else math.inf,
                "repeats": repeats, "times_s": {"uncached": base.times, "cached": t.times},
                "peak_memory_mb": {"uncached": ref.peak_mb, "cached": g.peak_mb,
                                   "process_max_rss_mb": _max_rss_mb(),
                                   "note": None if ref.peak_mb is not None else
                                   "per-run peak memory is measured on CUDA only; process_max_rss_mb is the "
                                   "whole process's peak so far"},
            },
            "per_step_error": _per_step(ref, g),
        })
    return {"ref": ref, "results": results, "extra": dict(zip(extra or {}, timed[1 + len(configs):])),
            "uncached_times": base}


def _max_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB


def _per_step(ref: PassResult, got: PassResult) -> list[dict]:
    out: list[dict] = []
    if ref.latents and len(ref.latents) == len(got.latents):
        steps = got.steps if got.steps is not None else range(len(ref.latents))
        for a, b, step in zip(got.latents, ref.latents, steps):
            denom = float(b.abs().mean()) or 1.0
            out.append({"call": len(out), "step": int(step), "rel_l1": float((a - b).abs().mean()) / denom})
    return out


def compare(workload: Workload, config: CacheConfig, inputs: Sequence, seeds: Sequence[int],
            batch_size: int, repeats: int = 3, progress: Any = None, extra: Mapping[str, Pass] | None = None) -> dict:
    """Uncached vs one config (see ``compare_many``)."""
    res = compare_many(workload, [config], inputs, seeds, batch_size, repeats, progress, extra)
    return {"ref": res["ref"], "extra": res["extra"], **res["results"][0]}


def quality(kind: str, cached: torch.Tensor, ref: torch.Tensor) -> dict:
    """PSNR / SSIM of cached against uncached; for video per frame, plus VBench-style proxies."""
    if kind == "video":
        n, f = ref.shape[:2]
        p = psnr(cached.flatten(0, 1), ref.flatten(0, 1))
        s = ssim(cached.flatten(0, 1), ref.flatten(0, 1))
        per_clip_p = [mean_finite(p[i * f:(i + 1) * f]) for i in range(n)]
        per_clip_s = [float(np.mean(s[i * f:(i + 1) * f])) for i in range(n)]
        proxies = {}
        for label, vids in (("uncached", ref), ("cached", cached)):
            proxies[label] = {
                "temporal_flickering": float(np.mean([temporal_flickering(v) for v in vids])),
                "motion_smoothness": float(np.mean([motion_smoothness(v) for v in vids])),
                "dynamic_degree": float(np.mean([dynamic_degree(v) for v in vids])),
            }
        proxies["difference"] = {k: proxies["cached"][k] - proxies["uncached"][k] for k in proxies["cached"]}
        out = {"psnr": per_clip_p, "ssim": per_clip_s, "psnr_per_frame": p, "ssim_per_frame": s, "vbench_proxies": proxies}
    else:
        out = {"psnr": psnr(cached, ref), "ssim": ssim(cached, ref)}
    out["psnr_mean"] = mean_finite(out["psnr"])
    out["ssim_mean"] = float(np.mean(list(out["ssim"])))  # type: ignore[call-overload]  # list[float]
    out.update(_lpips(kind, cached, ref))
    return out


def _lpips(kind: str, cached: torch.Tensor, ref: torch.Tensor) -> dict:
    """LPIPS only with the [lpips] extra AND its backbone weights on disk: never a random backbone."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return {"lpips": None, "lpips_skipped": "the [lpips] extra is not installed"}
    hub = torch.hub.get_dir()
    ckpt = f"{hub}/checkpoints/alexnet-owt-7be5be79.pth"
    import os
    if not os.path.exists(ckpt):
        return {"lpips": None, "lpips_skipped": f"AlexNet backbone weights not found at {ckpt} (no downloads here)"}
    import lpips as _lp
    net = _lp.LPIPS(net="alex", verbose=False).eval()
    a, b = (cached.flatten(0, 1), ref.flatten(0, 1)) if kind == "video" else (cached, ref)
    if a.shape[1] == 1:
        a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
    with torch.no_grad():
        d = net(a * 2 - 1, b * 2 - 1).flatten()
    return {"lpips": float(d.mean()), "lpips_skipped": None}


def _flushes_denormals() -> bool:
    """torch has no getter for set_flush_denormal: multiply a denormal and see if it survives."""
    return float(torch.tensor([1e-39]) * 1.0) == 0.0


def environment(command: str | None = None) -> dict:
    """Versions, device, and the command that produced a report (``sys.argv`` when not given)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("cachekit", "diffusers", "transformers", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"versions": versions, "device": device, "flush_denormal": _flushes_denormals(),
            "command": command or " ".join(["cachekit", *sys.argv[1:]])}
