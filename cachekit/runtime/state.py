"""Per-generation state: the model calls of one denoising loop and what each CFG branch has cached.

A *generation* is one denoising loop (one pipeline call, one action prediction). A *step* is one
denoising step, which may take several model calls (separate cond/uncond passes). Which step and
branch a call belongs to is decided in ``steps.py``; this file only keeps the books. Nothing here
is global: each applied target owns one ``Generation`` at a time.

A forecast's older history entries may be kept elsewhere than the newest: where, and how they
are moved and restored, is ``history.py`` (``HistoryStorage``, importable from here as before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import torch

from .history import DemotedEntry, HistoryStorage, StoredHistory, payload_tensors, unique_bytes
from .history import payload_bytes  # noqa: F401 - importable from here as before

__all__ = ["BranchState", "Call", "Generation", "HistoryStorage"]


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
        if self.storage is not None and not isinstance(self.history, StoredHistory):
            self.history = StoredHistory(self.history)

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
        if self.storage is not None and old and not isinstance(old[0][1], DemotedEntry):
            old[0] = (old[0][0], self.storage.demote(old[0][1]))
        self.history[k] = [(step, payload), *old]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this branch holds: cached payloads and the method's scratch (EasyCache's
        last input and output, BlockDrift's references, ...)."""
        return [t for entries in self.history.values() for _, payload in entries for t in payload_tensors(payload)] + \
            payload_tensors(self.scratch)

    def cached_bytes(self) -> int:
        """Bytes held by this branch, each tensor counted once."""
        return unique_bytes(self.tensors())


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
        return unique_bytes([t for b in self.branches.values() for t in b.tensors()])

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
