"""Fused Triton kernels for the caching hot path, with their launchers (private: go through
``cachekit.kernels``, which picks these or the references).

Imported lazily by the dispatch only (``import cachekit`` never imports triton). On a CPU tensor
these only run under ``TRITON_INTERPRET=1``, read when this module is imported (``triton.jit``
decides at decoration time), which is how the tests exercise them.

All three kernels are flat 1-D over contiguous memory: the launchers make non-contiguous inputs
contiguous first (one extra copy, which the caching runtime never pays: block outputs are
contiguous). Every load is upcast to fp32 before any arithmetic (fp16/bf16 sums over 10^6+
elements lose ~3 digits otherwise, and the interpreter has no bf16 arithmetic at all), and results
are rounded once to the output dtype.

The reductions are two-stage and deterministic: each program writes its fp32 partial sums to a
small buffer (one per block: 12k for a Wan-1.3B 32760x1536 stream at 4096 per block), and one
program then sums those in a fixed order and divides by n. No atomics, no host sync.
"""

# No ``from __future__ import annotations`` here: Triton 3.0 (torch 2.4's) reads ``tl.constexpr``
# from the evaluated annotations, and string annotations left BLOCK a plain int in its interpreter.
from typing import Optional

import torch
import triton
import triton.language as tl

# Elementwise: 1024 per program, 4 warps (8 elements per thread, 16-byte bf16 vectors).
REUSE_BLOCK = 1024
# Reductions: larger blocks mean fewer partials for the second stage (12k vs 49k at Wan size).
REDUCE_BLOCK = 4096
FINISH_BLOCK = 1024
MAX_TERMS = 4


@triton.jit
def _reuse_kernel(x_ptr, out_ptr, t0_ptr, t1_ptr, t2_ptr, t3_ptr, w0, w1, w2, w3, n,
                  N_TERMS: tl.constexpr, BLOCK: tl.constexpr):
    # int64 offsets: video latents can pass 2^31 elements.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # Unused term pointers alias x and are never read: N_TERMS is a compile-time constant.
    acc += w0 * tl.load(t0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_TERMS > 1:
        acc += w1 * tl.load(t1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_TERMS > 2:
        acc += w2 * tl.load(t2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_TERMS > 3:
        acc += w3 * tl.load(t3_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _drift_partials_kernel(a_ptr, b_ptr, partial_ptr, n, num_blocks, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # partial buffer is (2, num_blocks): row 0 sums |a - b|, row 1 sums |b|.
    tl.store(partial_ptr + pid, tl.sum(tl.abs(a - b), axis=0))
    tl.store(partial_ptr + num_blocks + pid, tl.sum(tl.abs(b), axis=0))


@triton.jit
def _residual_partials_kernel(out_ptr, inp_ptr, ref_ptr, r_ptr, partial_ptr, n, num_blocks,
                              HAS_REF: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    o = tl.load(out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    i = tl.load(inp_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # The difference of two fp16/bf16 values is computed in fp32 and rounded once, as torch does.
    r = (o - i).to(r_ptr.dtype.element_ty)
    tl.store(r_ptr + offs, r, mask=mask)
    # Statistics of r as stored (rounded), so they match the reference's stats on the returned r.
    r32 = r.to(tl.float32)
    if HAS_REF:
        ref = tl.load(ref_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(partial_ptr + pid, tl.sum(tl.abs(r32 - ref), axis=0))
        tl.store(partial_ptr + num_blocks + pid, tl.sum(tl.abs(ref), axis=0))
    else:
        # No reference: ref = r, so [mean|r - r|, mean|r|] = [0, mean|r|] (ref is never loaded).
        tl.store(partial_ptr + pid, 0.0)
        tl.store(partial_ptr + num_blocks + pid, tl.sum(tl.abs(r32), axis=0))


@triton.jit
def _finish_means_kernel(partial_ptr, stats_ptr, num_blocks, n, BLOCK: tl.constexpr):
    # One program, fixed summation order: the same inputs give the same bits on every call.
    acc0 = tl.zeros([BLOCK], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_blocks, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < num_blocks
        acc0 += tl.load(partial_ptr + offs, mask=mask, other=0.0)
        acc1 += tl.load(partial_ptr + num_blocks + offs, mask=mask, other=0.0)
    tl.store(stats_ptr, tl.sum(acc0, axis=0) / n)
    tl.store(stats_ptr + 1, tl.sum(acc1, axis=0) / n)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1)


def _finish(partials: torch.Tensor, n: int, num_blocks: int, device: torch.device,
            block: int = FINISH_BLOCK) -> torch.Tensor:
    stats = torch.empty(2, dtype=torch.float32, device=device)
    _finish_means_kernel[(1,)](partials, stats, num_blocks, n, BLOCK=block)
    return stats


def reuse(x: torch.Tensor, terms, weights, *, inplace: bool = False, block: int = REUSE_BLOCK) -> torch.Tensor:
    """``x + sum_i weights[i] * terms[i]`` in one pass (fp32 accumulation); ``inplace`` writes into x.
    Shapes must already match (the dispatch sends broadcasting cases to the reference)."""
    if not 1 <= len(terms) <= MAX_TERMS or len(terms) != len(weights):
        raise ValueError(f"reuse: {len(terms)} terms and {len(weights)} weights; need the same number, 1 to {MAX_TERMS}")
    n = x.numel()
    xf = _flat(x)
    ts = [_flat(t) for t in terms]
    ws = [float(w) for w in weights]
    pad = MAX_TERMS - len(ts)
    # In place on a contiguous x writes straight into its storage; a non-contiguous x gets the result
    # of the contiguous copy copied back (each element is read before it is written by one program).
    dst = xf if inplace else torch.empty_like(xf)
    if n:
        _reuse_kernel[(triton.cdiv(n, block),)](xf, dst, *ts, *([xf] * pad), *ws, *([0.0] * pad), n,
                                                 N_TERMS=len(ts), BLOCK=block)
    if inplace:
        if not x.is_contiguous():
            x.copy_(dst.view(x.shape))
        return x
    return dst.view(x.shape)


def drift_stats(a: torch.Tensor, b: torch.Tensor, *, block: int = REDUCE_BLOCK,
                finish_block: int = FINISH_BLOCK) -> torch.Tensor:
    """``[mean|a - b|, mean|b|]`` as fp32 (2,) on a's device, one read of a and b. ``block`` and
    ``finish_block`` exist for the tests (many partials, several second-stage passes at small n)."""
    n = a.numel()
    num_blocks = triton.cdiv(n, block)
    partials = torch.empty(2, num_blocks, dtype=torch.float32, device=a.device)
    _drift_partials_kernel[(num_blocks,)](_flat(a), _flat(b), partials, n, num_blocks, BLOCK=block)
    return _finish(partials, n, num_blocks, a.device, finish_block)


def residual_with_stats(out: torch.Tensor, inp: torch.Tensor, ref: Optional[torch.Tensor], *,
                        block: int = REDUCE_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """``r = out - inp`` (out's dtype) and ``[mean|r - ref|, mean|ref|]`` in one pass (ref None: ref = r)."""
    n = out.numel()
    num_blocks = triton.cdiv(n, block)
    outf = _flat(out)
    r = torch.empty_like(outf)
    partials = torch.empty(2, num_blocks, dtype=torch.float32, device=out.device)
    reff = outf if ref is None else _flat(ref)  # never read when HAS_REF is False
    _residual_partials_kernel[(num_blocks,)](outf, _flat(inp), reff, r, partials, n, num_blocks,
                                             HAS_REF=ref is not None, BLOCK=block)
    return r.view(out.shape), _finish(partials, n, num_blocks, out.device)
