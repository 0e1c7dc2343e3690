"""Per-generation state: the model calls of one denoising loop and what each CFG branch has cached.

A *generation* is one denoising loop (one pipeline call, one action prediction). A *step* is one
denoising step, which may take several model calls (separate cond/uncond passes). Which step and
branch a call belongs to is decided in ``steps.py``; this file only keeps the books. Nothing here
is global: each applied target owns one ``Generation`` at a time.

A forecast's older history entries may be kept elsewhere than the newest (``HistoryStorage``: in
host memory, or in bf16 / fp16): they are moved when they stop being the newest, and the paths
read them back through ``BranchState.history.get``, which restores them for the one reuse step
that reads them. Without a storage the history is a plain dict, as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
import torch


# ---- where the forecast history's older entries live ---------------------------------------------
_LOWER = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class HistoryStorage:
    """Where a forecast's older cached tensors are kept (``apply(..., history=...)``).

    Only the newest entry of a segment's / unit's history is read on every reuse step; the older
    ones (``forecast_order`` of them, 2 for FoCa, 1 for ERTACache's linear correction) are read
    only when a forecast combines them. They can live elsewhere:

    Args:
        where: "device" (default: beside the newest) or "host": CPU memory, pinned when the stream
            is on CUDA, copied out with ``non_blocking=True`` when an entry becomes second-newest and
            back (asynchronously, on the current stream) when a reuse step forecasts. On a CPU
            model the two are the same memory.
        dtype: None (the stream's dtype, default) or torch.bfloat16 / torch.float16: older entries
            of wider floating dtypes are stored in it and brought back to the stream's dtype when a
            forecast combines them (bf16 keeps fp32's range; fp16 overflows above 65504).

    ``HistoryStorage()`` is today's behaviour exactly; plain reuse (depth 1) never has an older
    entry, so it is unaffected (bit-exact) whatever this says.
    """

    where: str = "device"
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.where not in ("device", "host"):
            raise ValueError(f"cachekit: history where must be 'device' or 'host', got {self.where!r}")
        if self.dtype is not None and self.dtype not in _LOWER.values():
            raise ValueError(f"cachekit: history dtype must be None, torch.bfloat16 or torch.float16, got {self.dtype!r}")

    @classmethod
    def parse(cls, value: "HistoryStorage | str | None") -> "HistoryStorage":
        """None / "device"; "host"; "bf16" / "fp16"; "host+bf16"; or a HistoryStorage."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            parts = [p.strip() for p in value.split("+")]
            where = "host" if "host" in parts else "device"
            lower = [p for p in parts if p in _LOWER]
            rest = [p for p in parts if p not in _LOWER and p not in ("host", "device")]
            if not rest and len(lower) <= 1 and len(parts) == len(set(parts)):
                return cls(where, _LOWER[lower[0]] if lower else None)
        raise ValueError(f"cachekit: history must be None, 'device', 'host', 'bf16', 'fp16', 'host+bf16' "
                         f"(or 'host+fp16') or a cachekit.HistoryStorage, got {value!r}")

    @property
    def is_default(self) -> bool:
        return self.where == "device" and self.dtype is None

    def lowers(self, t: torch.Tensor) -> bool:
        return self.dtype is not None and t.is_floating_point() and t.element_size() > self.dtype.itemsize

    def stored_bytes(self, t: torch.Tensor) -> int:
        """Bytes an older entry's tensor takes once stored here."""
        return t.numel() * (self.dtype.itemsize if self.lowers(t) else t.element_size())

    def demote(self, payload: Any) -> "_Demoted":
        return _Demoted(_map_tensors(payload, self._demote_tensor))

    def _demote_tensor(self, t: torch.Tensor) -> tuple:
        origin = (t.device, t.dtype)
        if self.lowers(t):
            t = t.to(self.dtype)
        if self.where == "host" and t.device.type != "cpu":
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
            t = host.copy_(t, non_blocking=True)
        return _Stored(t, *origin)


@dataclass(frozen=True)
class _Stored:
    """One tensor of an older history entry, as stored, and where / in which dtype it was made."""

    tensor: torch.Tensor
    device: torch.device
    dtype: torch.dtype

    def restore(self) -> torch.Tensor:
        t = self.tensor
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
        return t if t.dtype == self.dtype else t.to(self.dtype)


@dataclass(frozen=True)
class _Demoted:
    """An older history entry's payload with its tensors replaced by ``_Stored`` ones."""

    payload: Any

    def restore(self) -> Any:
        return _map_tensors(self.payload, _Stored.restore, leaf=_Stored)


def _map_tensors(payload: Any, fn: Callable, leaf: type = torch.Tensor) -> Any:
    if isinstance(payload, leaf):
        return fn(payload)
    if isinstance(payload, dict):
        return {k: _map_tensors(v, fn, leaf) for k, v in payload.items()}
    if isinstance(payload, tuple):
        return tuple(_map_tensors(v, fn, leaf) for v in payload)
    if isinstance(payload, list):
        return [_map_tensors(v, fn, leaf) for v in payload]
    return payload


class _RestoredEntries(Sequence):
    """A history list as the paths read it: older entries brought back (device, dtype) on first
    access, kept by this view only, so the copies live as long as the reuse step that reads them."""

    def __init__(self, entries: list) -> None:
        self._entries = entries
        self._restored: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self._restored:
            step, payload = self._entries[i]
            self._restored[i] = (step, payload.restore() if isinstance(payload, _Demoted) else payload)
        return self._restored[i]

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(len(self)))


class _History(dict):
    """``BranchState.history`` when older entries are stored elsewhere (``HistoryStorage``): the
    stored lists stay as they are; ``get`` hands the paths a view that restores on access."""

    def get(self, k: Any, default: Any = None) -> Any:
        entries = dict.get(self, k)
        if entries is None:
            return default
        return _RestoredEntries(entries) if any(isinstance(p, _Demoted) for _, p in entries) else entries


@dataclass
class BranchState:
    """What one CFG branch keeps between steps.

    Attributes:
        history: per segment / unit (the plan's column or segment index), the payloads cached at
            the last computed steps as (step, payload), newest first; ``history_depth`` entries
            (1 for plain reuse, more for forecasts). A payload is what the path caches: a
            segment's residual streams (dict), or a unit's (input-shape key, output).
        scratch: the method's own state for this branch.
        extra: the path's own per-branch data (units: the input shapes of additive blocks' last run).
        on_store: called with each payload before it is kept (the cache budget), or None.
        storage: where entries older than the newest are kept (``HistoryStorage``); None: beside
            the newest, as they are.
    """

    history: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    on_store: Callable[[Any], None] | None = field(default=None, repr=False)
    storage: HistoryStorage | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.storage is not None and self.storage.is_default:
            self.storage = None
        if self.storage is not None and not isinstance(self.history, _History):
            self.history = _History(self.history)

    def latest(self, k: int) -> Any:
        """The newest cached payload of segment/unit ``k``, or None."""
        entries = dict.get(self.history, k)
        return entries[0][1] if entries else None

    def remember(self, k: int, step: int, payload: Any, depth: int) -> None:
        """Push the payload computed at ``step`` for segment/unit ``k``, keeping ``depth`` entries;
        a None payload (nothing reusable) forgets ``k``. With a ``storage``, the entry that becomes
        second-newest is moved there (once: older ones already are)."""
        if payload is None:
            self.history[k] = []
            return
        if self.on_store is not None:
            self.on_store(payload)
        old = [e for e in dict.get(self.history, k, ()) if e[0] != step][:depth - 1]
        if self.storage is not None and old and not isinstance(old[0][1], _Demoted):
            old[0] = (old[0][0], self.storage.demote(old[0][1]))
        self.history[k] = [(step, payload), *old]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this branch holds: cached payloads and the method's scratch (EasyCache's
        last input and output, BlockDrift's references, ...)."""
        return [t for entries in self.history.values() for _, payload in entries for t in _tensors(payload)] + \
            _tensors(self.scratch)

    def cached_bytes(self) -> int:
        """Bytes held by this branch, each tensor counted once."""
        return _unique_bytes(self.tensors())


def payload_bytes(payload: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(payload))


def _unique_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of these tensors, each counted once (a residual may also sit in a method's scratch)."""
    return sum({id(t): t.numel() * t.element_size() for t in tensors}.values())


def _tensors(payload: Any) -> list[torch.Tensor]:
    if isinstance(payload, torch.Tensor):
        return [payload]
    if isinstance(payload, (_Demoted, _Stored)):
        return _tensors(payload.payload if isinstance(payload, _Demoted) else payload.tensor)
    if isinstance(payload, dict):
        return [t for v in payload.values() for t in _tensors(v)]
    if isinstance(payload, (tuple, list)):
        return [t for v in payload for t in _tensors(v)]
    return []


@dataclass
class Call:
    """One model forward inside a generation, as the paths see it.

    Attributes:
        step, num_steps, branch, leader: where the call is (``steps.Position``).
        state: this branch's cache and the method's scratch.
        decisions: the leader's decision per segment / unit at this step, shared by the step's calls.
        computed: bool per plan column, filled as blocks / units run.
        reused: bool per plan column, filled where the cache served it; a column neither computed
            nor reused did not run in this call (the model skipped it) and is not counted.
        local: the path's per-call data (``Path.call_state()``).
        check: called with (step, k, branch, decision) after each leader decision (``check_ranks``).
    """

    step: int
    num_steps: int | None
    branch: Hashable
    leader: bool
    state: BranchState
    decisions: dict[int, bool]
    computed: np.ndarray
    local: Any = None
    check: Callable[[int, int, Hashable, bool], None] | None = None
    reused: np.ndarray | None = None   # bool per plan column: served from the cache in this call
    generation: Any = None              # the Generation this call belongs to

    @property
    def method_step(self) -> int:
        """The step as the method counts it: from this denoiser's first step in the generation."""
        return self.step - (self.generation.offset if self.generation is not None else 0)

    @property
    def method_num_steps(self) -> int | None:
        """The steps this denoiser runs in the generation, as far as known."""
        gen = self.generation
        if gen is None or (gen.offset == 0 and gen.span is None):
            return self.num_steps
        return gen.span

    def decide(self, k: int, ask: Callable[[], Any]) -> bool:
        """Compute segment/unit ``k`` at this call? The leader asks the method (once per step);
        followers copy its answer, and compute what the leader never decided."""
        if self.leader:
            compute = self.decisions[k] = bool(ask())
            if self.check is not None:
                self.check(self.step, k, self.branch, compute)
            return compute
        return self.decisions.get(k, True)


class Generation:
    """The calls and per-branch caches of one denoising loop.

    Attributes:
        complete: the pipeline's scheduler finished its last step (unknown, so False, on bare modules).
        clocked: begun by a pipeline's ``set_timesteps``.
        released_bytes: what the cache held when it was released (``release``), else None.
    """

    def __init__(self, num_columns: int, num_steps: int | None = None,
                 admit: Callable[[Hashable, Any, int], None] | None = None,
                 storage: HistoryStorage | None = None) -> None:
        self.num_columns = num_columns
        self.num_steps = num_steps
        self.branches: dict[Hashable, BranchState] = {}
        self.calls: list[Call] = []
        self._decisions: dict[int, bool] = {}
        self._admit = admit
        self._storage = storage
        self.complete = False
        self.clocked = False   # begun by a pipeline's set_timesteps: its end is known (``complete``)
        self.host_reads = self.collectives = 0   # decisions' reads of device statistics; all-reduces
        self.released_bytes: int | None = None
        self.alive_checked = False   # every column was seen computed at the first step
        self.shape_changes = 0       # segment runs recomputed: a stream changed shape inside them
        # A denoiser that runs part of a generation (Wan 2.2's experts): its methods count steps from
        # its own first step (``offset``) over its own ``span`` of steps (warm-up, final steps and
        # calibrated plans apply to the part it runs); stats keep the pipeline's step numbers.
        self.offset = 0
        self.span: int | None = None

    @property
    def open(self) -> bool:
        """A pipeline generation that has begun and not finished (bare modules: never known)."""
        return self.clocked and bool(self.calls) and not self.complete

    def cached_bytes(self) -> int:
        if self.released_bytes is not None:
            return self.released_bytes
        return _unique_bytes([t for b in self.branches.values() for t in b.tensors()])

    def release(self) -> None:
        """Free every cached tensor (the generation's books stay for ``stats``)."""
        self.released_bytes = self.cached_bytes()
        self.branches = {}

    def begin_call(self, step: int, branch: Hashable, leader: bool, local: Any = None,
                   check: Callable | None = None) -> Call:
        if leader:
            self._decisions = {}   # a new step: the leader decides afresh
        call = Call(step, self.num_steps, branch, leader, self.branch(branch), self._decisions,
                    np.zeros(self.num_columns, dtype=bool), local, check, np.zeros(self.num_columns, dtype=bool), self)
        self.calls.append(call)
        return call

    def branch(self, key: Hashable) -> BranchState:
        state = self.branches.get(key)
        if state is None:
            admit = self._admit
            on_store = (lambda payload: admit(key, payload, len(self.branches))) if admit is not None else None
            state = self.branches[key] = BranchState(on_store=on_store, storage=self._storage)
        return state
