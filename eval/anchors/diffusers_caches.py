"""diffusers' own caches as anchors: FirstBlockCache, MagCache (ratios from its calibration mode),
TaylorSeer, PyramidAttentionBroadcast, FasterCache, applied with ``diffusers.hooks.apply_*``."""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
from typing import Any, Callable

import torch

from cachekit.adapters import find_model

from .base import Anchor, AnchorUnavailable, _batched_cfg, _block_paths, _sets_own_context, block_modules


class FirstBlockCacheAnchor(Anchor):
    def _apply(self, transformer, target, steps):
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=self.params["threshold"]))
        self._set_fixed_context(transformer)

    def _hook_names(self):
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
        return [_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK]


class MagCacheAnchor(Anchor):
    """``params``: threshold, max_skip_steps; ``mag_ratios`` from ``calibrate_mag_ratios``."""

    mag_ratios: list[float] | None = None

    def _check(self, transformer, target, steps):
        if not self.mag_ratios:
            raise AnchorUnavailable("MagCache needs mag_ratios calibrated on this model (calibrate_mag_ratios)")

    def _apply(self, transformer, target, steps):
        from diffusers.hooks import MagCacheConfig, apply_mag_cache

        apply_mag_cache(transformer, MagCacheConfig(threshold=self.params["threshold"],
                                                    max_skip_steps=self.params.get("max_skip_steps", 3),
                                                    num_inference_steps=steps, mag_ratios=list(self.mag_ratios)))
        self._set_fixed_context(transformer)

    def _hook_names(self):
        from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
        return [_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK]


class _CaptureMagRatios(logging.Handler):
    """diffusers' MagCache calibration logs ``MagCache Calibration Results: [...]`` (and prints the
    same list) at the last step of each context, then clears its state: read the log record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.runs: list[list[float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("MagCache Calibration Results:"):
            self.runs.append([float(v) for v in ast.literal_eval(msg.split(":", 1)[1].strip())])


def calibrate_mag_ratios(target: Any, steps: int, generate: Callable[[], Any]) -> list[float]:
    """Run ``generate`` once under ``MagCacheConfig(calibrate=True)`` and return the ratios, averaged
    over the contexts that ran (Wan: "cond" and "uncond"; diffusers keeps one array for both)."""
    from diffusers.hooks import HookRegistry, MagCacheConfig, apply_mag_cache

    transformer, _ = find_model(target)
    cal = MagCacheAnchor("diffusers", "MagCache(calibrate)", {})
    cal.mag_ratios = [1.0]
    cal._transformer = transformer
    cal._snapshot = {id(m): ("forward" in m.__dict__, "_diffusers_hook" in m.__dict__) for m in transformer.modules()}
    log = logging.getLogger("diffusers.hooks.mag_cache")
    handler, old_level = _CaptureMagRatios(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        apply_mag_cache(transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps))
        # Without this, a cache_context entered before (any earlier generation) left the root's
        # child-registry list stale, the pipeline's "cond"/"uncond" never reach the hooks, both
        # branches share one state and the ratios alternate cond/uncond (seen on Wan: two 50-long
        # lists per 50-step run, even/odd entries ~0.997 vs ~0.98). enable_cache does the same.
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
        cal._set_fixed_context(transformer)
        cal.reset()
        with contextlib.redirect_stdout(io.StringIO()):   # it also prints the list
            generate()
        from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK

        head = block_modules(target)[0]._diffusers_hook.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK)
        contexts = set(head.state_manager._state_cache)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        cal.remove()
    if _sets_own_context(transformer) and "inference" in contexts:
        raise AnchorUnavailable(f"MagCache calibration ran in contexts {sorted(contexts)}: the pipeline's "
                                "cond/uncond contexts did not reach the hooks")
    if not handler.runs:
        raise AnchorUnavailable("MagCache calibration logged no ratios (fewer forwards than num_inference_steps?)")
    n = min(len(r) for r in handler.runs)
    return [sum(r[i] for r in handler.runs) / len(handler.runs) for i in range(n)]


def _attn_ffn_patterns(paths: list[str]) -> list[str]:
    # attention (attn, attn1, attn2) and feed-forward (ff, ffn) modules directly inside each block
    return [rf"{re.escape(p)}\.\d+\.(attn\d*|ff|ffn)" for p in paths]


class TaylorSeerAnchor(Anchor):
    """``params``: cache_interval, max_order, warmup (disable_cache_before_step), identifiers
    ("default": diffusers' own patterns; "attn+ffn": every block's attention and FFN modules)."""

    def _config(self, target):
        from diffusers.hooks import TaylorSeerCacheConfig

        ids = None
        if self.params.get("identifiers", "attn+ffn") == "attn+ffn":
            ids = _attn_ffn_patterns(_block_paths(None, target))
        return TaylorSeerCacheConfig(cache_interval=self.params["cache_interval"],
                                     disable_cache_before_step=self.params.get("warmup", 3),
                                     max_order=self.params.get("max_order", 1),
                                     taylor_factors_dtype=torch.float32, cache_identifiers=ids)

    def _check(self, transformer, target, steps):
        from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

        cfg = self._config(target)
        pats = cfg.cache_identifiers or list(_TRANSFORMER_BLOCK_IDENTIFIERS)
        if not any(any(re.fullmatch(p, n) for p in pats) for n, _ in transformer.named_modules()):
            attn = [n for n, _ in transformer.named_modules() if re.search(r"attn\d*$", n)][:2]
            raise AnchorUnavailable(
                f"TaylorSeer hooks nothing: its patterns {tuple(pats)} are matched with re.fullmatch, so they "
                f"need names ending in 'attn', and this model's are named {', '.join(attn)}, ... (fraction 1.00)")

    def _apply(self, transformer, target, steps):
        from diffusers.hooks import apply_taylorseer_cache

        apply_taylorseer_cache(transformer, self._config(target))
        self._set_fixed_context(transformer)

    def _hook_names(self):
        from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK
        return [_TAYLORSEER_CACHE_HOOK]


class PyramidAttentionBroadcastAnchor(Anchor):
    """``params``: skip_range (self-attention; cross-attention too where the model has it)."""

    def _apply(self, transformer, target, steps):
        from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

        n = self.params["skip_range"]
        has_cross = any(getattr(m, "is_cross_attention", False) for m in transformer.modules())
        apply_pyramid_attention_broadcast(transformer, PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=n, cross_attention_block_skip_range=n if has_cross else None,
            current_timestep_callback=self._timestep))

    def _hook_names(self):
        from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK
        return [_PYRAMID_ATTENTION_BROADCAST_HOOK]


class FasterCacheAnchor(Anchor):
    """``params``: uncond_skip_range (CFG cache), attn_skip_range (attention reuse)."""

    def _check(self, transformer, target, steps):
        if not _batched_cfg(transformer):
            raise AnchorUnavailable(
                "FasterCache's CFG cache splits one forward's batch into [uncond, cond] halves; this pipeline runs "
                "cond and uncond as separate forwards, and its attention hooks keep one state for both branches")

    def _apply(self, transformer, target, steps):
        from diffusers.hooks import FasterCacheConfig, apply_faster_cache
        from diffusers.hooks.faster_cache import _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS

        five_d = "Wan" in type(transformer).__name__ or "3D" in type(transformer).__name__
        apply_faster_cache(transformer, FasterCacheConfig(
            spatial_attention_block_skip_range=self.params.get("attn_skip_range", 2),
            unconditional_batch_skip_range=self.params["uncond_skip_range"],
            tensor_format="BCFHW" if five_d else "BCHW", current_timestep_callback=self._timestep,
            attention_weight_callback=lambda _: 0.5,
            # DiT's class labels are batched [cond, uncond] like the latents: split them too
            _unconditional_conditional_input_kwargs_identifiers=[*_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
                                                                 "class_labels"]))

    def _hook_names(self):
        from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK
        return [_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK]
