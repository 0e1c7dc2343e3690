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


def reuse_reference(x: torch.Tensor, terms: list[torch.Tensor] | tuple[torch.Tensor, ...],
                    weights: list[float] | tuple[float, ...], *, inplace: bool = False) -> torch.Tensor:
    """Reuse step with forecasting: ``x + sum_i weights[i] * terms[i]``, accumulated in fp32 and
    rounded once to x's dtype. One term with weight 1.0 is plain reuse, ``x + r``, bit for bit (the
    dtype's own add rounds the exact fp32 sum the same way). ``inplace`` writes into ``x``.

    Args:
        x: the current input of the reused range (any shape).
        terms: 1 to 4 cached tensors of x's shape and dtype (residual, its finite differences, ...).
        weights: one python float per term.
    """
    if len(terms) != len(weights) or not terms:
        raise ValueError(f"reuse: {len(terms)} terms and {len(weights)} weights; need the same number >= 1")
    if len(terms) == 1 and float(weights[0]) == 1.0:
        return x.add_(terms[0]) if inplace else x + terms[0]
    # One fused multiply-add per term (torch.add's alpha), in fp32 by type promotion, instead of a
    # mul and an add per term: a first-order Taylor forecast makes 2 passes over the output, not 4.
    # On tiny models these elementwise passes are a visible share of a forecast step (docs/default.md).
    acc = torch.add(x.to(torch.float32), terms[0], alpha=float(weights[0]))
    for t, w in zip(terms[1:], weights[1:]):
        acc.add_(t, alpha=float(w))
    if inplace:
        return x.copy_(acc)
    return acc.to(x.dtype)


def drift_stats_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[mean|a - b|, mean|b|]`` as one fp32 tensor of shape (2,) on a's device (no host sync):
    the relative drift of a against the reference b is stats[0] / stats[1]."""
    d = (a.to(torch.float32) - b.to(torch.float32)).abs().mean()
    return torch.stack([d, b.abs().mean(dtype=torch.float32)])


def residual_with_stats_reference(out: torch.Tensor, inp: torch.Tensor,
                                  ref: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``r = out - inp`` (in out's dtype, equal to ``residual``) and, on the device, the drift
    statistics ``[mean|r - ref|, mean|ref|]`` of r against a reference residual; with no reference,
    ref = r, i.e. ``[0, mean|r|]`` (no drift on the first step)."""
    r = out - inp
    return r, drift_stats_reference(r, r if ref is None else ref)
