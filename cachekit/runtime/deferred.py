"""Hooks for a model whose blocks are found at its first call (``adapters.discover``).

``apply`` on a model class with no registered layout installs only this: the model's ``forward``
(and a pipeline scheduler's ``set_timesteps``) wrapped on the instance. The first call is run once
observed (no grad) to find the block stacks; then these wrappers are removed, the real hooks are
installed with the discovered layout, and the call runs again through them: step 0 of the first
generation is the real one, fully computed and counted. Cost: one extra forward, once per
``apply``. A model discovery cannot settle is left as it was and the call raises one line that
lists what was seen and the ``register_layout`` call that settles it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn

from ..adapters import ModelLayout, UnsupportedModelError
from ..adapters.discover import layout_from_observation, layout_source
from .observe import observe
from .patches import InstancePatches

log = logging.getLogger("cachekit")

__all__ = ["Deferred"]


class Deferred:
    """Stands in for a ``Session`` until the first call; ``session`` is the real one afterwards."""

    def __init__(self, model: nn.Module, owners: list[object], attr: str,
                 install: Callable[[ModelLayout], Any], scheduler: Any = None, tap: Any = None) -> None:
        self.model, self.owners, self.attr, self._install = model, owners, attr, install
        self.tap = tap   # calibration's ``runtime.tap.ForwardTap``: replayed calls discover nothing
        self.scheduler = scheduler
        self.session: Any = None
        self.layout: ModelLayout | None = None
        self.scheduler_started = False
        self.num_steps: int | None = None
        self._patches = InstancePatches()

    def install(self) -> None:
        try:
            for owner in self.owners:
                self._patches.set(owner, self.attr, self)
            self._patches.wrap(self.model, "forward", self._first_call)
            if callable(getattr(self.scheduler, "set_timesteps", None)):
                self._patches.wrap(self.scheduler, "set_timesteps", self._set_timesteps)
        except BaseException:
            self.uninstall()
            raise

    def uninstall(self) -> None:
        self._patches.undo()

    def current(self) -> Any:
        return self.session if self.session is not None else self

    def _set_timesteps(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        self.scheduler_started = True
        return original(*args, **kwargs)

    def _first_call(self, original: Callable, args: tuple, kwargs: dict) -> Any:
        if self.tap is not None:
            replayed, out = self.tap.take_replayed()
            if replayed:
                return out
        try:
            obs = observe(self.model, lambda: original(*args, **kwargs))
            layout = layout_from_observation(obs)
        except BaseException:
            self.uninstall()   # the model is left as it was before apply
            raise
        self.uninstall()
        self.layout = layout
        log.info("cachekit: discovered %s from its first call:\n%s", type(self.model).__name__,
                 layout_source(type(self.model), layout))
        self.session = self._install(layout)
        self.session.discovered = True
        if self.scheduler_started:
            self.session.scheduler_started_before_install()
        elif self.num_steps is not None:
            self.session.reset(self.num_steps)
        return self.model(*args, **kwargs)

    # what api asks of a session before the first call
    def stats(self) -> Any:
        raise UnsupportedModelError(
            f"cachekit.stats: {type(self.model).__name__} has not been called since cachekit.apply; its blocks are "
            f"found at its first call (no registered layout)")

    def reset(self, num_steps: int | None = None) -> None:
        self.num_steps = num_steps
