"""Worker processes for tests/test_parallel.py: tiny Flux and Wan under diffusers' context
parallelism (Ulysses, degree 2, gloo on CPU), cachekit applied before or after
``enable_parallelism``. Each rank writes its plans, counters and outputs to ``rank{r}.pt``."""

from __future__ import annotations

import os
import pickle
import sys
from datetime import timedelta
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_pipelines import build, call_kwargs, output_tensor  # noqa: E402

STEPS = 8


def configs():
    from cachekit import BlockDriftConfig, EasyCacheConfig, FixedIntervalConfig

    return {
        "easycache": EasyCacheConfig(threshold=0.15, warmup=2),
        "easycache+taylor": EasyCacheConfig(threshold=0.15, warmup=2, forecast="taylor"),
        "block_drift": BlockDriftConfig(threshold=0.3, warmup=2),
        "fixed_interval": FixedIntervalConfig(interval=2),
    }


def run(family: str, pipe) -> torch.Tensor:
    with torch.no_grad():
        return output_tensor(family, pipe(**call_kwargs(family, pipe, steps=STEPS)))


def single_process(family: str, name: str, bare: bool = False) -> dict:
    """The reference: one process, no parallelism (``bare``: applied to the transformer alone)."""
    import cachekit

    pipe = build(family)
    cachekit.apply(pipe.transformer if bare else pipe, configs()[name])
    out = run(family, pipe)
    s = cachekit.stats(pipe.transformer if bare else pipe)
    return {"plan": s.plan, "out": out, "host_reads": s.host_reads, "collectives": s.collectives}


def worker(rank: int, world: int, port: int, out_dir: str, cases: list, mode: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=int(os.environ.get("CK_TEST_TIMEOUT", "60"))))
    torch.accelerator.device_count = lambda: 1   # diffusers computes rank % device_count (0 on CPU builds)
    import cachekit
    from diffusers import ContextParallelConfig

    results = []
    for family, name, order in cases:
        pipe = build(family)

        def parallel():
            pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))

        row = {"case": (family, name, order)}
        if mode == "data":   # no parallelism on the model; uneven work per process
            cachekit.apply(pipe, configs()[name])
            for _ in range(1 + rank):
                row["out"] = run(family, pipe)
        elif mode == "record":   # calibration under context parallelism: one plan for every rank
            from cachekit.planning import plan_bac, plan_erta

            parallel()
            runs = [lambda: run(family, pipe)]
            row["bac"] = plan_bac(cachekit.record(pipe, runs), updates=4).config
            stack = cachekit.record(pipe, runs, level="stack")
            row["erta"] = plan_erta(stack.arrays(), stack.fingerprint, fraction=0.5).config
        else:
            if mode == "check":   # rank-local reads, as before: the check must name the disagreement
                from cachekit.runtime import parallel as P

                P.StatsReader.__call__ = lambda self, means, n: means.tolist()
            # "bare_*": applied to the transformer alone (no scheduler: its first generation begins
            # at apply, and only the model's own calls tell steps)
            target = pipe.transformer if order.startswith("bare_") else pipe
            if order.endswith("apply_first"):
                cachekit.apply(target, configs()[name], check_ranks=mode == "check")
                parallel()
            else:
                parallel()
                cachekit.apply(target, configs()[name], check_ranks=mode == "check")
            try:
                row["out"] = run(family, pipe)
            except cachekit.RankMismatchError as e:
                row["error"] = str(e)
        if "bac" not in row:
            s = cachekit.stats(pipe.transformer if order.startswith("bare_") else pipe)
            row.update(plan=s.plan, host_reads=s.host_reads, collectives=s.collectives)
        results.append(row)
    (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(results))
    dist.barrier()
    dist.destroy_process_group()
