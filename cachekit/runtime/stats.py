"""``cachekit.stats``: what a generation did, read off its books."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .state import Generation


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
        host_reads: device-to-host reads of statistics that decisions took (EasyCache: one per
            step after warm-up; step-indexed methods: none).
        collectives: all-reduces issued for them: one per read under context parallelism, else 0.
        cached_bytes: memory held at the end of the generation by its cache (with forecasting:
            every cached step kept), all CFG branches, and the method's own tensors; for a
            generation whose cache was released when it ended, what it held then.
        skipped: (call, block or unit) pairs the model itself did not run (WanAnimate2 skips a
            block in its unconditional call): neither computed nor reused, left out of the fraction.
        shape_changes: block ranges recomputed because a stream changed shape inside them while
            their cache was being filled (nothing reusable was kept; warned once per apply).
        denoisers: for a pipeline with several denoisers (Wan 2.2: ``transformer`` and
            ``transformer_2``), each one's stats by component name; the fields above then cover
            all of them (the fraction over every block evaluation of the generation; plan rows in
            step order; columns prefixed "name:" where the denoisers' columns differ). Else None.
        chosen: when the default (or a ``quality=`` preset) did not fit in memory, the cheaper
            configuration it runs instead and why; None when it runs as given.

    Example:
        >>> import torch, cachekit
        >>> layer = torch.nn.TransformerEncoderLayer(16, 2, batch_first=True)
        >>> model = cachekit.apply(torch.nn.TransformerEncoder(layer, num_layers=2), cachekit.FixedIntervalConfig())
        >>> cachekit.reset(model, num_steps=4)
        >>> outs = [model(torch.randn(1, 5, 16)) for _ in range(4)]
        >>> s = cachekit.stats(model)
        >>> s.computed_fraction, s.steps.tolist(), s.block_names
        (0.75, [0, 1, 2, 3], ('layers.0', 'layers.1'))
        >>> s.plan.tolist()      # calls x blocks: step 2 reused both blocks
        [[True, True], [True, True], [False, False], [True, True]]
    """

    computed_fraction: float
    plan: np.ndarray
    steps: np.ndarray
    branches: tuple
    num_steps: int | None
    block_names: tuple[str, ...]
    cached_bytes: int = 0
    host_reads: int = 0
    collectives: int = 0
    skipped: int = 0
    shape_changes: int = 0
    denoisers: dict[str, "CacheStats"] | None = None
    chosen: str | None = None

    @property
    def num_calls(self) -> int:
        return int(self.plan.shape[0])

    @classmethod
    def from_generation(cls, gen: Generation | None, block_names: tuple[str, ...],
                        chosen: str | None = None) -> "CacheStats":
        calls = gen.calls if gen is not None else []
        plan = (np.stack([c.computed for c in calls]) if calls
                else np.zeros((0, len(block_names)), dtype=bool))
        reused = (np.stack([c.reused if c.reused is not None else ~c.computed for c in calls]) if calls
                  else np.zeros_like(plan))
        ran = plan | reused   # a column the model skipped in a call (neither) is not counted
        return cls(
            computed_fraction=float(plan.sum() / ran.sum()) if ran.any() else 1.0,
            plan=plan,
            steps=np.array([c.step for c in calls], dtype=np.int64),
            branches=tuple(c.branch for c in calls),
            num_steps=gen.num_steps if gen is not None else None,
            block_names=block_names,
            cached_bytes=gen.cached_bytes() if gen is not None else 0,
            host_reads=gen.host_reads if gen is not None else 0,
            collectives=gen.collectives if gen is not None else 0,
            skipped=int((~ran).sum()),
            shape_changes=gen.shape_changes if gen is not None else 0,
            chosen=chosen,
        )

    @classmethod
    def combine(cls, named: dict[str, "CacheStats"]) -> "CacheStats":
        """One generation run by several denoisers: their calls in step order (stable: a step's
        calls in the order of ``named``), counts summed."""
        items = list(named.items())
        same = len({s.block_names for _, s in items}) == 1
        if same:
            names = items[0][1].block_names
        else:
            names = tuple(f"{k}:{b}" for k, s in items for b in s.block_names)
        rows, ran_total, computed_total = [], 0, 0
        offset = 0
        for order, (k, s) in enumerate(items):
            for i in range(s.num_calls):
                row = s.plan[i] if same else np.concatenate(
                    [np.zeros(offset, bool), s.plan[i], np.zeros(len(names) - offset - len(s.block_names), bool)])
                rows.append((int(s.steps[i]), order, i, row, s.branches[i]))
            ran = s.plan.size - s.skipped
            ran_total += ran
            computed_total += int(s.plan.sum())
            offset += len(s.block_names)
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return cls(
            computed_fraction=computed_total / ran_total if ran_total else 1.0,
            plan=np.stack([r[3] for r in rows]) if rows else np.zeros((0, len(names)), dtype=bool),
            steps=np.array([r[0] for r in rows], dtype=np.int64),
            branches=tuple(r[4] for r in rows),
            num_steps=max((s.num_steps for _, s in items if s.num_steps is not None), default=None),
            block_names=names,
            cached_bytes=sum(s.cached_bytes for _, s in items),
            host_reads=sum(s.host_reads for _, s in items),
            collectives=sum(s.collectives for _, s in items),
            skipped=sum(s.skipped for _, s in items),
            shape_changes=sum(s.shape_changes for _, s in items),
            denoisers=dict(named),
            chosen="; ".join(f"{k}: {s.chosen}" for k, s in items if s.chosen) or None,
        )
