"""The one timing loop behind every same-run speed figure: eval, sweep, tune, the demo, the policy
evaluation and the benchmark scripts.

These machines are noisy: a speedup is only fair as a ratio taken in one stretch of machine time.
So every pass being compared runs once untimed (lazy initialisation, allocator growth), then in
each of ``repeats`` rounds every pass runs once, in order, and the median of each is kept. What a
pass needs around it (applying and removing a cache, installing another library's) is done outside
the timed region, so an uncached pass is really uncached and set-up is never counted.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Sequence

import torch

__all__ = ["Pass", "Timed", "alternate"]


@dataclass(frozen=True)
class Pass:
    """One thing to time.

    Attributes:
        body: the timed work, called with the round index (-1 for the untimed warm-up, then
            0 .. repeats-1), so a pass can do less in its warm-up or record only in round 0.
        around: a context manager factory entered outside the timed region of every round
            (``lambda: applied(target, config)``).
        warmup: run the warm-up round for this pass.
    """

    body: Callable[[int], Any]
    around: Callable[[], ContextManager] = contextlib.nullcontext
    warmup: bool = True


@dataclass
class Timed:
    """Wall seconds of one pass's timed rounds, in order, and what its first round returned (the
    others are dropped as they come: outputs are deterministic, and memory stays one round's)."""

    times: list[float] = field(default_factory=list)
    first: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def alternate(passes: Sequence[Pass], repeats: int) -> list[Timed]:
    """Warm-up, then ``max(1, repeats)`` rounds running every pass once in order (module doc)."""
    for p in passes:
        if p.warmup:
            with p.around():
                p.body(-1)
    out = [Timed() for _ in passes]
    for r in range(max(1, repeats)):
        for p, timed in zip(passes, out):
            with p.around():
                _sync()
                t0 = time.perf_counter()
                result = p.body(r)
                _sync()
                timed.times.append(time.perf_counter() - t0)
            if r == 0:
                timed.first = result
    return out
