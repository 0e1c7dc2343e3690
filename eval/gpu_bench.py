"""The GPU checks of issue 18 in one command (under 8 minutes on one H100 / H200):

    python eval/gpu_bench.py [--out eval/results/gpu] [--peak-gbs 4800] [--steps 6] [--repeats 3]
    python eval/gpu_bench.py --dry     # CPU, tiny sizes, kernels through TRITON_INTERPRET=1 (the test suite runs it)

Sections, in this order; each file is written when its section ends (a later failure keeps the
earlier ones), and a section that fails, lacks a dependency or would start after ``--time-limit``
seconds is one row saying so:

1. ``kernels_check.csv``: every kernel (reuse with 1 / 3 / 4 terms and in place, drift_stats,
   residual_with_stats with and without a reference) against its eager reference on the fp32 upcast
   of the same inputs, fp32 / bf16 / fp16, odd shapes (ragged tails, one masked block), with the
   per-dtype tolerances of ``tests/runtime/test_kernels.py``.
2. ``kernels_bw.csv``: fused vs eager (``kernels/bench_kernels.py``'s cases) at Wan-1.3B and Flux
   stream sizes, bf16: ms, GB/s (bytes each op must move / time), share of ``--peak-gbs`` (H200
   HBM3e: 4800) and of the device-to-device copy bandwidth measured here.
3. ``models.csv``: Flux.1-dev at 1024^2 (4096 + 512 tokens, one forward per step) and Wan2.1-1.3B
   at 480p x 81 frames (32,760 tokens, CFG as two forwards), bf16, random weights from the
   published configs, driven by a minimal pipeline (``Loop``: set_timesteps, cache_context per
   branch, scheduler.step, as diffusers' pipelines do). Wall per generation, same-run alternating
   passes: uncached, ``FixedIntervalConfig(interval=2)`` eager; ``interval=1`` (nothing reused)
   and ``interval=2`` with ``compile=True``. Host syncs per step (``torch.cuda.set_sync_debug_mode``
   warnings, the uncached run's own subtracted) for planned (fixed interval, ERTACache) and
   runtime-decided (EasyCache, BlockDrift) methods.
4. ``history.csv``: Wan-1.3B 480p, ``units=True`` first-order Taylor, ``history=`` device / host /
   bf16: wall per generation, peak device memory, cached bytes, outputs against the default
   (host: bit-exact).
5. ``summary.md`` (the issue's targets, met or not) and ``env.json``.

diffusers (sections 3-4) is not in the GPU image: ``--diffusers-path DIR`` (a ``pip install
--target`` folder) or PYTHONPATH; without it those sections are one line each. The kernels need
only torch and triton. ``--dry`` runs everything on CPU at tiny sizes in fp32 (kernels through the
Triton interpreter when triton imports, else the reference path) in well under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
CASES = ["reuse1", "reuse3", "reuse4", "reuse_inplace", "drift", "residual_ref", "residual_noref"]
WEIGHTS = {"reuse1": [1.0], "reuse3": [0.5, -1.25, 2.0], "reuse4": [1.0, 0.5, -0.25, 0.125], "reuse_inplace": [1.0, -0.5]}
SHAPES = [(3, 1037, 77), (1, 1, 5), (2, 4097, 33)]
DRY_SHAPES = [(3, 37, 7), (1, 1, 5)]
BW_SIZES = [("wan1.3b", 32760, 1536), ("flux", 4096 + 512, 3072)]
DRY_BW_SIZES = [("tiny", 256, 64)]
CHECK_COLUMNS = ["kernel", "dtype", "shape", "backend", "max_abs_err", "worst_tol_ratio", "ok", "note"]
BW_COLUMNS = ["kernel", "size", "shape", "dtype", "impl", "time_ms", "bytes", "gbs", "peak_share", "copy_share", "device"]
MODEL_COLUMNS = ["model", "tokens", "text_tokens", "branches", "steps", "dtype", "mode", "config", "computed_fraction",
                 "gen_ms", "step_ms", "speedup_vs_uncached", "speedup_vs_mode_baseline", "host_syncs", "syncs_per_step",
                 "extra_syncs_per_step", "host_reads", "cached_bytes", "note"]
HISTORY_COLUMNS = ["model", "tokens", "steps", "config", "history", "gen_ms", "vs_device", "peak_device_bytes",
                   "cached_bytes", "bit_exact_vs_device", "max_rel_change", "note"]


def tolerances():
    """(rtol, atol) for tensors and rtol for the fp32 stats, per dtype: tests/runtime/test_kernels.py's."""
    import torch

    return {torch.float32: ((1e-6, 1e-5), 1e-6), torch.float16: ((2 ** -10, 1e-3), 2 ** -10),
            torch.bfloat16: ((2 ** -7, 1e-2), 2 ** -7)}


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# ---- 1. kernels against their references ----------------------------------------------------------------
def check_kernels(device: str, dtypes: list, shapes: list, backend: str) -> list[dict]:
    import torch

    from cachekit import kernels as K

    tol = tolerances()
    rows = []
    for dtype in dtypes:
        (rtol, atol), stats_rtol = tol[dtype]
        for shape in shapes:
            for case in CASES:
                g = torch.Generator().manual_seed(sum(map(ord, f"{case}{shape}{dtype}")))
                count = {"drift": 2, "residual_ref": 3, "residual_noref": 2}.get(case) or 1 + len(WEIGHTS[case])
                t = [torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(count)]
                up = [x.float() for x in t]
                note = ""
                if case.startswith("reuse"):
                    want = K.reuse_reference(up[0], up[1:], WEIGHTS[case])
                    if case == "reuse_inplace":
                        x, ptr = t[0], t[0].data_ptr()
                        out = K.reuse(x, t[1:], WEIGHTS[case], inplace=True, backend=backend)
                        if out is not x or x.data_ptr() != ptr:
                            note = "in place did not write into x"
                        got = [(x.float(), want, rtol, atol)]
                    else:
                        out = K.reuse(t[0], t[1:], WEIGHTS[case], backend=backend)
                        got = [(out.float(), want, rtol, atol)]
                elif case == "drift":
                    got = [(K.drift_stats(t[0], t[1], backend=backend), K.drift_stats_reference(*up), stats_rtol, 0.0)]
                else:
                    ref = t[2] if case == "residual_ref" else None
                    r, stats = K.residual_with_stats(t[0], t[1], ref, backend=backend)
                    r_want, s_want = K.residual_with_stats_reference(up[0], up[1], None if ref is None else up[2])
                    got = [(r.float(), r_want, rtol, atol), (stats, s_want, stats_rtol, 0.0)]
                err, ratio = 0.0, 0.0
                for a, b, rt, at in got:
                    d = (a.float().cpu() - b.float().cpu()).abs()
                    err = max(err, float(d.max()))
                    ratio = max(ratio, float((d / (at + rt * b.float().cpu().abs())).max()))
                rows.append(dict(kernel=case, dtype=str(dtype).removeprefix("torch."), shape="x".join(map(str, shape)),
                                 backend=backend, max_abs_err=f"{err:.3e}", worst_tol_ratio=f"{ratio:.3f}",
                                 ok=ratio <= 1.0 and not note, note=note))
    return rows


# ---- 2. kernel bandwidth --------------------------------------------------------------------------------
def kernel_bandwidth(device: str, sizes: list, peak_gbs: float, repeats: int, impls: tuple) -> list[dict]:
    import torch

    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "kernels" / "bench_kernels.py")
    bk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bk)
    cuda = device == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})"
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for size, tokens, hidden in sizes:
        x, *ts = (torch.randn((tokens, hidden), generator=g, device=device).to(torch.bfloat16) for _ in range(4))
        dst = torch.empty_like(x)
        copy_ms = bk.time_ms(lambda: dst.copy_(x), cuda, repeats)  # noqa: F821 - called before the del below
        copy_gbs = 2 * x.numel() * x.element_size() / (copy_ms * 1e-3) / 1e9
        rows.append(dict(kernel="copy", size=size, shape=f"{tokens}x{hidden}", dtype="bf16", impl="torch copy_",
                         time_ms=f"{copy_ms:.4f}", bytes=2 * x.numel() * 2, gbs=f"{copy_gbs:.4g}",
                         peak_share=f"{copy_gbs / peak_gbs:.3f}", copy_share="1.000", device=name))
        for kernel, moved, fns in bk.cases(x, ts):
            nbytes = moved * x.numel() * x.element_size()
            for impl in impls:
                ms = bk.time_ms(fns[impl], cuda, repeats)
                gbs = nbytes / (ms * 1e-3) / 1e9
                rows.append(dict(kernel=kernel, size=size, shape=f"{tokens}x{hidden}", dtype="bf16", impl=impl,
                                 time_ms=f"{ms:.4f}", bytes=nbytes, gbs=f"{gbs:.4g}", peak_share=f"{gbs / peak_gbs:.3f}",
                                 copy_share=f"{gbs / copy_gbs:.3f}", device=name))
        del x, ts, dst
    return rows


# ---- 3. models -----------------------------------------------------------------------------------------
def model_specs(dry: bool) -> list[dict]:
    """What each model run is: how to build it, its tokens, CFG branches."""
    if dry:
        return [dict(name="flux (tiny)", kind="flux", cls="FluxTransformer2DModel",
                     cfg=dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                              guidance_embeds=True, axes_dims_rope=[4, 4, 8]),
                     tokens=64, text=8, latent_hw=None, branches=(None,)),
                dict(name="wan (tiny)", kind="wan", cls="WanTransformer3DModel",
                     cfg=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                              out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                              qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
                     tokens=32, text=8, latent_hw=(8, 8), branches=("cond", "uncond"))]
    from cachekit.memory import PUBLISHED_CONFIGS

    def published(key):
        cfg = dict(PUBLISHED_CONFIGS[key])
        return cfg.pop("_class_name"), cfg

    fcls, fcfg = published("flux.1-dev")
    wcls, wcfg = published("wan2.1-1.3b")
    return [dict(name="flux.1-dev 1024^2", kind="flux", cls=fcls, cfg=fcfg, tokens=4096, text=512, latent_hw=None,
                 branches=(None,)),
            dict(name="wan2.1-1.3b 480p x 81", kind="wan", cls=wcls, cfg=wcfg, tokens=32760, text=512,
                 latent_hw=(60, 104), branches=("cond", "uncond"))]


class Loop:
    """The least of a diffusers pipeline that cachekit relies on: ``set_timesteps`` starts a
    generation, each CFG branch runs inside ``transformer.cache_context(name)``, ``scheduler.step``
    ends each step (so cachekit reads no timestep from the device)."""

    def __init__(self, transformer: Any, latent: Any, forward: Callable, branches: tuple, guidance: float = 5.0) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.transformer, self.latent, self.forward, self.branches, self.guidance = transformer, latent, forward, branches, guidance
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)

    @property
    def components(self) -> dict:
        return {"transformer": self.transformer, "scheduler": self.scheduler}

    def __call__(self, steps: int) -> Any:
        import torch

        s = self.scheduler
        with torch.no_grad():
            s.set_timesteps(steps, device=self.latent.device)
            x = self.latent.clone()
            for t in s.timesteps:
                outs = []
                for name in self.branches:
                    ctx = self.transformer.cache_context(name) if name else contextlib.nullcontext()
                    with ctx:
                        outs.append(self.forward(self.transformer, x, t))
                v = outs[0] if len(outs) == 1 else outs[1] + self.guidance * (outs[0] - outs[1])
                x = s.step(v, t, x, return_dict=False)[0]
        return x


def count_syncs(fn: Callable[[], Any], cuda: bool) -> int | None:
    """CUDA host syncs while ``fn`` runs (``set_sync_debug_mode("warn")`` warnings); None off CUDA."""
    import torch

    if not cuda:
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


def run_models(args: Any, dtype: Any, device: str, deadline: float) -> list[dict]:
    import torch

    import cachekit
    from bench_scale import build_from, make_inputs, share_weights
    from cachekit.evaluation.timing import Pass, alternate

    cuda = device == "cuda"
    rows = []
    compile_opts = {"backend": "eager"} if args.dry else True
    for spec in model_specs(args.dry):
        if time.perf_counter() > deadline:
            rows.append(dict(model=spec["name"], note="skipped: --time-limit reached"))
            continue
        try:
            model = build_from(spec["cls"], spec["cfg"], dtype, device)
            kw = {"latent_hw": spec["latent_hw"]} if spec["latent_hw"] else {}
            latent, forward = make_inputs(spec["kind"], model, spec["tokens"], spec["text"], dtype, device, **kw)
            base = dict(model=spec["name"], tokens=spec["tokens"], text_tokens=spec["text"] if spec["kind"] == "flux" else 0,
                        branches=len(spec["branches"]), dtype=str(dtype).removeprefix("torch."))
            loops: dict[tuple[str, str], tuple[Loop, Any]] = {}

            def loop(mode: str, label: str, config: Any, **apply_kw: Any) -> None:
                lp = Loop(model if config is None else share_weights(model), latent, forward, spec["branches"])  # noqa: F821 - called before the del below
                if config is not None:
                    cachekit.apply(lp, config, **apply_kw)
                loops[mode, label] = (lp, config)

            fi = cachekit.FixedIntervalConfig(interval=2, warmup=1, final_steps=1)
            loop("eager", "uncached", None)
            loop("eager", "fixed_interval 2", fi)
            if not args.no_compile:
                loop("compile", "nothing reused (hooks on)", cachekit.FixedIntervalConfig(interval=1), compile=compile_opts)
                loop("compile", "fixed_interval 2", fi, compile=compile_opts)
            keys = list(loops)
            timed = alternate([Pass(lambda r, lp=loops[k][0]: lp(args.steps)) for k in keys], args.repeats)
            med = {k: t.median * 1e3 for k, t in zip(keys, timed)}
            for (mode, label) in keys:
                lp, config = loops[mode, label]
                st = cachekit.stats(lp) if config is not None else None
                mode_base = med["eager", "uncached"] if mode == "eager" else med["compile", "nothing reused (hooks on)"]
                ms = med[mode, label]
                rows.append(dict(base, steps=args.steps, mode=mode, config=label,
                                 computed_fraction=f"{st.computed_fraction:.3f}" if st else "1.000",
                                 gen_ms=f"{ms:.1f}", step_ms=f"{ms / args.steps:.1f}",
                                 speedup_vs_uncached=f"{med['eager', 'uncached'] / ms:.3f}",
                                 speedup_vs_mode_baseline=f"{mode_base / ms:.3f}",
                                 cached_bytes=st.cached_bytes if st else 0, host_reads=st.host_reads if st else 0))
            for lp, config in loops.values():
                if config is not None:
                    cachekit.remove(lp)
            loops.clear()
            rows += sync_rows(model, latent, forward, spec, base, cuda, args, share_weights)
            del model
            if cuda:
                torch.cuda.empty_cache()
        except Exception as e:   # one line per failed model; the other sections go on
            rows.append(dict(model=spec["name"], note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))
            traceback.print_exc()
    return rows


def sync_rows(model: Any, latent: Any, forward: Callable, spec: dict, base: dict, cuda: bool, args: Any,
              share_weights: Callable) -> list[dict]:
    """Host syncs of one generation per method, eager, minus the uncached generation's own."""
    import cachekit

    steps = min(args.steps, 5)
    configs = [("uncached", None, "-"),
               ("fixed_interval 2", cachekit.FixedIntervalConfig(interval=2, warmup=1, final_steps=1), "planned"),
               ("ertacache linear", cachekit.ERTACacheConfig(reuse_steps=(2, 4), coefficients=((2, 1.0, 0.1), (4, 1.0, 0.1)),
                                                             num_steps=steps), "planned"),
               ("easycache", cachekit.EasyCacheConfig(threshold=0.2, warmup=2), "runtime"),
               ("block_drift", cachekit.BlockDriftConfig(threshold=0.2, warmup=2), "runtime")]
    rows, baseline = [], None
    for label, config, kind in configs:
        lp = Loop(model if config is None else share_weights(model), latent, forward, spec["branches"])
        if config is None:
            lp(steps)   # warm-up of the shared model (lazy initialisation, the scheduler's first index)
        else:
            cachekit.apply(lp, config)
        n = count_syncs(lambda: lp(steps), cuda)
        st = cachekit.stats(lp) if config is not None else None
        if config is None:
            baseline = n
        extra = None if n is None or baseline is None else (n - baseline) / steps
        rows.append(dict(base, steps=steps, mode="eager, syncs", config=f"{label} ({kind})",
                         computed_fraction=f"{st.computed_fraction:.3f}" if st else "1.000",
                         host_syncs="" if n is None else n, syncs_per_step="" if n is None else f"{n / steps:.2f}",
                         extra_syncs_per_step="" if extra is None else f"{extra:.2f}",
                         host_reads=st.host_reads if st else 0, cached_bytes=st.cached_bytes if st else 0,
                         note="" if cuda else "no CUDA: host_reads only (cachekit's own count)"))
        if config is not None:
            cachekit.remove(lp)
    return rows


# ---- 4. history storage ----------------------------------------------------------------------------------
def run_history(args: Any, dtype: Any, device: str, deadline: float) -> list[dict]:
    import torch

    import cachekit
    from bench_scale import build_from, make_inputs, share_weights
    from cachekit.evaluation.timing import Pass, alternate

    spec = model_specs(args.dry)[1]
    if time.perf_counter() > deadline:
        return [dict(model=spec["name"], note="skipped: --time-limit reached")]
    cuda = device == "cuda"
    model = build_from(spec["cls"], spec["cfg"], dtype, device)
    latent, forward = make_inputs(spec["kind"], model, spec["tokens"], spec["text"], dtype, device,
                                  latent_hw=spec["latent_hw"])
    config = cachekit.FixedIntervalConfig(interval=3, warmup=2, final_steps=1, units=True, forecast="taylor")
    steps = max(args.steps, 6)
    loops, peaks, outs = {}, {}, {}
    # a bf16 stream has nothing lower to be stored in: history='bf16' would be the default again
    for h in ("device", "host") + (("bf16",) if dtype != torch.bfloat16 else ()):
        lp = Loop(share_weights(model), latent, forward, spec["branches"])
        cachekit.apply(lp, config, history=h)
        loops[h] = lp

    @contextlib.contextmanager
    def peak(h: str):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            if cuda:
                peaks[h] = max(peaks.get(h, 0), torch.cuda.max_memory_allocated())

    def body(h: str, r: int) -> None:
        out = loops[h](steps)
        if r == 0:
            outs[h] = out

    timed = alternate([Pass(lambda r, h=h: body(h, r), around=lambda h=h: peak(h)) for h in loops],
                      max(1, args.repeats - 1))
    med = {h: t.median * 1e3 for h, t in zip(loops, timed)}
    rows = []
    ref = outs["device"]
    for h, lp in loops.items():
        st = cachekit.stats(lp)
        diff = (outs[h].float() - ref.float()).abs().max() / ref.float().abs().max()
        rows.append(dict(model=spec["name"], tokens=spec["tokens"], steps=steps,
                         config="fixed_interval 3, units, taylor 1", history=h, gen_ms=f"{med[h]:.1f}",
                         vs_device=f"{med[h] / med['device']:.3f}", peak_device_bytes=peaks.get(h, ""),
                         cached_bytes=st.cached_bytes, bit_exact_vs_device=bool(torch.equal(outs[h], ref)),
                         max_rel_change=f"{float(diff):.2e}",
                         note="" if cuda else "CPU: host is the same memory (no copies); no peak device memory"))
        cachekit.remove(lp)
    return rows


# ---- 5. summary ------------------------------------------------------------------------------------------
def summary(check: list[dict], bw: list[dict], models: list[dict], history: list[dict], env: dict) -> str:
    lines = [f"# gpu_bench ({'dry, CPU' if env['dry'] else env['device']})", "",
             f"torch {env['torch']}, triton {env['triton']}, diffusers {env['diffusers']}; {env['elapsed_s']:.0f} s", ""]
    if check:
        bad = [r for r in check if r.get("ok") is False]
        lines.append(f"- kernels vs references: {len(check) - len(bad)} / {len(check)} cases within tolerance"
                     + (f"; failing: {', '.join(r['kernel'] + ' ' + r['dtype'] + ' ' + r['shape'] for r in bad[:5])}" if bad else ""))
    fused = [r for r in bw if r.get("impl") == "fused"]
    if fused:
        worst = min(fused, key=lambda r: float(r["peak_share"]))
        lines.append(f"- fused kernels, share of HBM peak: {min(float(r['peak_share']) for r in fused):.2f} to "
                     f"{max(float(r['peak_share']) for r in fused):.2f} (target >= 0.80; lowest: {worst['kernel']} "
                     f"{worst['size']}); of measured copy bandwidth: {min(float(r['copy_share']) for r in fused):.2f} "
                     f"to {max(float(r['copy_share']) for r in fused):.2f}")
    for r in models:
        if r.get("note", "").startswith(("failed", "skipped")):
            lines.append(f"- {r['model']}: {r['note']}")
        elif r.get("mode") in ("eager", "compile"):
            lines.append(f"- {r['model']}, {r['mode']}, {r['config']}: {r['gen_ms']} ms per {r['steps']}-step generation, "
                         f"computed {r['computed_fraction']}, {r['speedup_vs_uncached']}x vs uncached eager, "
                         f"{r['speedup_vs_mode_baseline']}x vs its mode's baseline")
        elif r.get("mode") == "eager, syncs" and r.get("extra_syncs_per_step") != "":
            target = "0" if "planned" in r["config"] else ("<= 1" if "runtime" in r["config"] else "-")
            lines.append(f"- {r['model']}, {r['config']}: {r['extra_syncs_per_step']} host syncs per step beyond "
                         f"the uncached run's (target {target}); cachekit host reads {r['host_reads']}")
    for r in history:
        if "history" in r:
            lines.append(f"- history={r['history']}: {r['gen_ms']} ms ({r['vs_device']}x device), peak device "
                         f"{r['peak_device_bytes']} B, bit-exact vs device: {r['bit_exact_vs_device']}, "
                         f"max rel change {r['max_rel_change']}")
        elif r.get("note"):
            lines.append(f"- history: {r['note']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "gpu"), help="output folder")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes, fp32 (the test suite's mode)")
    ap.add_argument("--peak-gbs", type=float, default=4800.0, help="device peak bandwidth, GB/s (H200: 4800)")
    ap.add_argument("--steps", type=int, default=6, help="denoising steps per generation")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (medians)")
    ap.add_argument("--time-limit", type=float, default=450.0, help="no section starts after this many seconds")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=True passes")
    ap.add_argument("--diffusers-path", default=None, help="a folder holding diffusers (pip install --target)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    deadline = t0 + args.time_limit
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"   # read when the kernels module is imported (triton.jit)
    if args.diffusers_path:
        sys.path.insert(0, args.diffusers_path)
    sys.path.insert(0, str(ROOT / "eval"))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_flush_denormal(True)
    if args.dry:
        torch.set_num_threads(1)   # tiny ops: one thread (2-thread OpenMP barriers cost ms each on a busy machine)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.dry
    device = "cuda" if cuda else "cpu"
    has_triton = importlib.util.find_spec("triton") is not None
    has_diffusers = importlib.util.find_spec("diffusers") is not None
    env = dict(dry=args.dry, device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__,
               triton=__import__("triton").__version__ if has_triton else "absent",
               diffusers=__import__("diffusers").__version__ if has_diffusers else "absent",
               steps=args.steps, repeats=args.repeats, peak_gbs=args.peak_gbs, sections={})

    def section(name: str, fn: Callable[[], list[dict]], path: str, columns: list[str]) -> list[dict]:
        start = time.perf_counter()
        if start > deadline:
            rows = [dict(zip(columns[:1], [name]), note="skipped: --time-limit reached")]
        else:
            try:
                rows = fn()
            except Exception as e:
                traceback.print_exc()
                rows = [{columns[0]: name, "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}]
        write_csv(out / path, columns, rows)
        env["sections"][name] = round(time.perf_counter() - start, 1)
        print(f"[{time.perf_counter() - t0:6.1f} s] {name}: {len(rows)} rows -> {out / path}", flush=True)
        return rows

    if not has_triton and not cuda:
        check = section("kernels", lambda: check_kernels(device, [torch.float32], DRY_SHAPES, "reference"),
                        "kernels_check.csv", CHECK_COLUMNS)
    elif not has_triton:
        check = section("kernels", lambda: [dict(kernel="all", note="skipped: triton is not installed")],
                        "kernels_check.csv", CHECK_COLUMNS)
    else:
        dtypes = [torch.float32] if args.dry else [torch.float32, torch.bfloat16, torch.float16]
        check = section("kernels", lambda: check_kernels(device, dtypes, DRY_SHAPES if args.dry else SHAPES, "triton"),
                        "kernels_check.csv", CHECK_COLUMNS)
    impls = ("fused", "eager", "reference") if has_triton else ("eager", "reference")
    bw = section("bandwidth", lambda: kernel_bandwidth(device, DRY_BW_SIZES if args.dry else BW_SIZES, args.peak_gbs,
                                                        1 if args.dry else 10, impls), "kernels_bw.csv", BW_COLUMNS)
    dtype = torch.float32 if args.dry else torch.bfloat16
    if has_diffusers:
        models = section("models", lambda: run_models(args, dtype, device, deadline), "models.csv", MODEL_COLUMNS)
        history = section("history", lambda: run_history(args, dtype, device, deadline), "history.csv", HISTORY_COLUMNS)
    else:
        line = "skipped: diffusers is not importable (pass --diffusers-path DIR or set PYTHONPATH)"
        models = section("models", lambda: [dict(model="all", note=line)], "models.csv", MODEL_COLUMNS)
        history = section("history", lambda: [dict(model="all", note=line)], "history.csv", HISTORY_COLUMNS)
    env["elapsed_s"] = time.perf_counter() - t0
    (out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    text = summary(check, bw, models, history, env)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
