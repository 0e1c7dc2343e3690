"""What ``cachekit.record`` keeps of full-compute runs: the input of every offline planner.

A recording holds, for each generation, CFG branch, column and step, a fixed random subset of the
recorded tensor's elements (the same subset at every step, so steps can be compared):

- ``level="units"``: every sub-block unit's output (BAC's plans; ``planning.bac``),
- ``level="stack"``: the block stack's residual, output - input (ERTACache's profile and fits;
  ``planning.ertacache``).

Memory stays small: a 100-step run of the policy model keeps 100 x 4096 floats per unit and
branch. The recorders are cache methods that always compute (so the run is the uncached one, bit
for bit) and observe what ran; they are not registered as methods and no config selects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np
import torch

from .methods.base import CacheMethod, SegmentContext, SegmentOutput, StepContext

LEVELS = ("units", "stack")
#: elements kept per recorded tensor: one tensor per unit at "units", one per step at "stack"
DEFAULT_FEATURES = {"units": 4096, "stack": 16384}

__all__ = ["Recording", "LEVELS", "DEFAULT_FEATURES"]


@dataclass
class Recording:
    """Subsampled tensors of full-compute runs.

    Attributes:
        level: "units" or "stack".
        columns: unit names ("decoder.layers.0.self_attn", ...), or ("stack",).
        kinds, layers: per unit, its kind ("self_attn", "ffn", ...) and block index (units only).
        runs: per generation, branch -> column index -> step -> features (float32 numpy).
        leaders: per generation, the branch of its first call (the one whose decisions others copy).
        fingerprint: ``adapters.model_fingerprint`` of the recorded model.
        channels: column index -> the channel (last dimension) of each recorded element, for
            per-channel fits (``planning.cachequant``); empty for hand-made recordings.
        outputs: what each run returned, when a tensor (on the CPU; else None).
        memo: values planners derive from the recording, kept to share them between plans.

    Example:
        >>> import numpy as np
        >>> from cachekit import Recording
        >>> steps = {t: np.full(8, t, dtype=np.float32) for t in range(3)}    # step -> features
        >>> rec = Recording("stack", ("stack",), (), (), runs=[{"cond": {0: steps}, "uncond": {0: steps}}],
        ...                 leaders=["cond"], fingerprint="")
        >>> rec.num_steps, rec.features(0, run=0).shape        # the leader branch of generation 0
        (3, (3, 8))
        >>> len(rec.arrays()), rec.run_ids()                   # one array per generation and branch
        (2, [0, 0])
    """

    level: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    runs: list[dict[Hashable, dict[int, dict[int, np.ndarray]]]]
    leaders: list[Hashable]
    fingerprint: str
    channels: dict = field(default_factory=dict, repr=False, compare=False)
    outputs: list = field(default_factory=list, repr=False, compare=False)
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_steps(self) -> int:
        counts = {len(steps) for run in self.runs for cols in run.values() for steps in cols.values()}
        if len(counts) != 1:
            raise ValueError(f"calibration runs have different step counts {sorted(counts)}; use one --steps")
        return counts.pop()

    def features(self, column: int, run: int, branch: Hashable | None = None) -> np.ndarray:
        """(steps, features) of one column in one generation; ``branch`` None = its leader."""
        steps = self.runs[run][self.leaders[run] if branch is None else branch][column]
        return np.stack([steps[t] for t in sorted(steps)])

    def run_ids(self) -> list[int]:
        """The generation of each entry of ``arrays()`` (its CFG branches share one id): the
        groups a planner holds out together when it cross-validates a fit."""
        return [r for r, run in enumerate(self.runs) for _ in run]

    def arrays(self, column: int = 0) -> list[np.ndarray]:
        """(steps, features) of one column for every generation and branch."""
        self.num_steps  # noqa: B018 - raises when step counts differ
        return [self.features(column, r, b) for r, run in enumerate(self.runs) for b in run]


def subsample(x: torch.Tensor, index: dict, key: Any, seed: int, max_features: int) -> np.ndarray:
    """A fixed random subset of at most ``max_features`` elements of x (the same subset for the same
    key at every step), as float32 numpy."""
    flat = x.detach().reshape(-1)
    idx = index.get(key)
    if idx is None or idx.numel() > flat.numel() or int(idx.max()) >= flat.numel():
        g = torch.Generator().manual_seed(seed)
        n = min(max_features, flat.numel())
        idx = index[key] = torch.randperm(flat.numel(), generator=g)[:n].to(flat.device)
    return flat[idx].float().cpu().numpy()


class Recorder(CacheMethod):
    """Computes everything and records what ran (``cachekit.record``); not a registered method."""

    def __init__(self, level: str, max_features: int, seed: int) -> None:
        super().__init__(None)
        self.granularity = "unit" if level == "units" else "block"
        self.max_features, self.seed = max_features, seed
        self.runs: list[dict[Hashable, dict[int, dict[int, np.ndarray]]]] = []
        self.leaders: list[Hashable] = []
        self._index: dict[Any, torch.Tensor] = {}
        self.channels: dict[Any, np.ndarray] = {}
        self.outputs: list[torch.Tensor | None] = []

    def keep_output(self, out: Any) -> None:
        """A run's result, kept when a tensor: what a plan's own runs are judged against (cachequant)."""
        self.outputs.append(out.detach().cpu() if isinstance(out, torch.Tensor) else None)

    @property
    def history_depth(self) -> int:
        return 1

    def decide(self, ctx: StepContext) -> bool:
        return True

    def _keep(self, ctx: StepContext, x: torch.Tensor, key: int, seed: int) -> None:
        if ctx.step == 0 and ctx.leader and ctx.index == 0:   # the first call of a generation
            self.runs.append({})
            self.leaders.append(ctx.branch)
        if not self.runs:
            return   # joined mid-generation (nothing recorded before step 0)
        drawn = self._index.get(key)
        feats = subsample(x, self._index, key, seed, self.max_features)
        if x.dim() and self._index[key] is not drawn:   # a new element subset (first step, new shape)
            self.channels[key] = (self._index[key] % x.shape[-1]).cpu().numpy()
        self.runs[-1].setdefault(ctx.branch, {}).setdefault(key, {})[ctx.step] = feats

    def observe_unit(self, ctx: StepContext, output: Any) -> None:
        x = output[0] if isinstance(output, tuple) else output
        self._keep(ctx, x, ctx.index, self.seed + ctx.index)

    def observe(self, ctx: SegmentContext, computed: SegmentOutput) -> None:
        main = ctx.main_stream
        r = (computed.residuals or {}).get(main)
        if r is None:
            r = computed.outputs[main] - ctx.inputs[main]
        self._keep(ctx, r, 0, self.seed)
