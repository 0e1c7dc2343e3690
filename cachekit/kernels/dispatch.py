"""Choosing between the fused Triton kernels and the eager references, behind torch custom ops.

Rule: ``backend`` (or, when it is None, the env var ``CACHEKIT_KERNELS`` read at every call) is
one of
  * ``"auto"`` (default): the Triton kernel when the tensors are on CUDA and triton imports, else
    the reference. CPU tensors never import triton.
  * ``"triton"``: the kernel, always (on CPU only under ``TRITON_INTERPRET=1``: the tests).
  * ``"reference"``: the eager reference.
Cases the flat kernels do not cover go to the reference whatever the backend: empty tensors,
shapes that differ (broadcasting), dtypes other than fp32/fp16/bf16, more than 4 reuse terms.

In eager mode, a call bound for the reference runs it directly: calling any custom op the first
time imports torch._dynamo (~1 s, and it imports triton), and the op hop costs ~10 us a call.
Kernel-bound calls, and every call under ``torch.compile``, go through the ops.

Each entry point is a ``torch.library`` custom op (``cachekit::reuse``, ``cachekit::reuse_``,
``cachekit::drift_stats``, ``cachekit::residual_with_stats``) with a fake implementation, so
``torch.compile`` traces through it as one opaque node instead of into Triton launch code. The
backend name travels as a string argument: the env var is read once, at trace time, under compile.
No autograd formula is registered: caching runs under ``torch.no_grad`` / inference mode.
"""

import functools
import os
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import torch

from .reference import drift_stats_reference, residual_with_stats_reference, reuse_reference

BACKENDS = ("auto", "triton", "reference")
ENV_VAR = "CACHEKIT_KERNELS"
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_TERMS = 4  # the reuse kernel has 4 term pointers (residual + up to 3 forecast differences)


def _env_backend() -> str:
    return os.environ.get(ENV_VAR, "auto")


# Under torch.compile the env var is read once, at trace time, as a constant: the mark is what
# torch._dynamo.assume_constant_result sets (an attribute: nothing is imported). Without it torch
# 2.4's dynamo fails to trace os.environ.get ("Unsupported constant fold exception: KeyError").
_env_backend._dynamo_marked_constant = True


def resolve_backend(backend: Optional[str] = None) -> str:
    """The backend name to use: ``backend``, or ``$CACHEKIT_KERNELS`` (default "auto") when None."""
    name = _env_backend() if backend is None else backend
    if name not in BACKENDS:
        source = f"{ENV_VAR}={name!r}" if backend is None else f"backend={name!r}"
        raise ValueError(f"cachekit kernels: unknown {source}; expected one of {', '.join(BACKENDS)}")
    return name


@functools.lru_cache(maxsize=None)
def _triton_module() -> Optional[ModuleType]:
    """The Triton kernels module, imported on first use (the only cache kept); None without triton."""
    try:
        from . import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def _kernels_for(backend: str, tensors: Sequence[torch.Tensor]) -> Optional[ModuleType]:
    """The Triton module when ``backend`` and these tensors call for the kernel, else None (reference)."""
    if backend == "reference":
        return None
    first = tensors[0]
    if (first.numel() == 0 or first.dtype not in _KERNEL_DTYPES
            or any(t.shape != first.shape or t.device != first.device or t.dtype not in _KERNEL_DTYPES
                   for t in tensors)):
        return None
    if backend == "auto" and first.device.type != "cuda":
        return None
    module = _triton_module()
    if module is None and backend == "triton":
        raise ImportError("cachekit kernels: backend 'triton' needs the triton package (pip install 'cachekit[triton]')")
    return module


# ---- custom ops: real implementations dispatch, fake ones give shapes for torch.compile ----------
# typing.List / Tuple in the op signatures: torch 2.4's schema inference does not take list[...]

@torch.library.custom_op("cachekit::reuse", mutates_args=())
def _reuse_op(x: torch.Tensor, terms: List[torch.Tensor], weights: List[float], backend: str) -> torch.Tensor:
    kernels = _kernels_for(backend, [x, *terms]) if len(terms) <= _MAX_TERMS else None
    if kernels is None:
        return reuse_reference(x, terms, weights).contiguous()
    return kernels.reuse(x, terms, weights)


@_reuse_op.register_fake
def _(x, terms, weights, backend):
    return x.new_empty(x.shape)


@torch.library.custom_op("cachekit::reuse_", mutates_args=("x",))
def _reuse_inplace_op(x: torch.Tensor, terms: List[torch.Tensor], weights: List[float], backend: str) -> None:
    kernels = _kernels_for(backend, [x, *terms]) if len(terms) <= _MAX_TERMS else None
    if kernels is None:
        reuse_reference(x, terms, weights, inplace=True)
    else:
        kernels.reuse(x, terms, weights, inplace=True)


@_reuse_inplace_op.register_fake
def _(x, terms, weights, backend):
    return None


@torch.library.custom_op("cachekit::drift_stats", mutates_args=())
def _drift_stats_op(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    kernels = _kernels_for(backend, [a, b])
    return drift_stats_reference(a, b) if kernels is None else kernels.drift_stats(a, b)


@_drift_stats_op.register_fake
def _(a, b, backend):
    return a.new_empty(2, dtype=torch.float32)


@torch.library.custom_op("cachekit::residual_with_stats", mutates_args=())
def _residual_with_stats_op(out: torch.Tensor, inp: torch.Tensor, ref: Optional[torch.Tensor],
                            backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    kernels = _kernels_for(backend, [out, inp] + ([] if ref is None else [ref]))
    # The kernel writes r in out's dtype; mixed out/inp dtypes would promote in torch, so: reference.
    if kernels is None or inp.dtype != out.dtype:
        r, stats = residual_with_stats_reference(out, inp, ref)
        return r.contiguous(), stats
    return kernels.residual_with_stats(out, inp, ref)


@_residual_with_stats_op.register_fake
def _(out, inp, ref, backend):
    return out.new_empty(out.shape), out.new_empty(2, dtype=torch.float32)


# ---- public API: same signatures and semantics as the references, plus ``backend`` ---------------

def _eager_reference(backend: str, tensors: Sequence[torch.Tensor]) -> bool:
    """True when the call can run the reference directly, skipping the custom op (see module doc)."""
    return not torch.compiler.is_compiling() and _kernels_for(backend, tensors) is None


def reuse(x: torch.Tensor, terms: Sequence[torch.Tensor], weights: Sequence[float], *, inplace: bool = False,
          backend: Optional[str] = None) -> torch.Tensor:
    """``x + sum_i weights[i] * terms[i]`` accumulated in fp32, rounded once to x's dtype (see
    ``reuse_reference``); ``inplace`` writes into x and returns it. ``backend``: see module doc."""
    name = resolve_backend(backend)
    terms, weights = list(terms), [float(w) for w in weights]
    if len(terms) != len(weights) or not terms:
        raise ValueError(f"reuse: {len(terms)} terms and {len(weights)} weights; need the same number >= 1")
    if len(terms) > _MAX_TERMS or _eager_reference(name, [x, *terms]):
        return reuse_reference(x, terms, weights, inplace=inplace)
    if inplace:
        torch.ops.cachekit.reuse_(x, terms, weights, name)
        return x
    return torch.ops.cachekit.reuse(x, terms, weights, name)


def drift_stats(a: torch.Tensor, b: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """``[mean|a - b|, mean|b|]``, fp32, shape (2,), on a's device (no host sync)."""
    name = resolve_backend(backend)
    if _eager_reference(name, [a, b]):
        return drift_stats_reference(a, b)
    return torch.ops.cachekit.drift_stats(a, b, name)


def residual_with_stats(out: torch.Tensor, inp: torch.Tensor, ref: Optional[torch.Tensor], *,
                        backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r = out - inp, [mean|r - ref|, mean|ref|])``; ref None means ref = r."""
    name = resolve_backend(backend)
    if inp.dtype != out.dtype or _eager_reference(name, [out, inp] + ([] if ref is None else [ref])):
        return residual_with_stats_reference(out, inp, ref)
    return torch.ops.cachekit.residual_with_stats(out, inp, ref, name)
