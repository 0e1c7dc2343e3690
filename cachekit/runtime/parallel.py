"""Rank-consistent decisions under diffusers' context parallelism.

With ``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))`` every rank
holds a shard of the sequence. A decision taken from a rank's own shard differs between ranks: one
rank skips the blocks (and the all-to-all inside their attention) while another waits in it, a
hang (cache-dit's drift is all-reduced with ``AVG`` on the whole world: gloo has no AVG, it mixes
in data-parallel ranks, and a mean of per-rank means is biased when shards differ in size).

Here every statistic a decision reads is a mean over this rank's part of the main stream; the one
host read of a decision (``SegmentContext.read``) packs them as sums and the element count,
``[sum_1, ..., sum_k, n]`` in float64, and all-reduces that with ``SUM`` on the model's own
context-parallel group (the flattened mesh of diffusers' parallel config,
``interop.context_parallel_mesh``), once per decision, on every rank: every rank reaches the same
read at the same decision, because what leads there depends on
step indices and shapes only, which ranks share. The decision then equals the single-process one
up to summation order. A model that is not parallelised (pure data parallelism) issues no
collective at all. Step-indexed methods (fixed interval, BAC, ERTACache) read nothing.
"""

from __future__ import annotations

from typing import Any, Hashable

import torch

from . import interop
from ..errors import RankMismatchError  # noqa: F401 - defined in errors.py, importable here as before


def context_parallel_group(model: Any) -> Any:
    """The process group of the model's context parallelism, or None when it has none."""
    mesh = interop.context_parallel_mesh(model)
    if mesh is None:
        return None
    group = mesh.get_group()
    import torch.distributed as dist

    return group if dist.get_world_size(group) > 1 else None


class StatsReader:
    """``SegmentContext.read`` for one applied model: local ``.tolist()``, or the packed all-reduce.

    Attributes:
        group: the context-parallel group, looked up at each generation start (``refresh``), so
            ``enable_parallelism`` before or after ``apply`` both work.
        counts: the generation whose ``host_reads`` / ``collectives`` it counts.
    """

    def __init__(self) -> None:
        self.group: Any = None
        self.counts: Any = None

    def refresh(self, model: Any, counts: Any) -> None:
        self.group = context_parallel_group(model)
        self.counts = counts

    def __call__(self, means: torch.Tensor, n: int) -> list[float]:
        self.counts.host_reads += 1
        if self.group is None:
            return means.tolist()
        import torch.distributed as dist

        flat = means.reshape(-1).to(torch.float64)
        packed = torch.cat([flat * n, flat.new_tensor([float(n)])])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.group)
        self.counts.collectives += 1
        return (packed[:-1] / packed[-1]).reshape(means.shape).tolist()

    def check(self, step: int, index: int, branch: Hashable, compute: bool) -> None:
        """All-gather one decision on the group and raise if the ranks differ (``check_ranks``)."""
        if self.group is None:
            return
        import torch.distributed as dist

        mine = (step, index, bool(compute))
        seen: list[Any] = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(seen, mine, group=self.group)
        if any(s != mine for s in seen):
            ranks = ", ".join(f"rank {dist.get_global_rank(self.group, r)}: {'compute' if s[2] else 'reuse'}"
                              f"{'' if s[:2] == mine[:2] else f' at step {s[0]} #{s[1]}'}" for r, s in enumerate(seen))
            raise RankMismatchError(f"cachekit: ranks disagree at step {step}, segment/unit {index} ({ranks}); "
                                    f"they would hang in the model's collectives")
