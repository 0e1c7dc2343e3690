"""Reversible attribute patches on *instances* (never classes), that survive being wrapped over.

Like accelerate's hooks: the original bound method stays reachable as ``__wrapped__``, the wrapper
keeps its signature (``functools.wraps``), and undoing restores the exact previous state: an
instance attribute that existed is put back as the same object, one that did not is deleted.

Other libraries wrap ``forward`` too (accelerate's offload hooks, diffusers' hook registry). When
one of them wrapped over ours, undoing must not throw its wrapper away: the attribute is left as
it is, and our wrapper, which may still sit inside its chain, goes inert (it calls the original
straight away), so behaviour is the unpatched one. Where the foreign wrapper calls
``module._old_forward`` (accelerate), ours is unlinked from there too.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable

from torch import nn

from . import interop

_MISSING = object()


def wrap_method(original: Callable, impl: Callable[[Callable, tuple, dict], Any],
                alive: list[bool] | None = None) -> Callable:
    """A function that calls ``impl(original, args, kwargs)`` and looks like ``original``; once
    ``alive[0]`` is False it calls ``original`` alone."""
    alive = alive if alive is not None else [True]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not alive[0]:
            return original(*args, **kwargs)
        return impl(original, args, kwargs)

    wrapper.__cachekit__ = True  # marks our wrappers, so a second apply can tell
    wrapper.__cachekit_alive__ = alive
    return wrapper


def _follows_copies(wrapper: Callable, obj: object, original: Callable) -> Callable:
    """``wrapper`` as a method bound to ``obj``, so that ``copy.deepcopy(obj)`` binds it to the copy
    (``copy`` rebinds bound methods), where it calls the copy's own original, unhooked: LTX-2 makes
    its audio scheduler as a deep copy of the video scheduler, whose wrapped ``step`` would
    otherwise step the video scheduler twice per step."""

    def method(self: object, *args: Any, **kwargs: Any) -> Any:
        if self is obj:
            return wrapper(*args, **kwargs)
        if getattr(original, "__self__", None) is obj:   # the copy's own method
            return types.MethodType(original.__func__, self)(*args, **kwargs)
        return original(*args, **kwargs)

    functools.update_wrapper(method, wrapper)
    method.__cachekit__ = True
    method.__cachekit_alive__ = wrapper.__cachekit_alive__
    return types.MethodType(method, obj)


def _live(value: Any, obj: object, name: str) -> Any:
    """``value`` without the inert cachekit wrappers on top of it (left by a session undone while
    another was wrapped over it: two denoisers on one scheduler); ``_MISSING`` when nothing but the
    class's own method is left under them."""
    while getattr(value, "__cachekit__", False) and not value.__cachekit_alive__[0]:
        value = value.__wrapped__
    if getattr(value, "__self__", None) is obj and getattr(value, "__func__", None) is getattr(type(obj), name, None):
        return _MISSING
    return value


def calls_into(obj: object, name: str, target: Callable) -> bool:
    """Does calling ``obj.name`` still reach ``target``? Follows accelerate's hook (its wrapper calls
    ``obj._old_forward``) and ``__wrapped__`` links (``functools.update_wrapper``: diffusers' hook
    registry, accelerate, ours). False when no visible link leads there (an unknown wrapper may
    still call it)."""
    f = getattr(obj, name, None)
    seen: set[int] = set()
    while f is not None and id(f) not in seen:
        if f is target:
            return True
        seen.add(id(f))
        if name == "forward" and interop.accelerate_hooked(obj) and f is vars(obj).get("forward"):
            f = interop.accelerate_old_forward(obj)   # what accelerate's wrapper really calls
        else:
            f = getattr(f, "__wrapped__", None)
    return False


class InstancePatches:
    """A stack of instance-attribute assignments that ``undo`` reverts in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any, Any]] = []
        self.alive = [True]   # shared by every wrapper made here

    def set(self, obj: object, name: str, value: Any) -> None:
        previous = vars(obj).get(name, _MISSING)
        # object.__setattr__ bypasses nn.Module / diffusers ConfigMixin __setattr__ side effects.
        object.__setattr__(obj, name, value)
        self._undo.append((obj, name, previous, value))

    def wrap(self, obj: object, name: str, impl: Callable[[Callable, tuple, dict], Any]) -> Callable:
        original = getattr(obj, name)
        wrapper = wrap_method(original, impl, self.alive)
        if not isinstance(obj, nn.Module):
            wrapper = _follows_copies(wrapper, obj, original)
        self.set(obj, name, wrapper)
        return wrapper

    def rewrap_under_accelerate(self, obj: object, impl: Callable[[Callable, tuple, dict], Any]) -> Callable | None:
        """accelerate's offload hook replaced ``forward`` over ours and calls ``obj._old_forward``:
        put our wrapper there (undone like any patch). None when ``obj`` has no such hook."""
        if not interop.accelerate_hooked(obj):
            return None
        return self.wrap(obj, interop.ACCELERATE_OLD_FORWARD, impl)

    def undo(self) -> None:
        self.alive[0] = False
        while self._undo:
            obj, name, previous, ours = self._undo.pop()
            current = vars(obj).get(name, _MISSING)
            if current is not ours:
                # wrapped over (or replaced) since: keep the other library's attribute; unlink ours
                # from accelerate's chain, where it can be found
                if name == "forward" and interop.accelerate_old_forward(obj) is ours:
                    interop.set_accelerate_old_forward(obj, ours.__wrapped__)
                continue
            if getattr(previous, "__cachekit__", False):
                previous = _live(previous, obj, name)
            if previous is _MISSING:
                object.__delattr__(obj, name)
            else:
                object.__setattr__(obj, name, previous)
