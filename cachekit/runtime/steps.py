"""Which generation, denoising step and CFG branch a model call belongs to: one ordered step source.

The step of a model call comes from the first of these that is known:

1. **diffusers' ``CacheContext``**: a pipeline that enters ``transformer.cache_context(name,
   step_index=i, num_inference_steps=n)`` (Wan does) says where its loop is; ``step_index`` is the
   step and ``num_inference_steps`` the generation's length.
2. **The scheduler's own step calls**: a pipeline calls ``scheduler.set_timesteps`` once at the
   start of a call and ``scheduler.step`` once after each step's model calls (every diffusers
   pipeline and the reference policy do); with both wrapped, the step is a Python counter of
   ``step`` calls since ``set_timesteps``, and no tensor is read. A second-order sampler (Heun) calls
   ``step`` after each of its two evaluations, so each counts as a step, as
   ``len(scheduler.timesteps)`` does. The counter only keys a generation that ``set_timesteps``
   started; a pipeline that calls ``set_timesteps`` but never ``step`` would make every call a
   CFG branch of step 0, so the counter is then dropped for good, with a warning.
3. **The timestep argument's value** (bare modules): ``float(t[0])``, one device-to-host read per
   model call on an accelerator. A call with a new value starts a new step.

Calls within one step are CFG branches: named by the context when the pipeline sets one ("cond",
"uncond"), else numbered by their position in the step; the first is the *leader*. A generation
starts at ``set_timesteps``, at ``cachekit.reset``, after ``num_steps`` steps, after a forward
raised, or when the step key moves against the loop's direction (DDPM 999 -> 0 then back to 999;
ascending loops work too).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch


@dataclass(frozen=True)
class Context:
    """What ``cache_context(name, **fields)`` told about the model calls made inside it."""

    name: Hashable
    step_index: int | None = None
    num_inference_steps: int | None = None

    @classmethod
    def from_call(cls, args: tuple, kwargs: dict) -> "Context":
        name = args[0] if args else kwargs.get("name")
        return cls(name, _int_or_none(kwargs.get("step_index")), _int_or_none(kwargs.get("num_inference_steps")))


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        return int(v)
    return None


@dataclass(frozen=True)
class Position:
    """Where a model call is. ``new_generation``: this call began a generation the source found
    by itself (the caller starts fresh books); ``num_steps``: the generation's length when known."""

    step: int
    branch: Hashable
    leader: bool
    new_generation: bool
    num_steps: int | None


class TimestepReader:
    """Reads the model forward's timestep argument as a float (source 3)."""

    def __init__(self, forward: Callable, name: str | None) -> None:
        self.name, self.position = name, None
        if name is not None:
            params = [p for p in inspect.signature(forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            names = [p.name for p in params]
            self.position = names.index(name) if name in names else None

    def __call__(self, args: tuple, kwargs: dict) -> float | None:
        """First element of the timestep: enough to tell steps apart (the pipeline broadcasts one
        value over the batch). A device-to-host sync per call on an accelerator."""
        if self.name is None:
            return None
        t = kwargs.get(self.name) if self.name in kwargs else (
            args[self.position] if self.position is not None and self.position < len(args) else None)
        if isinstance(t, torch.Tensor):
            return float(t.reshape(-1)[0]) if t.numel() else None
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return float(t)
        return None


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class StepSource:
    """The one place that tells steps, branches and generation boundaries (sources in the module doc)."""

    def __init__(self, read_timestep: Callable[[tuple, dict], float | None]) -> None:
        self._read_timestep = read_timestep
        self.ticks = 0            # scheduler.step calls since set_timesteps
        self._trusted = True      # False once set_timesteps came without any step in between
        self.start(None)

    # ---- generations ---------------------------------------------------------------------
    def start(self, num_steps: int | None, *, clocked: bool = False) -> None:
        """A generation begins: ``clocked`` when ``set_timesteps`` began it (source 2 may key it)."""
        self.num_steps = num_steps
        self.step = -1
        self.failed = False       # a forward raised: the next call starts a generation
        self._key: tuple | None = None
        self._direction = 0       # +1 / -1 once two distinct keys of one source were seen
        self._branches: list[Hashable] = []
        self._clocked = clocked and self._trusted
        if clocked:
            self.ticks = 0

    def scheduler_started(self, num_steps: int | None, calls_before: int) -> None:
        """``set_timesteps`` was called; ``calls_before``: model calls of the generation it ends."""
        if self._clocked and self.ticks == 0 and calls_before > 1:
            self._trusted = False
            warnings.warn("cachekit: the scheduler's set_timesteps was called but its step never was; "
                          "steps are told apart by the timestep value from now on", RuntimeWarning, stacklevel=4)
        self.start(num_steps, clocked=True)

    @property
    def clocked(self) -> bool:
        """This generation is keyed by the scheduler's step calls (source 2)."""
        return self._clocked

    def tick(self) -> None:
        """``scheduler.step`` was called: later calls belong to the next step."""
        self.ticks += 1

    # ---- model calls ---------------------------------------------------------------------
    def _key_of(self, args: tuple, kwargs: dict, context: Context | None) -> tuple[tuple | None, int | None]:
        """(step key, step index when the context gives it). A key is (source, value)."""
        if context is not None and context.step_index is not None:
            return ("context", float(context.step_index)), context.step_index
        if self._clocked:   # the tick count is the step index (also when calls skip steps: planning.lemica)
            return ("scheduler", float(self.ticks)), self.ticks
        t = self._read_timestep(args, kwargs)
        return (("timestep", t) if t is not None else None), None

    def _is_new_step(self, key: tuple | None, name: Hashable | None) -> bool:
        return (self.step < 0 or (key is None and name is None) or (key is not None and key != self._key)
                or (name is not None and name in self._branches))

    def _ends_generation(self, key: tuple | None) -> bool:
        """At a new step: all ``num_steps`` were done, or the key moved against the loop."""
        if self.num_steps is not None and self.step + 1 >= self.num_steps:
            return True
        last = self._key
        return (key is not None and last is not None and key[0] == last[0] and self._direction != 0
                and _sign(key[1] - last[1]) != self._direction)

    def locate(self, args: tuple, kwargs: dict, context: Context | None) -> Position:
        """The position of a model call (and the bookkeeping that it happened)."""
        name = context.name if context is not None else None
        key, index = self._key_of(args, kwargs, context)
        new_step = self._is_new_step(key, name)
        restarted = False
        if self.failed or (self.step >= 0 and new_step and self._ends_generation(key)):
            self.start(self.num_steps)   # same length; the scheduler's counter does not key it
            restarted, new_step = True, True
            key, index = self._key_of(args, kwargs, context)
        if new_step:
            last = self._key
            if key is not None and last is not None and key[0] == last[0] and not self._direction:
                self._direction = _sign(key[1] - last[1])
            self.step = index if index is not None else self.step + 1
            self._branches = []
        if context is not None and context.num_inference_steps is not None:
            self.num_steps = context.num_inference_steps
        branch = name if name is not None else len(self._branches)
        leader = not self._branches
        self._branches.append(branch)
        self._key = key
        return Position(self.step, branch, leader, restarted, self.num_steps)
