"""A pipeline that runs several denoisers (Wan 2.2: ``transformer`` for the high-noise steps,
``transformer_2`` for the low-noise ones): one session per denoiser, each with its own hooks,
state and config, all following the pipeline's one scheduler; this object stands on the pipeline
for ``stats`` (combined, and per denoiser in ``CacheStats.denoisers``), ``reset`` and ``remove``.
"""

from __future__ import annotations

from typing import Any

from .deferred import Deferred
from .patches import InstancePatches
from .stats import CacheStats

__all__ = ["Denoisers"]


class Denoisers:
    def __init__(self, pipeline: Any, attr: str) -> None:
        self.pipeline, self.attr = pipeline, attr
        self.sessions: dict[str, Any] = {}   # component name -> Session (or Deferred until its first call)
        self._patches = InstancePatches()

    def install(self, installs: dict[str, Any]) -> None:
        """``installs``: component name -> a callable installing that denoiser's session (in order).
        On any failure every session installed so far is removed and the error re-raised."""
        try:
            for name, install in installs.items():
                self.sessions[name] = install()
            self._patches.set(self.pipeline, self.attr, self)
        except BaseException:
            self.uninstall()
            raise

    def uninstall(self) -> None:
        # the sessions wrapped the one scheduler in order: unwrap in reverse
        self._follow()
        for session in reversed(list(self.sessions.values())):
            session.current().uninstall()
        self.sessions = {}
        self._patches.undo()

    def current(self) -> "Denoisers":
        return self

    def _follow(self) -> None:
        """A denoiser's session replaced by another (the default's fitting): keep the newest."""
        for name, session in self.sessions.items():
            self.sessions[name] = session.current()

    def stats(self) -> CacheStats:
        self._follow()
        named = {}
        for name, session in self.sessions.items():
            if isinstance(session, Deferred):   # discovery pending: never called
                continue
            named[name] = session.stats()
        return CacheStats.combine(named)

    def reset(self, num_steps: int | None = None) -> None:
        for session in self.sessions.values():
            session.current().reset(num_steps)
