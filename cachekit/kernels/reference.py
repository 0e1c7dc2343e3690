"""Eager torch references for the caching primitives (the CPU path and the test oracle)."""

from __future__ import annotations

import torch


def residual(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """What a block range added to the stream: out - inp, kept in the stream's dtype."""
    return out - inp


def add_residual(inp: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
    """Reuse step: the cached residual added to the current input (a new tensor, never in place:
    the input may still be referenced by the model)."""
    return inp + res


def mean_abs(x: torch.Tensor) -> float:
    """mean|x| accumulated in fp32 (bf16 sums over 10^6+ elements lose ~3 digits)."""
    return float(x.abs().mean(dtype=torch.float32))


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean|a - b| accumulated in fp32."""
    return float((a - b).abs().mean(dtype=torch.float32))
