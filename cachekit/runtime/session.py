"""The hooks of one applied target, and the generations they serve.

``Session.install`` wraps, on instances only: the model's ``forward`` (locates each call: step,
CFG branch, generation; ``steps.py``), diffusers' ``cache_context`` (names the branch and may tell
the step), the scheduler's ``set_timesteps`` (a pipeline call starts a generation and tells its
length) and ``step`` (counts the steps), and whatever its path asks for: every block's ``forward``
(``segments.py``) or every sub-block unit (``units.py``). ``uninstall`` undoes all of it. With
``compile`` the innermost originals are compiled (``compile.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from torch import nn

from ..adapters import Block, Unit
from ..methods.base import CacheMethod
from .compile import compiled_impl, eager_only
from .paths import Path
from .patches import InstancePatches
from .segments import SegmentPath
from .state import Call, Generation
from .stats import CacheStats
from .steps import Context, StepSource, TimestepReader
from .units import UnitPath

SESSION_ATTR = "_cachekit_session"

__all__ = ["Session", "SESSION_ATTR"]


class Session:
    def __init__(self, method: CacheMethod, root: nn.Module, blocks: list[Block],
                 timestep_arg: str | None, scheduler: Any = None, units: list[Unit] | None = None) -> None:
        """``units`` (sub-block methods only): they replace the blocks as the plan's columns and
        as the places hooked."""
        self.method, self.root, self.scheduler = method, root, scheduler
        depth = method.history_depth   # cached steps kept per segment/unit (forecasting)
        self.path: Path = (UnitPath(method, blocks, units, depth, self._current) if units
                           else SegmentPath(method, blocks, depth, self._current))
        self.block_names = self.path.columns
        self.steps = StepSource(TimestepReader(root.forward, timestep_arg))
        self.steps.start(method.num_steps)
        self.gen: Generation | None = Generation(len(self.block_names), method.num_steps)
        self.previous: Generation | None = None
        self.call: Call | None = None        # the model call in progress, if any
        self.context: Context | None = None  # diffusers cache_context in effect, if any
        self._patches = InstancePatches()

    def _current(self) -> Call | None:
        return self.call

    # ---- install / uninstall -------------------------------------------------------------
    def install(self, owners: list[object], compile: dict | None = None) -> None:
        """Patch instances; on any failure undo what was done and re-raise. ``compile``: torch.compile
        options for the originals of the innermost hooks (``runtime.compile``), None for eager."""
        try:
            for owner in owners:
                self._patches.set(owner, SESSION_ATTR, self)
            self._hook(self.root, "forward", self._model_forward)
            for hook in self.path.hooks():
                self._hook(hook.owner, hook.attr, hook.impl, compile if hook.innermost else None)
            if callable(getattr(self.root, "cache_context", None)):
                self._patches.wrap(self.root, "cache_context", self._cache_context)
            if self.scheduler is not None and callable(getattr(self.scheduler, "set_timesteps", None)):
                self._patches.wrap(self.scheduler, "set_timesteps", self._set_timesteps)
                if callable(getattr(self.scheduler, "step", None)):
                    self._patches.wrap(self.scheduler, "step", self._scheduler_step)
        except BaseException:
            self._patches.undo()
            raise

    def _hook(self, owner: object, attr: str, impl: Callable, compile: dict | None = None) -> None:
        """Wrap ``owner.attr`` with ``impl``, a graph break for dynamo; with ``compile`` options the
        original it calls is compiled, and a ``.compile()`` already on ``owner`` is set aside."""
        if compile is not None:
            impl = compiled_impl(impl, getattr(owner, attr), compile)
            if attr == "forward" and vars(owner).get("_compiled_call_impl") is not None:
                self._patches.set(owner, "_compiled_call_impl", None)
        self._patches.wrap(owner, attr, eager_only(impl))

    def uninstall(self) -> None:
        self._patches.undo()
        self.gen = self.previous = None

    # ---- generations ---------------------------------------------------------------------
    def _new_generation(self, num_steps: int | None) -> None:
        """Fresh books; nothing cached before is reused. The ended generation serves ``stats``."""
        if self.gen is not None and self.gen.calls:
            self.previous = self.gen
        self.method.check_num_steps(num_steps)
        self.gen = Generation(len(self.block_names), num_steps)

    def reset(self, num_steps: int | None = None) -> None:
        """``cachekit.reset``: start a new generation now."""
        num_steps = num_steps or self.method.num_steps
        self._new_generation(num_steps)
        self.steps.start(num_steps)

    def stats(self) -> CacheStats:
        gen = self.gen if self.gen is not None and self.gen.calls else self.previous
        return CacheStats.from_generation(gen, self.block_names)

    def _set_timesteps(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        result = original(*args, **kwargs)
        timesteps = getattr(self.scheduler, "timesteps", None)
        num_steps = (len(timesteps) if timesteps is not None else None) or self.method.num_steps
        calls = len(self.gen.calls) if self.gen is not None else 0
        self._new_generation(num_steps)
        self.steps.scheduler_started(num_steps, calls)
        return result

    def _scheduler_step(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        self.steps.tick()
        return original(*args, **kwargs)

    def _cache_context(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        context = Context.from_call(args, kwargs)

        @contextlib.contextmanager
        def named() -> Any:
            outer, self.context = self.context, context
            try:
                with original(*args, **kwargs):
                    yield
            finally:
                self.context = outer

        return named()

    # ---- model forward -------------------------------------------------------------------
    def _model_forward(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        if self.call is not None:  # re-entrant call (a model calling itself): run it plainly
            return original(*args, **kwargs)
        pos = self.steps.locate(args, kwargs, self.context)
        if pos.new_generation:
            self._new_generation(self.gen.num_steps)
        if pos.num_steps != self.gen.num_steps and pos.num_steps is not None:
            self.method.check_num_steps(pos.num_steps)   # the pipeline's context told another length
            self.gen.num_steps = pos.num_steps
        self.call = self.gen.begin_call(pos.step, pos.branch, pos.leader, self.path.call_state())
        try:
            return original(*args, **kwargs)
        except BaseException:
            self.steps.failed = True
            raise
        finally:
            self.call = None
