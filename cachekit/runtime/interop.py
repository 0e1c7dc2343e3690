"""Other libraries' private names, in one place: one small function per private attribute cachekit
reads or writes on diffusers, accelerate or torch objects.

Each says which library sets the attribute, where, and the versions it was checked on (diffusers
0.42.1, accelerate 1.16.0, torch 2.13.0, by reading their source: ``python -c "import inspect,
diffusers.hooks.hooks as h; print(inspect.getsource(h))"`` and the like). A reader returns None /
False when the attribute is absent, so a library that renames one loses cachekit the feature built
on it (hooking beneath diffusers' hooks, following accelerate's wrapper, rank-consistent reads),
never raises. When a library moves one of these, this file is the one to change.

Public alternatives were looked for first: diffusers' ``HookRegistry`` has no public accessor on a
module that does not create one; accelerate keeps the original forward only as ``_old_forward``;
``nn.Module.compile`` stores its compiled call only as ``_compiled_call_impl``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = [
    "ACCELERATE_OLD_FORWARD",
    "TORCH_COMPILED_CALL_IMPL",
    "accelerate_hooked",
    "accelerate_old_forward",
    "set_accelerate_old_forward",
    "compiled_call_impl",
    "context_parallel_mesh",
    "diffusers_hook_registry",
    "diffusers_innermost_forward",
    "parallel_config",
    "torch_set_eval_frame",
]


def _own(obj: object, name: str) -> Any:
    """``obj``'s instance attribute ``name`` (never the class's), or None."""
    return vars(obj).get(name) if hasattr(obj, "__dict__") else None


# ---- diffusers ---------------------------------------------------------------------------------

def diffusers_hook_registry(module: object) -> Any:
    """diffusers' ``HookRegistry`` of ``module``, or None: ``module._diffusers_hook``, set by
    ``HookRegistry.check_if_exists_or_initialize`` (diffusers/hooks/hooks.py; checked on 0.42.1) when
    a hook is registered: context parallelism's input splitter, group offload, diffusers' caches."""
    return _own(module, "_diffusers_hook")


def diffusers_innermost_forward(module: object) -> Any:
    """The ``HookFunctionReference`` whose ``forward`` is ``module``'s own forward beneath every
    diffusers hook, or None. That is ``registry._fn_refs[0]`` (the first hook registered; diffusers/
    hooks/hooks.py ``HookRegistry.register_hook``, checked on 0.42.1), when that hook kept the forward
    (no ``new_forward``: its ``original_forward`` is None). Wrapping its ``forward`` attribute puts a
    hook under diffusers' chain, so it sees what the module's own forward sees."""
    refs = getattr(diffusers_hook_registry(module), "_fn_refs", None)
    if refs and getattr(refs[0], "original_forward", None) is None and callable(getattr(refs[0], "forward", None)):
        return refs[0]
    return None


def parallel_config(module: object) -> Any:
    """diffusers' ``ParallelConfig`` of a model, or None: ``module._parallel_config``, set by
    ``ModelMixin.enable_parallelism`` through ``_resolve_parallel_config`` (diffusers/models/
    modeling_utils.py; checked on 0.42.1)."""
    return getattr(module, "_parallel_config", None)


def context_parallel_mesh(module: object) -> Any:
    """The flattened device mesh of a model's context parallelism, or None:
    ``parallel_config(module).context_parallel_config._flattened_mesh``, set by
    ``ContextParallelConfig.setup`` (diffusers/models/_modeling_parallel.py; checked on 0.42.1)."""
    cp = getattr(parallel_config(module), "context_parallel_config", None)
    return getattr(cp, "_flattened_mesh", None)


# ---- accelerate --------------------------------------------------------------------------------

#: Where accelerate keeps the forward its hook wraps: ``add_hook_to_module`` sets
#: ``module._old_forward`` and replaces ``module.forward`` by a function calling it (accelerate/hooks.py;
#: checked on 1.16.0). A wrapper meant to run inside accelerate's hook goes on this attribute.
ACCELERATE_OLD_FORWARD = "_old_forward"


def accelerate_hooked(obj: object) -> bool:
    """Does ``obj`` carry an accelerate hook (``_hf_hook`` and ``_old_forward`` instance attributes,
    both set by ``accelerate.hooks.add_hook_to_module``; checked on 1.16.0)?"""
    d = vars(obj) if hasattr(obj, "__dict__") else {}
    return "_hf_hook" in d and ACCELERATE_OLD_FORWARD in d


def accelerate_old_forward(obj: object) -> Callable | None:
    """What accelerate's forward wrapper on ``obj`` really calls (``obj._old_forward``), or None."""
    return _own(obj, ACCELERATE_OLD_FORWARD)


def set_accelerate_old_forward(obj: object, fn: Callable) -> None:
    """Point accelerate's wrapper on ``obj`` at ``fn`` (bypassing ``nn.Module.__setattr__``)."""
    object.__setattr__(obj, ACCELERATE_OLD_FORWARD, fn)


# ---- torch -------------------------------------------------------------------------------------

#: Where ``nn.Module.compile()`` keeps the compiled ``_call_impl`` that ``__call__`` then runs
#: instead of ``forward`` (torch/nn/modules/module.py; checked on 2.13.0).
TORCH_COMPILED_CALL_IMPL = "_compiled_call_impl"


def compiled_call_impl(module: object) -> Callable | None:
    """The compiled call a ``module.compile()`` installed, or None."""
    return _own(module, TORCH_COMPILED_CALL_IMPL)


def torch_set_eval_frame() -> Callable | None:
    """dynamo's frame-callback setter, what ``torch.compiler.disable`` runs inside, or None:
    ``torch._C._dynamo.eval_frame.set_eval_frame`` (an attribute of the C module, not importable, on
    2.4; checked on 2.4.1 and 2.13.0 CPU, 2.11 CUDA). ``compile.frame_setter`` gates it by version."""
    module = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
    setter = getattr(module, "set_eval_frame", None)
    return setter if callable(setter) else None
