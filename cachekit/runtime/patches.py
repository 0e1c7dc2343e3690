"""Reversible attribute patches on *instances* (never classes).

Like accelerate's hooks: the original bound method stays reachable as ``__wrapped__``, the wrapper
keeps its signature (``functools.wraps``), and undoing restores the exact previous state: an
instance attribute that existed is put back as the same object, one that did not is deleted.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

_MISSING = object()


def wrap_method(original: Callable, impl: Callable[[Callable, tuple, dict], Any]) -> Callable:
    """A function that calls ``impl(original, args, kwargs)`` and looks like ``original``."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return impl(original, args, kwargs)

    wrapper.__cachekit__ = True  # marks our wrappers, so a second apply can tell
    return wrapper


class InstancePatches:
    """A stack of instance-attribute assignments that ``undo`` reverts in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any]] = []

    def set(self, obj: object, name: str, value: Any) -> None:
        previous = vars(obj).get(name, _MISSING)
        # object.__setattr__ bypasses nn.Module / diffusers ConfigMixin __setattr__ side effects.
        object.__setattr__(obj, name, value)
        self._undo.append((obj, name, previous))

    def wrap(self, obj: object, name: str, impl: Callable[[Callable, tuple, dict], Any]) -> None:
        self.set(obj, name, wrap_method(getattr(obj, name), impl))

    def undo(self) -> None:
        while self._undo:
            obj, name, previous = self._undo.pop()
            if previous is _MISSING:
                object.__delattr__(obj, name)
            else:
                object.__setattr__(obj, name, previous)
