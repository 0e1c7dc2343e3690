import subprocess
import sys


def test_import_is_lean():
    """Importing cachekit pulls neither diffusers nor transformers, and never initialises CUDA."""
    code = ("import sys, torch, cachekit; "
            "bad = [m for m in ('diffusers', 'transformers', 'triton', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)
