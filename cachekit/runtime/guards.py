"""What keeps caching honest when other code touches the same model: never silently off.

- Hooks replaced after ``apply`` (accelerate's model offload re-installs its hook over ours at the
  end of every pipeline call; a user may wrap ``forward``): checked at the start of each generation
  (``reattach``: accelerate's hook calls ``module._old_forward``, so ours goes there), and proven
  at the first scheduler step (``check_alive``: every hooked block ran through its hook in step 0,
  where every method computes everything), else a one-line error.
- Another cache enabled after ``apply`` (diffusers' ``enable_cache``): a one-line error.
- Two generations at once on one model (threads): a one-line error (``ThreadGuard``).
- A cache budget: the cache's size projected from the first payload of each CFG branch, refused
  before it is kept, over ``apply(..., max_cache_bytes=N)`` or, on CUDA, over what the device can
  still give (``Budget``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .patches import InstancePatches, calls_into
from .history import HistoryStorage, payload_tensors
from .state import Generation
from ..errors import CompositionError, ConcurrencyError, CacheBudgetError  # noqa: F401 - defined in errors.py, importable here as before


@dataclass
class Hooked:
    """One installed hook: ``owner.attr`` wrapped with ``wrapper`` (which runs ``impl``)."""

    owner: object
    attr: str
    impl: Callable
    wrapper: Callable


def reattach(hooks: list[Hooked], patches: InstancePatches) -> None:
    """Put our wrappers back where accelerate's hooks replaced them (they call ``_old_forward``);
    other replacements are left to ``check_alive``, since an unknown wrapper may still call ours."""
    for h in hooks:
        if calls_into(h.owner, h.attr, h.wrapper):
            continue
        if h.attr == "forward":
            wrapper = patches.rewrap_under_accelerate(h.owner, h.impl)
            if wrapper is not None:
                h.wrapper = wrapper


def check_other_cache(model: Any) -> None:
    if getattr(model, "is_cache_enabled", False) is True:   # diffusers' CacheMixin property
        raise CompositionError(f"cachekit: diffusers' own cache was enabled on {type(model).__name__} after "
                               f"cachekit.apply; call .disable_cache() (two caches would skip each other's blocks)")


def check_alive(gen: Generation, columns: tuple[str, ...], model: Any) -> None:
    """After the first step of a generation (pipeline or bare model): did every hook run? Step 0
    computes every block and unit under every method, so a column never computed there was
    bypassed or never runs; caching it would report reuse that never happened."""
    what = type(model).__name__
    if not gen.calls:
        raise CompositionError(f"cachekit: the pipeline ran a step without calling {what} through cachekit's "
                               f"hook (its forward was replaced after cachekit.apply); call cachekit.remove, "
                               f"then cachekit.apply again after that change")
    first = gen.calls[0].step
    ran = np.any([c.computed for c in gen.calls if c.step == first], axis=0)
    if not ran.all():
        missing = [c for c, r in zip(columns, ran) if not r]
        raise CompositionError(f"cachekit: {len(missing)} of {len(columns)} hooked blocks of {what} ran without "
                               f"cachekit's hooks in the first step ({missing[0]}, ...): their forward was replaced "
                               f"after cachekit.apply, or the model never runs them (a layout naming modules off its "
                               f"path); call cachekit.remove, then apply again after that change or with a layout of "
                               f"the blocks it runs")


class ThreadGuard:
    """One generation at a time per model: a call from another thread while a call is in progress,
    or while another thread's pipeline generation is unfinished, is refused."""

    def __init__(self, model: Any) -> None:
        self.model_name = type(model).__name__
        self.lock = threading.Lock()
        self.call_thread: int | None = None
        self.gen_thread: int | None = None

    def _refuse(self, other: int) -> None:
        raise ConcurrencyError(f"cachekit: two generations at once on one {self.model_name} (threads {other} and "
                               f"{threading.get_ident()}): cachekit keeps one generation per model; give each thread "
                               f"its own copy (copy.deepcopy(pipe.transformer), then cachekit.apply on each) or run "
                               f"them one after the other")

    def enter_call(self, gen: Generation) -> bool:
        """Claim the model for a call; False for a re-entrant call of the same thread."""
        me = threading.get_ident()
        with self.lock:
            if self.call_thread is not None:
                if self.call_thread != me:
                    self._refuse(self.call_thread)
                return False
            if self.gen_thread not in (None, me) and gen.open:
                self._refuse(self.gen_thread)
            self.call_thread = me
            if not gen.calls:
                self.gen_thread = me
            return True

    def exit_call(self) -> None:
        self.call_thread = None

    def enter_generation(self, gen: Generation) -> None:
        """``set_timesteps`` is about to start a generation: refused while another thread's runs."""
        me = threading.get_ident()
        with self.lock:
            busy = self.call_thread if self.call_thread not in (None, me) else (
                self.gen_thread if self.gen_thread not in (None, me) and gen.open else None)
            if busy is not None:
                self._refuse(busy)
            self.gen_thread = me


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def project(newest: int, older: int, slots: int, depth: int, branches: int) -> tuple[int, int]:
    """(newest entries, older entries) bytes of a full history: ``newest`` / ``older`` are one
    payload's bytes as the newest entry and as stored once older (``HistoryStorage``)."""
    return newest * slots * branches, older * slots * max(depth - 1, 0) * branches


def device_free_bytes(device: Any) -> int | None:
    """What a CUDA device can still give: the driver's free memory plus what torch's caching
    allocator holds unused; None off CUDA."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def host_free_bytes() -> int | None:
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class Budget:
    """What a generation's cache may hold, checked when a branch stores its first payload of a
    generation, before it is kept (nothing is changed when it raises). The projection is the
    history alone: payload bytes x slots (segments or units) x history depth x CFG branches, a
    lower bound (a method's own tensors, EasyCache's last input and output, come on top:
    ``cachekit.estimate_cache_bytes`` counts them), so a refusal is certain. Refused:

    - above ``max_cache_bytes`` (``limit``; device and host together);
    - by default, a CUDA payload whose history's device part exceeds what the device can still
      give (``device_free_bytes``); with history in host memory, a host part over the free RAM.
    """

    def __init__(self, limit: int | None, slots: int, depth: int, storage: HistoryStorage | None = None,
                 units: bool = False) -> None:
        self.limit, self.slots, self.depth, self.storage, self.units = limit, slots, depth, storage, units
        self.checked: set = set()
        self.refused: tuple[int, str] | None = None   # (projected bytes, what it was over) at a refusal

    def new_generation(self) -> None:
        self.checked = set()

    def admit(self, branch: Any, payload: Any, branches: int) -> None:
        if branch in self.checked:
            return
        self.checked.add(branch)
        tensors = payload_tensors(payload)
        device = tensors[0].device if tensors else None
        host = self.storage is not None and self.storage.where == "host"
        free = device_free_bytes(device)   # None off CUDA
        if self.limit is None and free is None and not host:
            return   # nothing to check against (CPU, no max_cache_bytes): the default costs nothing more
        newest = sum(t.numel() * t.element_size() for t in tensors)
        older = sum(self.storage.stored_bytes(t) for t in tensors) if self.storage is not None else newest
        branches = max(branches, 1)
        first, rest = project(newest, older, self.slots, self.depth, branches)
        on_device, in_host = (first, rest) if host else (first + rest, 0)
        over = None
        if self.limit is not None and first + rest > self.limit:
            over = f"max_cache_bytes={_human(self.limit)}"
        elif free is not None and on_device > free:
            over = f"the {_human(free)} {device} can still give"
        elif in_host and (free_host := host_free_bytes()) is not None and in_host > free_host:
            over = f"the {_human(free_host)} of free host memory (history='host')"
        if over is not None:
            self.refused = (first + rest, over)   # what the default's fitting reports (api._fit)
            raise CacheBudgetError(
                f"cachekit: the cache would hold about {_human(first + rest)} ({_human(newest)} per segment/unit and "
                f"step x {self.slots} segments/units x {self.depth} steps of history x {branches} CFG branches), over "
                f"{over}; cheaper: {self._options(newest, branches, tensors)}")

    def _options(self, newest: int, branches: int, tensors: list) -> str:
        """The cheaper configurations, each with its projection (same payloads)."""
        opts = []
        if self.depth > 1:
            opts.append(f"forecast='none' or forecast_order=0 {_human(newest * self.slots * branches)}")
        if self.depth > 2:
            opts.append(f"forecast_order=1 {_human(2 * newest * self.slots * branches)}")
        if self.units:
            opts.append(f"stack-level reuse (units=False) about {_human(newest * self.depth * branches)}")
        if self.depth > 1 and not (self.storage is not None and self.storage.where == "host"):
            first, rest = project(newest, newest, self.slots, self.depth, branches)
            opts.append(f"history='host' {_human(first)} on the device + {_human(rest)} pinned in host memory")
        if self.depth > 1 and any(t.is_floating_point() and t.element_size() > 2 for t in tensors) and (
                self.storage is None or self.storage.dtype is None):
            first, rest = project(newest, newest // 2, self.slots, self.depth, branches)
            opts.append(f"history='bf16' {_human(first + rest)}")
        if self.depth > 1 and any(t.is_floating_point() and t.element_size() > 1 for t in tensors) and (
                self.storage is None or self.storage.dtype is None or self.storage.dtype.itemsize > 1):
            size = max((t.element_size() for t in tensors if t.is_floating_point()), default=1)
            first, rest = project(newest, newest // size, self.slots, self.depth, branches)
            opts.append(f"history='int8' about {_human(first + rest)}")
        return "; ".join(opts) if opts else "none at this granularity (fewer tokens or a smaller batch)"
