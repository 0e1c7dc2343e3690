"""Sharding ``cachekit eval`` over processes with accelerate.

Launch with ``accelerate launch --multi_gpu --num_processes N -m cachekit eval ...`` (on a CPU-only
machine accelerate still wants ``--multi_gpu``; it then runs gloo on the CPU) or ``torchrun
--nproc_per_node N -m cachekit eval ...``. Each process takes a contiguous shard of the inputs, runs
the uncached/cached comparison on it, and the main process gathers everything into one report.
accelerate is imported only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch


def distributed_state() -> Any | None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import PartialState
    except ImportError:
        raise RuntimeError("sharded eval needs accelerate: pip install 'cachekit[diffusers]'") from None
    return PartialState(cpu=not torch.cuda.is_available())


def merge_outputs(parts: Sequence[torch.Tensor], shard_sizes: Sequence[int], n_seeds: int) -> torch.Tensor:
    """Each shard's outputs are ordered seed-major over its own inputs; rebuild the seed-major
    order over all inputs that a single process would have produced."""
    per_seed = [p.reshape(n_seeds, size, *p.shape[1:]) for p, size in zip(parts, shard_sizes) if size]
    return torch.cat(per_seed, dim=1).flatten(0, 1)


def merge_speed(speeds: Sequence[dict], sizes: Sequence[int]) -> dict:
    """The sharded job's wall time is its slowest process; computed fraction weighted by shard size."""
    live = [(s, n) for s, n in zip(speeds, sizes) if n]
    unc = max(s["uncached_s"] for s, _ in live)
    cac = max(s["cached_s"] for s, _ in live)
    frac = sum(s["computed_fraction"] * n for s, n in live) / sum(n for _, n in live)
    return {"uncached_s": unc, "cached_s": cac, "speedup": unc / cac, "computed_fraction": frac,
            "ideal_speedup": 1 / frac, "repeats": live[0][0]["repeats"], "processes": len(speeds),
            "per_process": list(speeds)}
