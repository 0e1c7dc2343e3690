"""The benchmark scripts of issue 18: ``eval/gpu_bench.py --dry`` end to end (a subprocess, as on
the GPU machine) and the pieces of ``eval/bench_scale.py`` that its figures rest on."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "eval"))

import bench_scale  # noqa: E402
import gpu_bench  # noqa: E402


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_dry")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "eval" / "gpu_bench.py"), "--dry", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def test_dry_kernels_match_their_references(dry):
    cols, rows = _rows(dry / "kernels_check.csv")
    assert cols == gpu_bench.CHECK_COLUMNS
    assert {(r["kernel"], r["shape"]) for r in rows} == {(c, "x".join(map(str, s))) for c in gpu_bench.CASES
                                                          for s in gpu_bench.DRY_SHAPES}
    assert all(r["ok"] == "True" and float(r["worst_tol_ratio"]) <= 1 for r in rows)
    cols, rows = _rows(dry / "kernels_bw.csv")
    assert cols == gpu_bench.BW_COLUMNS
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"copy", "reuse_1term", "reuse_3terms", "drift_stats", "residual_with_stats"}
    assert all(float(r["gbs"]) > 0 for r in rows)


def test_dry_models_time_cache_and_count_host_reads(dry):
    cols, rows = _rows(dry / "models.csv")
    assert cols == gpu_bench.MODEL_COLUMNS
    assert not [r for r in rows if r["note"].startswith(("failed", "skipped"))]
    for model, branches in (("flux (tiny)", "1"), ("wan (tiny)", "2")):
        mine = {(r["mode"], r["config"]): r for r in rows if r["model"] == model}
        assert {m for m, _ in mine} == {"eager", "compile", "eager, syncs"}
        fi = mine["eager", "fixed_interval 2"]
        assert fi["computed_fraction"] == "0.667" and fi["branches"] == branches and int(fi["cached_bytes"]) > 0
        assert mine["compile", "fixed_interval 2"]["computed_fraction"] == "0.667"
        assert mine["compile", "nothing reused (hooks on)"]["computed_fraction"] == "1.000"
        assert float(mine["eager", "uncached"]["gen_ms"]) > 0
        planned = [r for (m, c), r in mine.items() if m == "eager, syncs" and "planned" in c]
        runtime = [r for (m, c), r in mine.items() if m == "eager, syncs" and "runtime" in c]
        assert len(planned) == 2 and len(runtime) == 2
        assert all(r["host_reads"] == "0" for r in planned)              # step-indexed: no reads
        assert all(0 < int(r["host_reads"]) <= int(r["steps"]) for r in runtime)   # at most one a step


def test_dry_history_host_is_exact_bf16_close(dry):
    cols, rows = _rows(dry / "history.csv")
    assert cols == gpu_bench.HISTORY_COLUMNS
    by = {r["history"]: r for r in rows}
    assert set(by) == {"device", "host", "bf16"}
    assert by["host"]["bit_exact_vs_device"] == "True" and by["host"]["cached_bytes"] == by["device"]["cached_bytes"]
    assert by["bf16"]["bit_exact_vs_device"] == "False" and 0 < float(by["bf16"]["max_rel_change"]) < 1e-2
    assert int(by["bf16"]["cached_bytes"]) < int(by["device"]["cached_bytes"])
    text = (dry / "summary.md").read_text()
    assert "kernels vs references: 14 / 14" in text and "history=host" in text


def test_fast_init_builds_the_published_architecture_with_sane_weights():
    """bench_scale's meta-device build: the same parameters as the class's own init, finite
    outputs, and instances that share (not copy) the weights."""
    fast = bench_scale.build("wan2.1-1.3b", (1,), torch.float32)
    own = bench_scale.build("wan2.1-1.3b", (1,), torch.float32, fast_init=False)
    assert [(n, p.shape) for n, p in fast.named_parameters()] == [(n, p.shape) for n, p in own.named_parameters()]
    assert [n for n, _ in fast.named_buffers()] == [n for n, _ in own.named_buffers()]
    for (n, b), (_, c) in zip(fast.named_buffers(), own.named_buffers()):
        assert torch.equal(b, c), n   # rotary tables are built, not filled
    latent, forward = bench_scale.make_inputs("wan2.1-1.3b", fast, 256, 16, torch.float32)
    with torch.no_grad():
        out = forward(fast, latent, 500.0)
    assert out.shape == latent.shape and torch.isfinite(out).all() and 0.01 < float(out.std()) < 100
    twin = bench_scale.share_weights(fast)
    assert twin is not fast and all(a is b for a, b in zip(twin.parameters(), fast.parameters()))


def test_memory_rows_hold_the_issue_example():
    rows = {(r["model"], r["config"], r["history"]): r for r in bench_scale.memory_rows()}
    assert rows["wan2.1-14b", "units, taylor 1", "device"]["total_gb"] == 371.59
    assert rows["wan2.1-14b", "units, taylor 1", "host"]["device_gb"] == 185.79
    assert rows["wan2.1-14b", "stack, taylor 1", "device"]["total_gb"] == 3.1
