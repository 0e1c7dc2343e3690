"""Per-generation state: the model calls of one denoising loop and what each CFG branch has cached.

A *generation* is one denoising loop (one pipeline call, one action prediction). A *step* is one
denoising step, which may take several model calls (separate cond/uncond passes). Which step and
branch a call belongs to is decided in ``steps.py``; this file only keeps the books. Nothing here
is global: each applied target owns one ``Generation`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import torch


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
    """

    history: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    on_store: Callable[[Any], None] | None = field(default=None, repr=False)

    def latest(self, k: int) -> Any:
        """The newest cached payload of segment/unit ``k``, or None."""
        entries = self.history.get(k)
        return entries[0][1] if entries else None

    def remember(self, k: int, step: int, payload: Any, depth: int) -> None:
        """Push the payload computed at ``step`` for segment/unit ``k``, keeping ``depth`` entries;
        a None payload (nothing reusable) forgets ``k``."""
        if payload is None:
            self.history[k] = []
            return
        if self.on_store is not None:
            self.on_store(payload)
        old = [e for e in self.history.get(k, ()) if e[0] != step]
        self.history[k] = [(step, payload), *old][:depth]

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
                 admit: Callable[[Hashable, Any, int], None] | None = None) -> None:
        self.num_columns = num_columns
        self.num_steps = num_steps
        self.branches: dict[Hashable, BranchState] = {}
        self.calls: list[Call] = []
        self._decisions: dict[int, bool] = {}
        self._admit = admit
        self.complete = False
        self.clocked = False   # begun by a pipeline's set_timesteps: its end is known (``complete``)
        self.host_reads = self.collectives = 0   # decisions' reads of device statistics; all-reduces
        self.released_bytes: int | None = None

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
                    np.zeros(self.num_columns, dtype=bool), local, check)
        self.calls.append(call)
        return call

    def branch(self, key: Hashable) -> BranchState:
        state = self.branches.get(key)
        if state is None:
            admit = self._admit
            on_store = (lambda payload: admit(key, payload, len(self.branches))) if admit is not None else None
            state = self.branches[key] = BranchState(on_store=on_store)
        return state
