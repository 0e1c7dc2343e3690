"""``cachekit eval``: one uncached-vs-cached comparison written as report.json, report.md, PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..config import CacheConfig
from . import report as _report
from .loading import load_workload
from .runner import compare, environment, quality
from .shard import distributed_state, merge_outputs, merge_speed
from .timing import Pass
from .workloads import Workload, WorkloadError, read_inputs

__all__ = ["evaluate", "Workload", "WorkloadError", "load_workload", "read_inputs", "Pass"]


def evaluate(workload: Workload, config: CacheConfig, inputs: Sequence, seeds: Sequence[int], *,
             batch_size: int, repeats: int = 3, out_dir: str | Path | None = None,
             progress: bool = True, command: str | None = None, extra: Mapping[str, Pass] | None = None) -> dict:
    """Compare ``workload`` uncached and cached; write the report files when ``out_dir`` is given.
    ``extra``: more passes timed in the same rounds (``runner.compare_many``); their timings are
    returned under ``rep["_extra"]``, not written (one process only)."""
    from tqdm.auto import tqdm

    state = distributed_state()
    if state is not None and extra:
        raise ValueError("evaluate: extra passes are timed in one process only, not in a sharded run")
    shard = list(inputs)
    if state is not None:
        with state.split_between_processes(list(inputs)) as mine:
            shard = list(mine)
    res = None
    if shard:
        n_chunks = -(-len(shard) // batch_size) * len(seeds)
        with tqdm(total=2 * max(1, repeats) * n_chunks, desc=f"eval {workload.name}",
                  disable=not progress or (state is not None and not state.is_main_process), unit="batch") as bar:
            res = compare(workload, config, shard, seeds, batch_size, repeats, bar, extra)
    if state is not None:
        from accelerate.utils import gather_object

        parts = gather_object([{"n": len(shard), "ref": res and res["ref"].outputs, "cached": res and res["cached"].outputs,
                                "speed": res and res["speed"]}])
        if not state.is_main_process:
            return {}
        sizes = [p["n"] for p in parts]
        res["ref"].outputs = merge_outputs([p["ref"] for p in parts], sizes, len(seeds))
        res["cached"].outputs = merge_outputs([p["cached"] for p in parts], sizes, len(seeds))
        res["speed"] = merge_speed([p["speed"] for p in parts], sizes)
    ref, got = res["ref"], res["cached"]
    rep = {
        "schema": _report.SCHEMA_VERSION,
        "model": workload.name,
        "kind": workload.kind,
        "config": config.to_dict(),
        "inputs": [str(i) for i in inputs],
        "seeds": list(seeds),
        "steps": workload.steps,
        "batch_size": batch_size,
        "speed": res["speed"],
        "quality": quality(workload.kind, got.outputs, ref.outputs),
        "per_step_error": res["per_step_error"],
        "environment": environment(command),
        "files": {},
    }
    if workload.extra_metrics is not None:
        rep["extra"] = {k: {"uncached": a, "cached": b} for (k, a), (_, b) in zip(
            workload.extra_metrics(ref.outputs, inputs).items(), workload.extra_metrics(got.outputs, inputs).items())}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _report.save_samples(ref.outputs, got.outputs, out / "samples.png")
        rep["files"]["samples"] = "samples.png"
        if got.plan is not None:
            _report.save_plan(got.plan, got.steps, None, out / "plan.png")
            rep["files"]["plan"] = "plan.png"
        if rep["per_step_error"]:
            _report.save_error_curve(rep["per_step_error"], out / "error.png")
            rep["files"]["per_step_error"] = "error.png"
        rep["files"]["json"], rep["files"]["markdown"] = "report.json", "report.md"
        _report.write_json(rep, out / "report.json")
        (out / "report.md").write_text(_report.markdown(rep))
    rep["_outputs"] = {"uncached": ref.outputs, "cached": got.outputs, "plan": got.plan, "steps": got.steps}
    rep["_extra"] = res.get("extra") or {}
    return rep
