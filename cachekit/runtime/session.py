"""The hooks of one applied target, and the generations they serve.

``Session.install`` wraps, on instances only: the model's ``forward`` (locates each call: step,
CFG branch, generation; ``steps.py``), diffusers' ``cache_context`` (names the branch and may tell
the step), the scheduler's ``set_timesteps`` (a pipeline call starts a generation and tells its
length), ``set_begin_index`` (img2img / inpaint start later: fewer steps) and ``step`` (counts the
steps), and whatever its path asks for: every block's ``forward`` (``segments.py``) or every
sub-block unit (``units.py``). ``uninstall`` undoes all of it. With ``compile`` the innermost
originals are compiled (``compile.py``). What keeps this honest beside other code touching the
same model (offload hooks, other caches, threads, a budget) is in ``guards.py``.

A generation's cache is released when its last scheduler step returns (``keep_cache`` keeps it
until the next generation), and an ended generation is kept for ``stats`` without its tensors.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

from torch import nn

from ..adapters import Block, Unit
from ..methods.base import CacheMethod
from . import guards, interop
from .compile import compiled_impl, eager_only
from .parallel import StatsReader
from .paths import Path
from .patches import InstancePatches
from .segments import SegmentPath
from .history import HistoryStorage
from .state import Call, Generation
from .stats import CacheStats
from .steps import Context, StepSource, TimestepReader
from .tap import ForwardTap
from .units import UnitPath

SESSION_ATTR = "_cachekit_session"

__all__ = ["Session", "SESSION_ATTR"]


def _beneath_diffusers_hooks(owner: object, attr: str) -> tuple[object, str]:
    """Where a block's hook goes: a block that already carries diffusers hooks (context
    parallelism splits Wan's sequence in the pre-forward of ``blocks.0``; block-level group offload
    loads weights there) is hooked beneath them, on the innermost forward they call, so cachekit
    sees what the block's own forward sees, as when ``apply`` came first."""
    inner = interop.diffusers_innermost_forward(owner) if attr == "forward" else None
    return (inner, "forward") if inner is not None else (owner, attr)


class Session:
    def __init__(self, method: CacheMethod, root: nn.Module, blocks: list[Block], timestep_arg: str | None,
                 scheduler: Any = None, units: list[Unit] | None = None, *, pipeline: Any = None,
                 keep_cache: bool = False, max_cache_bytes: int | None = None, check_ranks: bool = False,
                 history: HistoryStorage | None = None, span: Callable[[], int | None] | None = None,
                 tap: ForwardTap | None = None) -> None:
        """``units`` (sub-block methods only): they replace the blocks as the plan's columns and
        as the places hooked. ``pipeline``: its ``scheduler`` attribute is followed if replaced.
        ``history``: where forecast history older than the newest entry is kept. ``span``: this
        model is one of several denoisers of the pipeline and may run only part of a generation;
        called at its first call of a generation, it returns how many steps it will run (None:
        to the end); the method then counts steps from that first call (``Generation.offset``).
        ``tap``: a ``runtime.tap.ForwardTap`` consulted first at every model call (calibration)."""
        self.method, self.root, self.scheduler, self.pipeline = method, root, scheduler, pipeline
        self.span = span
        # The default's fitting (api._fit): called with this session when a generation's cache would
        # not fit; uninstalls it, installs the next cheaper configuration and returns that session.
        self.refit: Callable[["Session"], Any] | None = None   # -> Session, or Deferred (layout found at the first call)
        self.fit_note: str | None = None        # what the fitting chose and why (stats().chosen)
        self.rebest: Callable[["Session"], Any] | None = None   # back to the best, at a new generation
        self.replaced_by: Session | None = None
        depth = method.history_depth   # cached steps kept per segment/unit (forecasting)
        self.reader = StatsReader()    # decisions' host reads; global under context parallelism
        self.check_ranks = check_ranks
        self.path: Path = (UnitPath(method, blocks, units, depth, self._current, self.reader) if units
                           else SegmentPath(method, blocks, depth, self._current, self.reader))
        self.block_names = self.path.columns
        self.keep_cache = keep_cache
        slots = len(units) if units else len(self.path.segments)
        self.history = None if history is None or history.is_default else history
        self.budget = guards.Budget(max_cache_bytes, slots, depth, self.history, units=bool(units))
        self.threads = guards.ThreadGuard(root)
        self.steps = StepSource(TimestepReader(root.forward, timestep_arg))
        self.steps.start(method.num_steps)
        self.previous: Generation | None = None
        self.gen: Generation | None = self._generation(method.num_steps)
        self.call: Call | None = None        # the model call in progress, if any
        # calibration (LeMiCa's edges) replays the uncached model outputs of the first steps
        # through the tap, before the caching logic: the first scheduler step has no call to check
        self.tap = tap
        self.prefix_replayed = tap is not None and tap.replays
        self.discovered = False   # the layout was found from the first call (runtime/deferred.py)
        self.context: Context | None = None  # diffusers cache_context in effect, if any
        self._patches = InstancePatches()
        self._hooks: list[guards.Hooked] = []
        self._scheduler_patches = InstancePatches()

    def current(self) -> "Session":
        return self.replaced_by.current() if self.replaced_by is not None else self

    def scheduler_started_before_install(self) -> None:
        """Installed inside a pipeline call whose ``set_timesteps`` already ran (a layout found at
        the first model call): start that generation now, as the wrapper would have."""
        self.threads.enter_generation(self.gen)
        self._scheduler_generation(0)

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
            self._wrap_scheduler(self.scheduler)
        except BaseException:
            self.uninstall()
            raise

    def _hook(self, owner: object, attr: str, impl: Callable, compile: dict | None = None) -> None:
        """Wrap ``owner.attr`` with ``impl``, a graph break for dynamo; with ``compile`` options the
        original it calls is compiled, and a ``.compile()`` already on ``owner`` is set aside."""
        where, name = _beneath_diffusers_hooks(owner, attr) if owner is not self.root else (owner, attr)
        if compile is not None:
            if attr == "forward" and interop.compiled_call_impl(owner) is not None:
                self._patches.set(owner, interop.TORCH_COMPILED_CALL_IMPL, None)
            impl = compiled_impl(impl, getattr(where, name), compile)
        impl = eager_only(impl)
        self._hooks.append(guards.Hooked(where, name, impl, self._patches.wrap(where, name, impl)))

    def _wrap_scheduler(self, scheduler: Any) -> None:
        if scheduler is None or not callable(getattr(scheduler, "set_timesteps", None)):
            return
        p = self._scheduler_patches
        p.wrap(scheduler, "set_timesteps", self._set_timesteps)
        if callable(getattr(scheduler, "set_begin_index", None)):
            p.wrap(scheduler, "set_begin_index", self._set_begin_index)
        if callable(getattr(scheduler, "step", None)):
            p.wrap(scheduler, "step", self._scheduler_step)

    def uninstall(self) -> None:
        self._scheduler_patches.undo()
        self._patches.undo()
        self.gen = self.previous = None

    # ---- generations ---------------------------------------------------------------------
    def _generation(self, num_steps: int | None) -> Generation:
        def admit(branch: Any, payload: Any, branches: int) -> None:
            self.budget.admit(branch, payload, max(branches, self._last_branches()))

        self.budget.new_generation()
        gen = Generation(len(self.block_names), num_steps, admit, self.history)
        self.reader.refresh(self.root, gen)   # enable_parallelism may come before or after apply
        return gen

    def _last_branches(self) -> int:
        return len({c.branch for c in self.previous.calls}) if self.previous is not None else 1

    def _new_generation(self, num_steps: int | None) -> None:
        """Fresh books; nothing cached before is reused. The ended generation serves ``stats``,
        without its tensors."""
        if self.gen is not None and self.gen.calls:
            self.gen.release()
            self.previous = self.gen
        if self.span is None:   # a partial denoiser's length is checked at its first call
            self.method.check_num_steps(num_steps)
        self.gen = self._generation(num_steps)

    def reset(self, num_steps: int | None = None) -> None:
        """``cachekit.reset``: start a new generation now."""
        num_steps = num_steps or self.method.num_steps
        self._new_generation(num_steps)
        self.steps.start(num_steps)
        guards.reattach(self._hooks, self._patches)

    def stats(self) -> CacheStats:
        gen = self.gen if self.gen is not None and self.gen.calls else self.previous
        return CacheStats.from_generation(gen, self.block_names, self.fit_note)

    def _scheduler_length(self) -> int | None:
        """Steps the scheduler will take: its timesteps from its begin index on (img2img); else the
        method's own length."""
        timesteps = getattr(self.scheduler, "timesteps", None)
        if timesteps is None:
            return self.method.num_steps
        begin = getattr(self.scheduler, "begin_index", None)
        return (len(timesteps) - (begin if isinstance(begin, int) else 0)) or self.method.num_steps

    def _scheduler_generation(self, calls_before: int) -> None:
        """The scheduler starts a generation: its length, its step counter."""
        num_steps = self._scheduler_length()
        self._new_generation(num_steps)
        self.steps.scheduler_started(num_steps, calls_before)
        self.gen.clocked = self.steps.clocked

    def _set_timesteps(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        self.threads.enter_generation(self.gen)
        result = original(*args, **kwargs)
        guards.check_other_cache(self.root)
        guards.reattach(self._hooks, self._patches)
        self._scheduler_generation(len(self.gen.calls) if self.gen is not None else 0)
        if self.fit_note is not None and self.rebest is not None:
            # a cheaper configuration the default fell back to: a new generation (another size)
            # tries the best one again; it falls back at its first stored tensor if it still does not fit
            self.replaced_by = self.rebest(self)
            self.replaced_by.scheduler_started_before_install()
        return result

    def _set_begin_index(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        result = original(*args, **kwargs)
        if self.gen is not None and not self.gen.calls:   # img2img / inpaint: the loop starts later
            num_steps = self._scheduler_length()
            if self.span is None:
                self.method.check_num_steps(num_steps)
            self.gen.num_steps = self.steps.num_steps = num_steps
        return result

    def _scheduler_step(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        self.steps.tick()
        gen = self.gen
        # the first step this model runs has ended (step 0; a partial denoiser's first own step)
        first = gen.calls[0].step if gen.calls else (None if self.span is not None else 0)
        if (first is not None and self.steps.ticks == first + 1 and self.steps.clocked and not self.prefix_replayed
                and not gen.alive_checked):
            guards.check_alive(gen, self.block_names, self.root)
            gen.alive_checked = True
        result = original(*args, **kwargs)
        # the last step of this pipeline call, or of this denoiser's part of it (Wan 2.2's first
        # expert: its cache is not held while the second one runs): nothing more will be reused
        part_done = gen.calls and gen.span is not None and self.steps.ticks >= gen.offset + gen.span
        if self.steps.clocked and gen.num_steps is not None and (self.steps.ticks >= gen.num_steps or part_done):
            gen.complete = True
            if not self.keep_cache:
                gen.release()
        return result

    def _follow_scheduler(self) -> None:
        """``pipe.scheduler = X.from_config(...)`` after apply: move the wrappers to the new one."""
        new = getattr(self.pipeline, "scheduler", None)
        if new is self.scheduler or new is None:
            return
        self._scheduler_patches.undo()
        self._scheduler_patches = InstancePatches()
        self.scheduler = new
        self._wrap_scheduler(new)
        self._scheduler_generation(0)

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
        if self.tap is None:
            return self._refitting_forward(original, args, kwargs)
        replayed, out = self.tap.take_replayed()
        if replayed:
            return out
        return self.tap.run(lambda: self._refitting_forward(original, args, kwargs))

    def _refitting_forward(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        try:
            return self._forward(original, args, kwargs)
        except guards.CacheBudgetError:
            if self.refit is None:
                raise
        # The default's cache would not fit: the budget refuses at a generation's first stored
        # tensor (its first step: one unit or segment computed in vain). Install the next cheaper
        # configuration and run this call again through it, as the first call of the generation.
        clocked = self.gen is not None and self.gen.clocked
        num_steps = self.gen.num_steps if self.gen is not None else None
        ticks, context = self.steps.ticks, self.context
        nxt = self.refit(self)
        self.replaced_by = nxt
        nxt.context = context
        if clocked:
            nxt.scheduler_started_before_install()
            nxt.steps.ticks = ticks
        elif num_steps is not None:
            nxt.reset(num_steps)
        result = self.root(*args, **kwargs)   # through nxt (and the next ones if it does not fit either)
        if self.fit_note is None:   # the configuration asked for: say once what ran instead, and why
            warnings.warn(f"cachekit: {type(self.root).__name__}: using {self.current().fit_note}", RuntimeWarning,
                          stacklevel=2)
        return result

    def _forward(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        if self.pipeline is not None:
            self._follow_scheduler()
        if not self.threads.enter_call(self.gen):   # re-entrant call (a model calling itself): run it plainly
            return original(*args, **kwargs)
        try:  # from here on this thread holds the model until the finally
            pos = self.steps.locate(args, kwargs, self.context)
            if pos.new_generation:
                self._new_generation(self.gen.num_steps)
            if pos.num_steps != self.gen.num_steps and pos.num_steps is not None:
                if self.span is None:
                    self.method.check_num_steps(pos.num_steps)   # the pipeline's context told another length
                self.gen.num_steps = pos.num_steps
            gen = self.gen
            if not gen.calls:
                # the generation's first call: look up the context-parallel group again, so that
                # enable_parallelism after apply works on bare models too (their first generation
                # began at apply, with no set_timesteps to begin another)
                self.reader.refresh(self.root, gen)
            if self.span is not None and not gen.calls:   # a partial denoiser's first call of a generation
                span = self.span()
                gen.offset = pos.step
                gen.span = span if span is not None else (
                    gen.num_steps - pos.step if gen.num_steps is not None else None)
                self.method.check_num_steps(gen.span)
            if gen.calls and pos.step != gen.calls[0].step and not gen.alive_checked and not self.prefix_replayed:
                # bare models too: the first step computed everything, so a column never computed
                # in it was bypassed (a hooked module that does not run, a replaced forward)
                guards.check_alive(gen, self.block_names, self.root)
                gen.alive_checked = True
            check = self.reader.check if self.check_ranks and self.reader.group is not None else None
            self.call = self.gen.begin_call(pos.step, pos.branch, pos.leader, self.path.call_state(), check)
            return original(*args, **kwargs)
        except BaseException:
            self.steps.failed = True
            raise
        finally:
            self.call = None
            self.threads.exit_call()
