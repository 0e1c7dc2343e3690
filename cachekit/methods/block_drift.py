"""Per-block-range runtime drift tests (the FBCache / DBCache family), decided per step and per range.

The stack is cut into a probe ``[0, fn)`` that always runs, ``splits`` middle ranges that may be
reused, and a tail ``[N - bn, N)`` that always runs. After the probe at step t, its residual r_t
(probe output - probe input) is compared with the probe residual r_ref(k) of the last step at which
middle range k was computed: drift_k = mean|r_t - r_ref(k)| / mean|r_ref(k)|. Range k is reused
while drift_k < threshold_k, for at most ``max_reuse`` steps in a row. One probe serves every range;
per-range thresholds let the deep ranges (which the paper's measurements and ours find move least
late in sampling) reuse more than the shallow ones.

Beyond the anchors: with ``predict > 0`` the probe itself is skipped on steps where EasyCache's
transformation-rate estimate (arXiv 2507.02860, computed from the stack input alone) says that the
stack output has moved less than ``predict`` since the last full compute; then every range but the
tail is reused. cache-dit's defaults for FLUX are fn=8, bn=0, threshold 0.08, 8 warm-up steps;
thresholds do not carry across models.

Host syncs: the drift statistics stay on the device until the first middle range decides, which
reads all of them in one ``tolist`` (one sync per step); ``predict`` adds one more on the steps that
run the probe. The probe's residual and its drift against the first middle range's reference come
from one pass over the probe's output and input (``residual_reference``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import CacheConfig, ConfigError, register_method, spec
from ..kernels import drift_stats
from .base import CacheMethod, ScratchTensors, SegmentContext, SegmentOutput, Segments
from .easycache import easycache_compute, transformation_rate


def relative_drift(abs_diff: float, ref_scale: float) -> float:
    """mean|r - r_ref| / mean|r_ref|; inf for a zero reference that moved, 0 when nothing moved."""
    if ref_scale == 0.0:
        return 0.0 if abs_diff == 0.0 else float("inf")
    return abs_diff / ref_scale


def block_drift_compute(step: int, num_steps: int | None, *, drift: float | None, threshold: float,
                        consecutive: int, max_reuse: int, warmup: int, final_steps: int) -> bool:
    """Pure decision rule for one middle range: recompute it at this step?

    Args:
        drift: the probe's relative drift against this range's reference, None when unknown.
        consecutive: reuses of this range in a row just before this step.
        max_reuse: cap on ``consecutive`` (0 = no cap).
    """
    if step < warmup or (num_steps is not None and step >= num_steps - final_steps):
        return True
    if drift is None or threshold <= 0.0:
        return True
    if max_reuse and consecutive >= max_reuse:
        return True
    return not drift < threshold


def split_ranges(num_blocks: int, fn: int, bn: int, parts: int) -> Segments:
    """Probe, ``parts`` middle ranges of near-equal size (the first ones one block longer), tail."""
    middle = num_blocks - fn - bn
    if fn < 1 or middle < parts:
        raise ConfigError(f"BlockDriftConfig: fn={fn}, bn={bn} and {parts} middle range(s) need more than the "
                          f"model's {num_blocks} blocks")
    segs, pos = [(0, fn)], fn
    for k in range(parts):
        size = middle // parts + (k < middle % parts)
        segs.append((pos, pos + size))
        pos += size
    if bn:
        segs.append((pos, num_blocks))
    return tuple(segs)


@dataclass(frozen=True)
class BlockDriftConfig(CacheConfig):
    """Reuse middle block ranges while the first blocks' residual has not drifted.

    Args:
        fn: first blocks, always computed: the probe whose residual drift is measured.
        bn: last blocks, always computed (they correct the reused ranges' error).
        threshold: relative L1 drift of the probe residual under which a middle range is reused;
            0 = never reuse (bit-exact no-op). cache-dit default 0.08.
        thresholds: one threshold per middle range (overrides ``threshold`` and ``splits``), e.g.
            (0.05, 0.1) to reuse the deeper half more.
        splits: middle ranges of near-equal size, each decided on its own.
        warmup: first steps always computed.
        final_steps: last steps always computed.
        max_reuse: reuses of a range in a row before it is recomputed anyway; 0 = no cap.
        predict: when > 0, skip the probe too while EasyCache's predicted change of the stack
            output since the last full compute stays under this value; 0 = probe every step.

    Example:
        >>> import cachekit
        >>> cachekit.BlockDriftConfig(fn=-1)
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: BlockDriftConfig.fn must be int >= 1, got -1
    """

    method = "block_drift"
    fn: int = spec(1, lo=1, help="first blocks always computed (the probe)")
    bn: int = spec(0, lo=0, help="last blocks always computed")
    threshold: float = spec(0.08, lo=0.0, help="probe drift under which middle ranges are reused")
    thresholds: tuple = spec((), help="per-middle-range thresholds")
    splits: int = spec(1, lo=1, help="middle ranges decided separately")
    warmup: int = spec(2, lo=1, help="first steps always computed")
    final_steps: int = spec(1, lo=0, help="last steps always computed")
    max_reuse: int = spec(0, lo=0, help="consecutive reuses allowed (0 = any)")
    predict: float = spec(0.0, lo=0.0, help="skip the probe under this predicted change (0 = never)")

    def check(self) -> None:
        raw = self.thresholds
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = (raw,)
        if not isinstance(raw, (tuple, list)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in raw):
            raise ConfigError(f"BlockDriftConfig.thresholds must be a list of numbers >= 0, got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(float(v) for v in raw))

    @property
    def range_thresholds(self) -> tuple[float, ...]:
        return self.thresholds or (self.threshold,) * self.splits

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["settings"]["thresholds"] = list(self.thresholds)
        return d


@register_method(BlockDriftConfig)
class BlockDrift(CacheMethod):
    def segments(self, num_blocks: int) -> Segments:
        c = self.config
        segs = split_ranges(num_blocks, c.fn, c.bn, len(c.range_thresholds))
        self._middle = range(1, 1 + len(c.range_thresholds))
        return segs

    def scratch_tensors(self) -> tuple[ScratchTensors, ...]:
        # at most one probe residual per middle range (dropped once the last step computed all);
        # with predict, EasyCache's rule on the stack input keeps its last full input and output
        out = (ScratchTensors("BlockDrift: probe residual references", len(self.config.range_thresholds), False),)
        if self.config.predict > 0:
            out += (ScratchTensors("BlockDrift predict: last full input and output", 2),
                    ScratchTensors("BlockDrift predict: newest input", 1, held_at_end=False))
        return out

    def _forced(self, ctx: SegmentContext) -> bool:
        c = self.config
        return ctx.step < c.warmup or (ctx.num_steps is not None and ctx.step >= ctx.num_steps - c.final_steps)

    def decide(self, ctx: SegmentContext) -> bool:  # type: ignore[override]  # block path: always a SegmentContext
        st, seg = ctx.state, ctx.index
        if seg == 0:
            st["skip_all"] = False
            if self.config.predict > 0.0:
                st["skip_all"] = not self._predict(ctx)
            return not st["skip_all"]
        if seg not in self._middle:
            return True  # the tail
        run = st.setdefault("run", {})
        if st["skip_all"] or self._forced(ctx):
            compute = self._forced(ctx)   # no drift read on forced steps (no host sync there)
        else:
            drift = self._drifts(ctx).get(seg)
            compute = block_drift_compute(
                ctx.step, ctx.num_steps, drift=drift, threshold=self.config.range_thresholds[seg - 1],
                consecutive=run.get(seg, 0), max_reuse=self.config.max_reuse, warmup=self.config.warmup,
                final_steps=self.config.final_steps)
        run[seg] = 0 if compute else run.get(seg, 0) + 1
        return compute

    def _drifts(self, ctx: SegmentContext) -> dict[int, float]:
        """Drift per middle range at this step, read from the device once per step."""
        st = ctx.state
        if st.get("drift_step") != ctx.step:
            pending = st.pop("pending", None)
            st["drift"] = {}
            if pending is not None and pending[0] == ctx.step:
                _, ks, stats = pending
                vals: list[Any] = ctx.read(stats)  # (d, s) pairs: the one host sync of the step (global under context parallelism)
                st["drift"] = {k: relative_drift(d, s) for k, (d, s) in zip(ks, vals)}
            st["drift_step"] = ctx.step
        return st["drift"]

    def _predict(self, ctx: SegmentContext) -> bool:
        """EasyCache's rule on the stack input: compute the probe (True) or skip the step."""
        st, x = ctx.state, ctx.inputs[ctx.main_stream]
        prev = st.get("x_prev")
        st["x_prev"], st["x_in"] = x, x
        if self._forced(ctx) or prev is None or prev.shape != x.shape or "rate_stats" not in st:
            st["E"] = 0.0
            return True
        stats = ctx.read(torch.cat([drift_stats(x, prev), st["rate_stats"]]))
        input_change, out_change, in_change, v_scale = stats[0], stats[2], stats[4], stats[5]
        compute, st["E"] = easycache_compute(
            ctx.step, ctx.num_steps, threshold=self.config.predict, warmup=0,
            rate=transformation_rate(out_change, in_change) if in_change or out_change else None,
            accumulated=st.get("E", 0.0), input_change=input_change, output_scale=v_scale)
        return compute

    def residual_reference(self, ctx: SegmentContext) -> torch.Tensor | None:
        """The probe's residual is measured against the first middle range's reference in the
        same pass as the runtime computes it (``residual_with_stats``); other ranges' below."""
        if ctx.index != 0 or not ctx.leader:
            return None
        refs = ctx.state.get("ref", {})
        return next((refs[k] for k in self._middle if k in refs), None)

    def observe(self, ctx: SegmentContext, computed: SegmentOutput) -> None:
        if not ctx.leader:
            return  # followers copy the leader's decisions
        st, seg, main = ctx.state, ctx.index, ctx.main_stream
        if seg == 0:
            # the residual the runtime cached (no second subtraction, no second copy kept)
            r = (computed.residuals or {}).get(main)
            if r is None:
                r = computed.outputs[main] - ctx.inputs[main]
            fused = self.residual_reference(ctx)
            st["probe"] = r
            refs = st.setdefault("ref", {})
            ks = [k for k in self._middle if k in refs and refs[k].shape == r.shape]
            if ks:
                st["pending"] = (ctx.step, ks, torch.stack([
                    computed.drift if computed.drift is not None and refs[k] is fused else drift_stats(r, refs[k])
                    for k in ks]))
            return
        if seg in self._middle:
            st.setdefault("ref", {})[seg] = st["probe"]
            if seg == self._middle[-1] and self.config.predict > 0.0:
                self._observe_rate(st, computed.outputs[main])

    def _observe_rate(self, st: dict, v: torch.Tensor) -> None:
        """At a full compute: device stats for the transformation rate k = mean|dv| / mean|dx|."""
        x = st.get("x_in")
        last = st.get("full")
        if x is not None and last is not None and last[0].shape == x.shape and last[1].shape == v.shape:
            st["rate_stats"] = torch.cat([drift_stats(v, last[1]), drift_stats(x, last[0])[:1],
                                          v.abs().mean(dtype=torch.float32).reshape(1)])
        st["full"] = (x, v)
