"""Inputs for the kernel tests, and (run as a script) the Triton side of them.

``python tests/helpers/kernel_cases.py OUT.pt`` must run with ``TRITON_INTERPRET=1`` set before triton is
imported (``triton.jit`` chooses the interpreter at decoration time), hence a subprocess: it runs
every case through the public API with ``backend="triton"`` and saves the outputs. The test process
rebuilds the same inputs from the seeds here and checks them against the references.
"""

import sys

import torch

SHAPES = [(3, 1037, 77), (1, 1, 5)]  # 239,547 elements: 234 reuse blocks with a ragged tail; 5: one masked block
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
WEIGHTS = {"reuse1": [1.0], "reuse3": [0.5, -1.25, 2.0], "reuse4": [1.0, 0.5, -0.25, 0.125], "reuse_inplace": [1.0, -0.5]}
CASES = ["reuse1", "reuse3", "reuse4", "reuse_inplace", "drift", "residual_ref", "residual_noref"]
# Each interpreted reuse at the large shape costs ~1 s; 4 terms only differ from 3 by one load.
GRID = [(case, shape, dtype) for dtype in DTYPES for shape in SHAPES for case in CASES
        if not (case == "reuse4" and shape == SHAPES[0])]
# Many partials (1037*77 / 256 = 312) and a 16-wide second stage: 20 passes of its loop.
MULTIPASS = dict(shape=(1, 1037, 77), block=256, finish_block=16)


def key(case: str, shape, dtype: torch.dtype) -> str:
    return f"{case}-{'x'.join(map(str, shape))}-{str(dtype).removeprefix('torch.')}"


def inputs(case: str, shape, dtype: torch.dtype) -> list[torch.Tensor]:
    """The tensors of one case, the same in every process (seeded CPU generator)."""
    g = torch.Generator().manual_seed(sum(map(ord, key(case, shape, dtype))))
    count = {"drift": 2, "residual_ref": 3, "residual_noref": 2}.get(case) or 1 + len(WEIGHTS[case])
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(count)]


def noncontiguous_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(77, 1037, generator=g).t()  # a transposed view: in place must still write into it
    return [x, torch.randn(1037, 77, generator=g)]


def run_triton() -> dict:
    from cachekit import kernels as K
    from cachekit.kernels import triton_kernels

    res = {}
    for case, shape, dtype in GRID:
        t = inputs(case, shape, dtype)
        k = key(case, shape, dtype)
        if case.startswith("reuse") and case != "reuse_inplace":
            res[k] = K.reuse(t[0], t[1:], WEIGHTS[case], backend="triton")
        elif case == "reuse_inplace":
            x, ptr = t[0], t[0].data_ptr()
            out = K.reuse(x, t[1:], WEIGHTS[case], inplace=True, backend="triton")
            res[k] = dict(x_after=x, returned_x=out is x, same_storage=x.data_ptr() == ptr)
        elif case == "drift":
            res[k] = K.drift_stats(t[0], t[1], backend="triton")
        else:
            ref = t[2] if case == "residual_ref" else None
            res[k] = K.residual_with_stats(t[0], t[1], ref, backend="triton")
    x, term = noncontiguous_inputs()
    out = K.reuse(x, [term], [0.5], inplace=True, backend="triton")
    res["noncontiguous_inplace"] = dict(x_after=x, returned_x=out is x)
    a, b = inputs("drift", MULTIPASS["shape"], torch.float32)
    res["drift_multipass"] = triton_kernels.drift_stats(a, b, block=MULTIPASS["block"],
                                                        finish_block=MULTIPASS["finish_block"])
    return res


if __name__ == "__main__":
    torch.save(run_triton(), sys.argv[1])
