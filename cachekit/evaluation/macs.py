"""Count the multiply-adds of every ``nn.Linear`` inside a model's blocks as they actually run.

One yardstick for every caching method, ours and others': a block counter misses methods that
skip *inside* blocks (TaylorSeer forecasting attention outputs, PAB reusing one attention) or that
shrink the batch (FasterCache's CFG cache runs one half of a batched-CFG forward). A forward
pre-hook on each ``nn.Linear`` sees only the calls that really happen, at the batch they happen
with. Linear layers hold nearly all the multiply-adds of a DiT block at these sequence lengths
(attention scores add O(tokens^2 * width), which this count leaves out: it is a ratio, and the
ratio is what we report).

    with count_linear_macs(blocks) as counter:
        pipe(...)
    counter.macs          # multiply-adds of every Linear call inside ``blocks``
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

__all__ = ["LinearMacCounter", "count_linear_macs", "linear_macs", "macs_of"]


def linear_macs(layer: nn.Linear, x: torch.Tensor) -> int:
    """Multiply-adds of ``layer(x)``: one row of ``in_features`` per output feature, per row of x."""
    rows = x.numel() // layer.in_features
    return rows * layer.in_features * layer.out_features


class LinearMacCounter:
    """Forward pre-hooks on every ``nn.Linear`` under ``modules`` (each layer once, even when shared);
    ``macs`` accumulates until ``remove``. Nothing is left on any module after ``remove``."""

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.macs = 0
        self.calls = 0
        seen: dict[int, nn.Linear] = {}
        for root in modules:
            for m in root.modules():
                if isinstance(m, nn.Linear):
                    seen.setdefault(id(m), m)
        self.layers = list(seen.values())
        self._handles = [layer.register_forward_pre_hook(self._hook) for layer in self.layers]

    def _hook(self, layer: nn.Module, args: tuple) -> None:
        self.macs += linear_macs(layer, args[0])
        self.calls += 1

    def reset(self) -> None:
        self.macs = 0
        self.calls = 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextlib.contextmanager
def count_linear_macs(modules: Iterable[nn.Module]) -> Iterator[LinearMacCounter]:
    """A ``LinearMacCounter`` for the duration of the block, removed even if it raises."""
    counter = LinearMacCounter(modules)
    try:
        yield counter
    finally:
        counter.remove()


def macs_of(modules: Iterable[nn.Module], fn: Callable[[], object]) -> tuple[object, int]:
    """``(fn(), multiply-adds of the Linear layers under modules while fn ran)``."""
    with count_linear_macs(modules) as c:
        out = fn()
    return out, c.macs
