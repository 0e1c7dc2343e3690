"""The interface between the session and its two runtime paths (``segments.py``, ``units.py``).

A path knows *where* reuse happens at one granularity (block-range segments, or sub-block units)
and owns the cached tensors' layout; the session knows *when* a model call happens (steps,
branches, generations) and installs what the path asks for. A path:

- names the plan's columns (``columns``: block names, or unit names),
- lists the hooks it needs (``hooks()``): each wraps ``owner.attr`` with ``impl(original, args,
  kwargs)``; ``innermost`` hooks wrap code that ``apply(compile=True)`` compiles,
- gives each model call a fresh per-call record (``call_state()``, kept on ``Call.local``),
- finds the call in progress through the ``current`` function it was built with (None outside a
  model forward: blocks called on their own are not cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .state import Call

Impl = Callable[[Callable, tuple, dict], Any]


@dataclass(frozen=True)
class Hook:
    owner: object
    attr: str
    impl: Impl
    innermost: bool = True


class Path(Protocol):
    columns: tuple[str, ...]

    def hooks(self) -> list[Hook]: ...

    def call_state(self) -> Any: ...


Current = Callable[[], "Call | None"]
