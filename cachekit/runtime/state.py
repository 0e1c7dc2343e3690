"""Per-generation state: which denoising step and CFG branch a model call belongs to, what is cached.

A *generation* is one denoising loop (one pipeline call, one action prediction). A *step* is one
denoising step, which may take several model calls (separate cond/uncond passes). Nothing here is
global: each applied target owns one ``Generation`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np
import torch


@dataclass
class BranchState:
    """What one CFG branch keeps between steps: per segment the cached residual streams (or, for
    sub-block methods, per unit the input-shape key and cached output), and the method's scratch."""

    residuals: dict[int, dict[str, torch.Tensor | None] | None] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    block_keys: dict[int, tuple] = field(default_factory=dict)  # additive blocks: input shapes of their last run
    # forecasting: per segment / unit, (step, cached payload) of the last computed steps, newest
    # first; the newest entry is the same object as ``residuals[k]`` (no extra memory at depth 1)
    history: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)

    def remember(self, k: int, step: int, payload: Any, depth: int) -> None:
        """Push the payload computed at ``step`` for segment/unit ``k``, keeping ``depth`` entries."""
        if payload is None:
            self.history[k] = []
            return
        old = [e for e in self.history.get(k, ()) if e[0] != step]
        self.history[k] = [(step, payload), *old][:depth]

    def cached_bytes(self) -> int:
        """Bytes held by the cached tensors of this branch. Every cached payload, the newest
        (``residuals[k]``) included, is in ``history``; each tensor is counted once."""
        seen = {id(t): t.numel() * t.element_size()
                for entries in self.history.values() for _, payload in entries for t in _tensors(payload)}
        return sum(seen.values())


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
    """One model forward inside a generation."""

    step: int
    branch: Hashable
    leader: bool
    computed: np.ndarray  # bool per block, filled as blocks run
    seg_compute: dict[int, bool] = field(default_factory=dict)
    seg_inputs: dict[int, dict] = field(default_factory=dict)
    seg_ctx: dict[int, Any] = field(default_factory=dict)
    unit_decisions: dict[int, bool] = field(default_factory=dict)  # made by a block hook for its units


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class Generation:
    """Step/branch bookkeeping and cache of one denoising loop.

    Steps are counted from the model's timestep argument: a call with a new timestep starts a new
    step; a call with the same timestep is another CFG branch of the same step. Diffusers'
    ``cache_context("cond"/"uncond")`` names the branch when the pipeline sets it.
    """

    def __init__(self, num_blocks: int, num_steps: int | None = None) -> None:
        self.num_blocks = num_blocks
        self.num_steps = num_steps
        self.step = -1
        self.last_t: float | None = None
        self.direction = 0  # +1 / -1 once two distinct timesteps were seen
        self.keys_in_step: list[Hashable] = []
        self.branches: dict[Hashable, BranchState] = {}
        self.decisions: dict[int, bool] = {}  # leader's decision per segment, current step
        self.calls: list[Call] = []
        self.failed = False  # an exception escaped a forward: the next call starts afresh

    def _is_new_step(self, t: float | None, context: Hashable | None) -> bool:
        return (
            self.step < 0
            or (t is None and context is None)
            or (t is not None and t != self.last_t)
            or (context is not None and context in self.keys_in_step)
        )

    def starts_new_generation(self, t: float | None, context: Hashable | None) -> bool:
        """Would a call with timestep ``t`` begin another denoising loop? True when a forward
        failed, when all ``num_steps`` steps were done, or when the timestep moves against this
        loop's direction (DDPM counts 999 -> 0, flow matching 1 -> 0, some codes 0 -> 1)."""
        if self.failed:
            return True
        if self.step < 0 or not self._is_new_step(t, context):
            return False
        if self.num_steps is not None and self.step + 1 >= self.num_steps:
            return True
        return (t is not None and self.last_t is not None and self.direction != 0
                and _sign(t - self.last_t) != self.direction)

    def begin_call(self, t: float | None, context: Hashable | None) -> Call:
        if self._is_new_step(t, context):
            if t is not None and self.last_t is not None and not self.direction:
                self.direction = _sign(t - self.last_t)
            self.step += 1
            self.keys_in_step = []
            self.decisions = {}
        branch = context if context is not None else len(self.keys_in_step)
        call = Call(self.step, branch, leader=not self.keys_in_step,
                    computed=np.zeros(self.num_blocks, dtype=bool))
        self.keys_in_step.append(branch)
        self.last_t = t
        self.calls.append(call)
        return call

    def branch(self, key: Hashable) -> BranchState:
        return self.branches.setdefault(key, BranchState())


@dataclass(frozen=True)
class CacheStats:
    """What the last generation did.

    Attributes:
        computed_fraction: block evaluations run / block evaluations of an uncached run; its
            inverse is the ideal speedup of the block stack.
        plan: bool array (model calls x blocks), True where a block was computed.
        steps: denoising step of each model call.
        branches: CFG branch of each model call.
        num_steps: steps of the generation when known.
        block_names: dotted name of each block, the plan's columns.
        cached_bytes: memory held by the cache at the end of the generation, all CFG branches
            (with forecasting: every cached step kept for the forecast).
    """

    computed_fraction: float
    plan: np.ndarray
    steps: np.ndarray
    branches: tuple
    num_steps: int | None
    block_names: tuple[str, ...]
    cached_bytes: int = 0

    @property
    def num_calls(self) -> int:
        return int(self.plan.shape[0])

    @classmethod
    def from_generation(cls, gen: Generation | None, block_names: tuple[str, ...]) -> "CacheStats":
        calls = gen.calls if gen is not None else []
        plan = (np.stack([c.computed for c in calls]) if calls
                else np.zeros((0, len(block_names)), dtype=bool))
        return cls(
            computed_fraction=float(plan.mean()) if plan.size else 1.0,
            plan=plan,
            steps=np.array([c.step for c in calls], dtype=np.int64),
            branches=tuple(c.branch for c in calls),
            num_steps=gen.num_steps if gen is not None else None,
            block_names=block_names,
            cached_bytes=sum(b.cached_bytes() for b in gen.branches.values()) if gen is not None else 0,
        )
