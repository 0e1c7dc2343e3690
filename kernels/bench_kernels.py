"""Fused kernels vs the eager compositions they replace, at Wan-1.3B and Flux stream sizes; writes CSV.

    python kernels/bench_kernels.py --out kernels/results.csv [--peak-gbs 4800] [--quick]

Per kernel and size, up to three rows: ``fused`` (the Triton kernel, CUDA only), ``eager`` (the
torch ops a hook would otherwise run: ``x + w0*t0 + ...``; ``(a-b).abs().mean(), b.abs().mean()``;
``out - inp`` then the two means) and ``reference`` (``cachekit.kernels.*_reference``, the CPU path).
Without CUDA only the references are timed, on CPU, and the ``backend`` column says
``reference-cpu``. Columns: time (median, ms), GB/s = bytes the op must move (each input read once,
each output written once) / time, and on CUDA the share of ``--peak-gbs`` (default 4800: H200 HBM3e).
CUDA timings use triton.testing.do_bench (L2 flushed between runs); CPU ones perf_counter, after
one warm-up call.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

import torch

from cachekit import kernels as K

# (name, tokens, hidden): Wan2.1-1.3B at 480x832x81 frames (21x30x52 latent patches), Flux at 1024^2
# (64x64 image patches + 512 text tokens) in its joint stream.
SIZES = [("wan1.3b", 32760, 1536), ("flux", 4096 + 512, 3072)]
QUICK_ROW_DIVISOR = 16  # --quick: 1/16 of the tokens (2,047 x 1,536 for Wan), 3 repeats
WEIGHTS3 = [1.5, -0.75, 0.25]  # a 2nd-order forecast's weights: any non-trivial values time the same


def eager_reuse(x, terms, weights):
    out = x + weights[0] * terms[0] if weights[0] != 1.0 else x + terms[0]
    for t, w in zip(terms[1:], weights[1:]):
        out = out + w * t
    return out


def eager_drift(a, b):
    return (a - b).abs().mean(dtype=torch.float32), b.abs().mean(dtype=torch.float32)


def eager_residual_stats(out, inp, ref):
    r = out - inp
    return r, (r - ref).abs().mean(dtype=torch.float32), ref.abs().mean(dtype=torch.float32)


def cases(x, ts):
    """(kernel, tensors read + written, {impl: fn}) for every benchmarked op on inputs x, ts[0..2]."""
    a, b, ref = x, ts[0], ts[1]
    return [
        ("reuse_1term", 3, {"fused": lambda: K.reuse(x, ts[:1], [1.0], backend="triton"),
                            "eager": lambda: eager_reuse(x, ts[:1], [1.0]),
                            "reference": lambda: K.reuse_reference(x, ts[:1], [1.0])}),
        ("reuse_3terms", 5, {"fused": lambda: K.reuse(x, ts, WEIGHTS3, backend="triton"),
                             "eager": lambda: eager_reuse(x, ts, WEIGHTS3),
                             "reference": lambda: K.reuse_reference(x, ts, WEIGHTS3)}),
        ("drift_stats", 2, {"fused": lambda: K.drift_stats(a, b, backend="triton"),
                            "eager": lambda: eager_drift(a, b),
                            "reference": lambda: K.drift_stats_reference(a, b)}),
        ("residual_with_stats", 4, {"fused": lambda: K.residual_with_stats(a, b, ref, backend="triton"),
                                    "eager": lambda: eager_residual_stats(a, b, ref),
                                    "reference": lambda: K.residual_with_stats_reference(a, b, ref)}),
    ]


def time_ms(fn, cuda: bool, repeats: int) -> float:
    if cuda:
        import triton.testing
        return float(triton.testing.do_bench(fn, warmup=25, rep=100 if repeats > 3 else 25, return_mode="median"))
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="kernels/results.csv", help="CSV path")
    ap.add_argument("--peak-gbs", type=float, default=4800.0, help="device peak bandwidth, GB/s (H200: 4800)")
    ap.add_argument("--quick", action="store_true", help=f"1/{QUICK_ROW_DIVISOR} of the tokens, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="CPU repeats (default 10, --quick 3)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    device_name = torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})"
    repeats = args.repeats or (3 if args.quick else 10)
    impls = ("fused", "eager", "reference") if cuda else ("reference",)
    backend_of = {"fused": "triton-cuda", "eager": "eager-cuda", "reference": "reference-cuda" if cuda else "reference-cpu"}
    if not cuda:
        print("no CUDA device: timing only the eager references on CPU (backend=reference-cpu)")

    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for model, tokens, hidden in SIZES:
        tokens = tokens // QUICK_ROW_DIVISOR if args.quick else tokens
        shape, dtype = (tokens, hidden), torch.bfloat16
        x, *ts = (torch.randn(shape, generator=g, device=device).to(dtype) for _ in range(4))
        for kernel, tensors_moved, fns in cases(x, ts):
            nbytes = tensors_moved * x.numel() * x.element_size()
            for impl in impls:
                ms = time_ms(fns[impl], cuda, repeats)
                gbs = nbytes / (ms * 1e-3) / 1e9
                rows.append(dict(kernel=kernel, model=model, shape="x".join(map(str, shape)), dtype="bf16",
                                 impl=impl, backend=backend_of[impl], time_ms=f"{ms:.4f}", bytes=nbytes,
                                 gbs=f"{gbs:.1f}", peak_share=f"{gbs / args.peak_gbs:.3f}" if cuda else "",
                                 device=device_name))
                print(f"{model:8s} {kernel:20s} {impl:9s} {ms:9.3f} ms {gbs:8.1f} GB/s")
        del x, ts

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
