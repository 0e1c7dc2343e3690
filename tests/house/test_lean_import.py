import os
import subprocess
import sys


def test_import_is_lean():
    """Importing cachekit pulls neither diffusers nor transformers, and never initialises CUDA."""
    code = ("import sys, torch, cachekit; "
            "bad = [m for m in ('diffusers', 'transformers', 'triton', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_kernel_calls_stay_lean():
    """The kernels' auto dispatch on CPU runs the references directly: no triton, no torch._dynamo
    (the first custom-op call would import both, ~1 s), no CUDA."""
    code = ("import sys, torch; from cachekit import kernels as K; "
            "x = torch.randn(3, 5); t = torch.randn(3, 5); "
            "K.reuse(x, [t], [1.0]); K.reuse(x.clone(), [t, t], [0.5, 0.5], inplace=True); "
            "K.drift_stats(x, t); K.residual_with_stats(x, t, None); "
            "bad = [m for m in ('triton', 'torch._dynamo') if m in sys.modules]; "
            "assert not bad, bad; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "CACHEKIT_KERNELS": "auto"})
