"""Each of other libraries' private names cachekit uses (cachekit/runtime/interop.py) is found on a
real object of the installed library: a rename upstream fails here, not silently in a feature."""

import pytest
import torch
from torch import nn

from cachekit.runtime import interop


def test_accelerate_hook_is_found_and_forgotten():
    hooks = pytest.importorskip("accelerate.hooks")
    m = nn.Linear(3, 3)
    own_forward = m.forward
    assert not interop.accelerate_hooked(m) and interop.accelerate_old_forward(m) is None
    hooks.add_hook_to_module(m, hooks.ModelHook())
    assert interop.accelerate_hooked(m)
    assert interop.accelerate_old_forward(m) == own_forward      # what accelerate's wrapper calls
    x = torch.randn(2, 3)
    interop.set_accelerate_old_forward(m, lambda inp: inp * 2)
    assert torch.equal(m(x), x * 2)                               # the wrapper really calls it
    hooks.remove_hook_from_module(m)
    assert not interop.accelerate_hooked(m)


def test_diffusers_registry_and_innermost_forward():
    H = pytest.importorskip("diffusers.hooks.hooks")
    m = nn.Linear(3, 3)
    own_forward = m.forward
    assert interop.diffusers_hook_registry(m) is None and interop.diffusers_innermost_forward(m) is None
    registry = H.HookRegistry.check_if_exists_or_initialize(m)
    registry.register_hook(H.ModelHook(), "outer")
    assert interop.diffusers_hook_registry(m) is registry
    ref = interop.diffusers_innermost_forward(m)
    assert ref is not None and ref.forward == own_forward       # beneath every diffusers hook


def test_torch_privates():
    m = nn.Linear(3, 3)
    assert interop.compiled_call_impl(m) is None
    m.compile()
    assert interop.compiled_call_impl(m) is not None
    assert callable(interop.torch_set_eval_frame())
    assert interop.parallel_config(m) is None and interop.context_parallel_mesh(m) is None
