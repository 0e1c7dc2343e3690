"""torch.compile beside the hooks: compiled originals, eager decisions.

Dynamo guards on the Python state it reads. Traced through, a hook reads the generation's
bookkeeping (step, calls so far, cached residuals), so every step failed a guard and recompiled
until ``recompile_limit`` (8) sent the model back to eager. Two things keep that state out of any
graph:

- ``cachekit.apply(..., compile=True)``: the *original* forward of each innermost hooked module (a
  block, or a sub-block unit for BAC) is compiled on its own, ``fullgraph=True`` when dynamo takes it
  whole, else with graph breaks; the hook around it stays eager. Blocks of one class share one graph.
- Every hook is ``torch.compiler.disable(recursive=False)``: when the user compiles the model or
  its blocks themselves (``torch.compile(pipe.transformer)``, ``block.compile()``, diffusers'
  ``compile_repeated_blocks``), a hook is a graph break that runs eagerly while the forwards it
  calls are still compiled, instead of a guard on mutable state.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import interop

# torch.compile's keyword arguments that ``apply(compile=dict(...))`` passes through.
COMPILE_KEYS = ("fullgraph", "dynamic", "backend", "mode", "options")
# torch.compile modes that capture CUDA graphs (inductor's "max-autotune" turns them on too)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_options(compile: bool | dict | None) -> dict | None:
    """``apply``'s ``compile`` argument as torch.compile keyword arguments, or None for no compile."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, dict):
        unknown = sorted(set(compile) - set(COMPILE_KEYS))
        if unknown:
            raise ValueError(f"cachekit.apply: unknown compile option {unknown[0]!r}; allowed: {', '.join(COMPILE_KEYS)}")
        mode, options = compile.get("mode"), compile.get("options") or {}
        if mode in CUDA_GRAPH_MODES or options.get("triton.cudagraphs"):
            raise ValueError(f"cachekit.apply: compile {'mode ' + repr(mode) if mode in CUDA_GRAPH_MODES else 'option triton.cudagraphs'} "
                             f"replays CUDA graphs, whose outputs are overwritten at the next replay while cachekit "
                             f"keeps them across steps; use mode='default' or 'max-autotune-no-cudagraphs'")
        return dict(compile)
    raise TypeError(f"cachekit.apply: compile must be True, False or a dict of torch.compile options, "
                    f"got {type(compile).__name__}")


class CompiledForward:
    """``torch.compile(fn, fullgraph=True, **options)``; if dynamo cannot trace ``fn`` as one graph,
    compiled once more without ``fullgraph`` (graph breaks allowed). A ``fullgraph`` given in the
    options is kept as given."""

    def __init__(self, fn: Callable, options: dict) -> None:
        self.fn, self.options = fn, options
        self.fullgraph = options.get("fullgraph", True)
        self.compiled = torch.compile(fn, **{**options, "fullgraph": self.fullgraph})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except torch._dynamo.exc.Unsupported:
            # raised while tracing, before the graph ran: nothing was computed yet
            if not self.fullgraph or "fullgraph" in self.options:
                raise
            self.fullgraph = False
            self.compiled = torch.compile(self.fn, **{**self.options, "fullgraph": False})
            return self.compiled(*args, **kwargs)


def compiled_impl(impl: Callable, original: Callable, options: dict) -> Callable:
    """A hook body that calls the compiled ``original`` wherever it would call the original."""
    compiled = CompiledForward(original, options)

    def run(_original: Callable, args: tuple, kwargs: dict) -> Any:
        return impl(compiled, args, kwargs)

    return run


#: torch versions on which ``torch._C._dynamo.eval_frame.set_eval_frame`` was run as ``eager_only``
#: uses it (the test suite: 2.4.1 and 2.13.0 on CPU, 2.11 on the GPU machine). Outside this range
#: the public fallback is used.
FRAME_HOLE_TORCH = ("2.4", "2.15")


def frame_setter(version: str | None = None) -> Callable | None:
    """torch's private frame-callback setter (what ``torch.compiler.disable`` runs inside), or None
    when this torch is outside ``FRAME_HOLE_TORCH`` or does not have it."""
    from torch.torch_version import TorchVersion

    v = TorchVersion(version or torch.__version__)
    if not (FRAME_HOLE_TORCH[0] <= v < FRAME_HOLE_TORCH[1]):
        return None
    return interop.torch_set_eval_frame()


def eager_only(impl: Callable, setter: Callable | None | bool = True) -> Callable:
    """The hook body run eagerly under any ``torch.compile``: for dynamo tracing a caller it is a
    graph break (``torch.compiler.disable(recursive=False)``); while it runs, dynamo's frame
    callback is off for cachekit's own frames (the bookkeeping it calls would otherwise be compiled
    as frames of their own, guarded on the step count) and back on for the original forward it
    calls, which an outer ``torch.compile`` still compiles. This is what ``torch.compiler.disable``
    does inside (``set_eval_frame``), with a hole for the original; one C call when nothing compiles.

    ``setter``: True = ``frame_setter()``; None = the public fallback, ``torch.compiler.disable``
    (recursive): as correct, but under an outer ``torch.compile`` the forwards the hook calls then
    run eagerly too (``apply(compile=True)`` still compiles them: they are compiled objects)."""
    set_eval_frame = frame_setter() if setter is True else setter
    if set_eval_frame is None:
        return torch.compiler.disable(impl, recursive=True)

    def run(original: Callable, args: tuple, kwargs: dict) -> Any:
        callback = set_eval_frame(None)
        if callback is None:  # no torch.compile running: the plain hook
            return impl(original, args, kwargs)

        def traced(*a: Any, **k: Any) -> Any:
            set_eval_frame(callback)
            try:
                return original(*a, **k)
            finally:
                set_eval_frame(None)

        try:
            return impl(traced, args, kwargs)
        finally:
            set_eval_frame(callback)

    return torch.compiler.disable(run, recursive=False)
