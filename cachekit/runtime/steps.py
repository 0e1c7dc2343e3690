"""Denoising steps counted from the scheduler, so that telling steps apart reads no tensor.

Without a scheduler the runtime tells steps apart by the value of the model's timestep argument,
``float(t[0])``: one device-to-host sync per model call on an accelerator. A pipeline calls
``scheduler.set_timesteps`` once at the start of a call and ``scheduler.step`` once after each
step's model calls (every diffusers pipeline and the reference policy do), so with both wrapped
the step number is a Python counter: the key of a model call is the number of ``scheduler.step``
calls since ``set_timesteps``. Model calls with the same key are CFG branches of one step, as calls
with the same timestep are. A second-order sampler (Heun) calls ``step`` after each of its two
model evaluations, so each counts as a step, as ``len(scheduler.timesteps)`` does.

The clock only keys the generation that the wrapped ``set_timesteps`` started; a generation begun
by ``cachekit.reset``, by the timestep moving backwards, or after the scheduler was replaced reads
the timestep as before. A pipeline that calls ``set_timesteps`` but never ``step`` would make every
call a CFG branch of step 0: the clock is then dropped for good, with a warning, at the next
``set_timesteps``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable


class StepClock:
    def __init__(self) -> None:
        self.ticks = 0
        self.generation: Any = None  # the generation the clock keys (started by set_timesteps)
        self.trusted = True

    def start(self, previous: Any, generation: Any) -> None:
        """``set_timesteps`` began ``generation``; ``previous`` is the one it ended, if any."""
        if previous is self.generation is not None and self.ticks == 0 and len(previous.calls) > 1:
            self.trusted = False
            warnings.warn("cachekit: the scheduler's set_timesteps was called but its step never was; "
                          "steps are told apart by the timestep value from now on", RuntimeWarning, stacklevel=3)
        self.ticks = 0
        self.generation = generation if self.trusted else None

    def key(self, generation: Any) -> float | None:
        """This model call's step key, or None when the timestep must be read."""
        return float(self.ticks) if generation is self.generation else None

    def step(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        """Wrapper of ``scheduler.step``: the calls after it belong to the next denoising step."""
        self.ticks += 1
        return original(*args, **kwargs)
