"""Fused kernels against their eager references, the dispatch rule, and the custom ops' fake impls.

The Triton kernels run once, in a subprocess under ``TRITON_INTERPRET=1`` (see kernel_cases.py);
each test below checks one case of what it saved against the reference computed here on the fp32
upcast of the same inputs.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from cachekit import kernels as K
from cachekit.kernels import dispatch
from kernel_cases import DTYPES, GRID, MULTIPASS, SHAPES, WEIGHTS, inputs, key, noncontiguous_inputs

# (rtol, atol) for tensors, rtol for the (fp32) stats. Outputs are rounded once to the dtype: half an
# ulp with round-to-nearest (fp16: 2^-11), but the interpreter truncates to bf16 (a full ulp, 2^-7).
# Residual stats are means of the rounded r, so they inherit that bound at 5 elements (at 239k the
# errors average out for fp16; bf16 truncation leaves a ~2^-9 bias, measured 1.6e-3). fp32 differs
# from the reference only by summation order / fma (measured <= 1.1e-7 relative on the stats).
TOL = {torch.float32: ((1e-6, 1e-5), 1e-6),
       torch.float16: ((2 ** -10, 1e-3), 2 ** -10),
       torch.bfloat16: ((2 ** -7, 1e-2), 2 ** -7)}


@pytest.fixture(scope="module")
def triton_out(tmp_path_factory):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install 'cachekit[triton]')")
    path = tmp_path_factory.mktemp("kernels") / "triton.pt"
    root = Path(__file__).resolve().parents[2]
    script = root / "tests" / "helpers" / "kernel_cases.py"
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(path)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(path)


def _reference(case, t):
    up = [x.float() for x in t]
    if case.startswith("reuse"):
        return K.reuse_reference(up[0], up[1:], WEIGHTS[case])
    if case == "drift":
        return K.drift_stats_reference(*up)
    return K.residual_with_stats_reference(up[0], up[1], up[2] if case == "residual_ref" else None)


@pytest.mark.parametrize("case,shape,dtype", GRID, ids=[key(*g) for g in GRID])
def test_triton_matches_reference(triton_out, case, shape, dtype):
    t = inputs(case, shape, dtype)
    got, want = triton_out[key(case, shape, dtype)], _reference(case, t)
    (rtol, atol), stats_rtol = TOL[dtype]
    if case == "reuse_inplace":
        assert got["returned_x"] and got["same_storage"]  # wrote into x's own storage and returned x
        got = got["x_after"]
    if case.startswith("reuse"):
        assert got.dtype == dtype and got.shape == shape
        torch.testing.assert_close(got.float(), want, rtol=rtol, atol=atol)
        return
    if case == "drift":
        got, want = (None, got), (None, want)
    (r, stats), (r_want, stats_want) = got, want
    assert stats.dtype == torch.float32 and stats.shape == (2,) and stats.device == t[0].device
    torch.testing.assert_close(stats, stats_want, rtol=stats_rtol, atol=0)
    if r is not None:
        assert r.dtype == dtype and r.shape == shape
        torch.testing.assert_close(r.float(), r_want, rtol=rtol, atol=atol)
    if case == "residual_noref":
        assert stats[0] == 0  # ref = r


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_exact_in_fp32(triton_out, shape):
    """One term with weight 1 is plain x + r, and r is out - inp, bit for bit."""
    x, r = inputs("reuse1", shape, torch.float32)
    assert torch.equal(triton_out[key("reuse1", shape, torch.float32)], x + r)
    out, inp = inputs("residual_noref", shape, torch.float32)
    assert torch.equal(triton_out[key("residual_noref", shape, torch.float32)][0], out - inp)
    out, inp, _ = inputs("residual_ref", shape, torch.float32)
    assert torch.equal(triton_out[key("residual_ref", shape, torch.float32)][0], out - inp)


def test_triton_inplace_noncontiguous_and_multipass(triton_out):
    x, term = noncontiguous_inputs()
    got = triton_out["noncontiguous_inplace"]
    assert got["returned_x"]
    torch.testing.assert_close(got["x_after"], x + 0.5 * term, rtol=1e-6, atol=1e-6)
    a, b = inputs("drift", MULTIPASS["shape"], torch.float32)
    torch.testing.assert_close(triton_out["drift_multipass"], K.drift_stats_reference(a, b), rtol=1e-5, atol=0)


# ---- dispatch, without triton -------------------------------------------------------------------

def test_auto_on_cpu_runs_the_reference_without_triton(monkeypatch):
    def no_triton():
        raise AssertionError("auto on CPU must not reach the Triton module")
    monkeypatch.setattr(dispatch, "_triton_module", no_triton)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x, t0, t1 = (torch.randn(4, 9, generator=torch.Generator().manual_seed(i)) for i in range(3))
    assert torch.equal(K.reuse(x, [t0, t1], [0.5, 2.0]), K.reuse_reference(x, [t0, t1], [0.5, 2.0]))
    assert torch.equal(K.drift_stats(x, t0, backend="auto"), K.drift_stats_reference(x, t0))
    r, stats = K.residual_with_stats(x, t0, t1)
    r_want, stats_want = K.residual_with_stats_reference(x, t0, t1)
    assert torch.equal(r, r_want) and torch.equal(stats, stats_want)
    y = x.clone()
    assert K.reuse(y, [t0], [1.0], inplace=True) is y and torch.equal(y, x + t0)


def test_cases_the_kernels_do_not_cover_use_the_reference(monkeypatch):
    """Broadcasting and empty tensors go to the reference even when triton is forced."""
    monkeypatch.setattr(dispatch, "_triton_module", lambda: pytest.fail("reached the kernel"))
    x, row = torch.randn(3, 5), torch.randn(5)
    assert torch.equal(K.reuse(x, [row], [1.0], backend="triton"), x + row)
    assert K.drift_stats(torch.empty(0), torch.empty(0), backend="triton").isnan().all()


def test_bad_backend_raises_naming_it(monkeypatch):
    x = torch.randn(3)
    with pytest.raises(ValueError, match="'cuda'"):
        K.reuse(x, [x], [1.0], backend="cuda")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="CACHEKIT_KERNELS='fast'"):
        K.drift_stats(x, x)
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert K.resolve_backend() == "reference" and K.resolve_backend("triton") == "triton"


def test_forced_triton_without_triton_says_how_to_install(monkeypatch):
    monkeypatch.setattr(dispatch, "_triton_module", lambda: None)
    with pytest.raises(ImportError, match=r"cachekit\[triton\]"):
        K.drift_stats(torch.randn(3), torch.randn(3), backend="triton")


# ---- custom ops ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fake_impls_give_shapes_and_dtypes(dtype):
    with FakeTensorMode():
        x = torch.empty(3, 1037, 77, dtype=dtype)
        out = torch.ops.cachekit.reuse(x, [x, x], [0.5, 1.0], "auto")
        assert out.shape == x.shape and out.dtype == dtype
        assert torch.ops.cachekit.reuse_(x, [x], [1.0], "auto") is None
        stats = torch.ops.cachekit.drift_stats(x, x, "auto")
        assert stats.shape == (2,) and stats.dtype == torch.float32
        r, stats = torch.ops.cachekit.residual_with_stats(x, x, None, "auto")
        assert r.shape == x.shape and r.dtype == dtype and stats.shape == (2,) and stats.dtype == torch.float32


def test_opcheck_on_the_reference_path():
    """Schema (the in-place op's declared mutation included), fake impls and AOT tracing agree with
    the real ops."""
    x, t, ref = (torch.randn(2, 7) for _ in range(3))
    checks = [(torch.ops.cachekit.reuse.default, (x, [t, ref], [0.5, -1.0], "reference")),
              (torch.ops.cachekit.reuse_.default, (x.clone(), [t], [0.25], "reference")),
              (torch.ops.cachekit.drift_stats.default, (x, t, "reference")),
              (torch.ops.cachekit.residual_with_stats.default, (x, t, ref, "reference")),
              (torch.ops.cachekit.residual_with_stats.default, (x, t, None, "reference"))]
    for op, args in checks:
        torch.library.opcheck(op, args)


def test_compiles_as_one_graph():
    def step(x, t, ref):
        r, stats = K.residual_with_stats(x, t, ref)
        return K.reuse(x, [r], [1.0]), K.drift_stats(x, t), stats

    x, t, ref = (torch.randn(4, 6) for _ in range(3))
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x, t, ref), step(x, t, ref)):
        torch.testing.assert_close(got, want)
