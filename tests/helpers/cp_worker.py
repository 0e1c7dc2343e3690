"""Worker processes for tests/families/test_parallel.py: tiny Flux and Wan under diffusers' context
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


def configs(loop: bool = False):
    from cachekit import BlockDriftConfig, EasyCacheConfig, FixedIntervalConfig

    out = {
        "easycache": EasyCacheConfig(threshold=0.15, warmup=2),
        "easycache+taylor": EasyCacheConfig(threshold=0.15, warmup=2, forecast="taylor"),
        "block_drift": BlockDriftConfig(threshold=0.3, warmup=2),
        "fixed_interval": FixedIntervalConfig(interval=2),
    }
    if loop:   # the hand-written loop's cases: every runtime-decided method
        out["block_drift+predict"] = BlockDriftConfig(threshold=0.3, warmup=2, predict=0.1)
    return out


def loop_inputs(family: str, pipe) -> dict:
    """The transformer's keyword arguments at a pipeline's first call (a user's sampler would
    prepare the same): the template of the hand-written loop."""
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("kw", dict(kwargs))

    handle = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        pipe(**call_kwargs(family, pipe, steps=1))
    handle.remove()
    return seen["kw"]


def hand_loop(family: str, model, template: dict, steps: int = STEPS) -> torch.Tensor:
    """A custom Euler sampler calling the bare transformer (no pipeline, no scheduler): the
    flow-matching sigmas from 1 down, one conditional forward per step."""
    x = template["hidden_states"].clone()
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    scale = 1.0 if family == "flux" else 1000.0   # Flux takes sigma (it multiplies by 1000), Wan the timestep
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((x.shape[0],), float(sigmas[i]) * scale)
            v = model(**{**template, "hidden_states": x, "timestep": t, "return_dict": False})[0]
            x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


def run(family: str, pipe) -> torch.Tensor:
    with torch.no_grad():
        return output_tensor(family, pipe(**call_kwargs(family, pipe, steps=STEPS)))


def single_process(family: str, name: str, loop: bool = False) -> dict:
    """The reference: one process, no parallelism (``loop``: the bare transformer in a hand-written loop)."""
    import cachekit

    pipe = build(family)
    template = loop_inputs(family, pipe) if loop else None
    cachekit.apply(pipe.transformer if loop else pipe, configs(loop)[name])
    out = hand_loop(family, pipe.transformer, template) if loop else run(family, pipe)
    s = cachekit.stats(pipe.transformer if loop else pipe)
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
            row["erta"] = plan_erta(stack, fraction=0.5).config
        else:
            if mode == "check":   # rank-local reads, as before: the check must name the disagreement
                from cachekit.runtime import parallel as P

                P.StatsReader.__call__ = lambda self, means, n: means.tolist()
            # "loop_*": the bare transformer in a hand-written sampler (no pipeline, no scheduler: its
            # first generation begins at apply, and only the timesteps tell steps)
            loop = order.startswith("loop_")
            template = loop_inputs(family, pipe) if loop else None
            target = pipe.transformer if loop else pipe
            config = configs(loop)[name]
            if order.endswith("apply_first"):
                cachekit.apply(target, config, check_ranks=mode == "check")
                parallel()
            else:
                parallel()
                cachekit.apply(target, config, check_ranks=mode == "check")
            try:
                row["out"] = hand_loop(family, pipe.transformer, template) if loop else run(family, pipe)
            except cachekit.RankMismatchError as e:
                row["error"] = str(e)
        if "bac" not in row:
            s = cachekit.stats(pipe.transformer if order.startswith("loop_") else pipe)
            row.update(plan=s.plan, host_reads=s.host_reads, collectives=s.collectives)
        results.append(row)
    (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(results))
    dist.barrier()
    dist.destroy_process_group()
