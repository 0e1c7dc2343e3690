"""Multi-process inference: two gloo processes on CPU (tests/helpers/cp_worker.py), tiny Flux and Wan.

Under diffusers' context parallelism (Ulysses, degree 2) every decision is taken from global
statistics, one packed SUM all-reduce per read on the model's own group: both ranks take the
single-process decisions, in either order of ``apply`` and ``enable_parallelism``. Without it
(data parallelism) no collective is issued at all. Rank-local reads, as before, hang in the
model's all-to-all (gloo timeout); ``check_ranks`` names the disagreement instead.
"""

import pickle
import socket

import pytest
import torch

import cp_worker as W

pytestmark = pytest.mark.filterwarnings("ignore")


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spawn(tmp_path, cases, mode):
    import torch.multiprocessing as mp

    mp.spawn(W.worker, args=(2, _port(), str(tmp_path), cases, mode), nprocs=2, join=True)
    return [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)]


@pytest.fixture(scope="module")
def single():
    return {(f, n): W.single_process(f, n) for f in ("flux", "wan") for n in W.configs()}


def test_context_parallel_decisions_equal_the_single_process_ones(tmp_path, single):
    cases = [(f, n, o) for f in ("flux", "wan") for n in W.configs() for o in ("apply_first", "parallel_first")]
    r0, r1 = spawn(tmp_path, cases, "context")
    for a, b in zip(r0, r1):
        ref = single[a["case"][:2]]
        assert (a["plan"] == b["plan"]).all() and (a["plan"] == ref["plan"]).all(), a["case"]
        assert float((a["out"] - ref["out"]).norm() / ref["out"].norm()) < 1e-4, a["case"]
        assert torch.equal(a["out"], b["out"])
        # one collective per read, as many reads as one process makes; none for step-indexed methods
        assert a["collectives"] == b["collectives"] == a["host_reads"] == ref["host_reads"], a["case"]
        assert (a["collectives"] > 0) == (a["case"][1] != "fixed_interval") and ref["collectives"] == 0
        assert a["plan"].mean() < 1.0, a["case"]   # something was reused


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_a_hand_written_loop_on_the_bare_transformer_in_either_order(tmp_path, family):
    """A custom sampler calling the transformer itself, cachekit applied to it before or after
    enable_parallelism: every runtime-decided method and fixed interval give rank-equal decisions
    equal to one process's, reads are global (one collective each), and nothing hangs."""
    names = list(W.configs(loop=True))
    refs = {n: W.single_process(family, n, loop=True) for n in names}
    cases = [(family, n, o) for n in names for o in ("loop_apply_first", "loop_parallel_first")]
    r0, r1 = spawn(tmp_path, cases, "context")
    assert len(r0) == len(r1) == 10
    for a, b in zip(r0, r1):
        ref = refs[a["case"][1]]
        assert (a["plan"] == b["plan"]).all() and (a["plan"] == ref["plan"]).all(), a["case"]
        assert a["collectives"] == b["collectives"] == a["host_reads"] == ref["host_reads"], a["case"]
        assert (a["collectives"] > 0) == (a["case"][1] != "fixed_interval"), a["case"]
        assert a["plan"].mean() < 1.0, a["case"]
        assert float((a["out"] - ref["out"]).norm() / ref["out"].norm()) < 1e-4 and torch.equal(a["out"], b["out"])


def test_data_parallel_uneven_work_issues_no_collective(tmp_path, single):
    r0, r1 = spawn(tmp_path, [("flux", "easycache", "-")], "data")   # rank 1 runs two generations, rank 0 one
    for r in (r0[0], r1[0]):
        assert r["collectives"] == 0 and r["host_reads"] > 0
        assert torch.equal(r["out"], single[("flux", "easycache")]["out"])


def test_check_ranks_names_the_disagreement_instead_of_hanging(tmp_path):
    r0, r1 = spawn(tmp_path, [("flux", "easycache", "apply_first")], "check")
    for r in (r0[0], r1[0]):
        assert "error" in r, "rank-local decisions happened to agree: the case no longer tests the check"
        assert r["error"].startswith("cachekit: ranks disagree at step ") and "rank 0: " in r["error"]


def test_calibration_under_context_parallelism_gives_one_plan(tmp_path):
    r0, r1 = spawn(tmp_path, [("wan", "-", "-")], "record")
    assert r0[0]["bac"] == r1[0]["bac"] and r0[0]["erta"] == r1[0]["erta"]
    assert r0[0]["erta"].reuse_steps
