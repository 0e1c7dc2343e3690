"""Other libraries' caches ("anchors") behind one small interface, for ``eval/bench_compare.py``.

An anchor is one setting of one method: ``install(target, steps)`` on a pipeline (or its
transformer), ``reset()`` before each generation, ``remove()`` after. Where a method cannot run on
a model, ``install`` raises ``AnchorUnavailable`` with one line saying why, before touching it.

Families:
- diffusers hooks (``diffusers.hooks.apply_*``): FirstBlockCache, MagCache (ratios calibrated on the
  same model and step count through its own calibration mode), TaylorSeer, PyramidAttentionBroadcast,
  FasterCache. They are applied with the hook functions, not ``transformer.enable_cache``, because
  ``DiTTransformer2DModel`` has no ``CacheMixin``; for such a model (whose pipeline sets no
  ``cache_context``) the anchor sets one context itself for as long as it is installed.
- cache-dit (optional import): DBCache over Fn / Bn / threshold, with or without its TaylorSeer
  calibrator, on the bare transformer (``cache_dit.enable_cache(transformer, ...)``).

Nothing here decides *how much* an anchor saves: the bench counts the Linear multiply-adds inside
the blocks (``macs.py``) for every row alike.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..adapters import find_model, resolve

__all__ = ["Anchor", "AnchorUnavailable", "DIFFUSERS_GRID", "CACHE_DIT_GRID", "default_anchors",
           "calibrate_mag_ratios", "block_modules", "library_versions"]


class AnchorUnavailable(RuntimeError):
    """This anchor cannot run on this model; the message says why in one line."""


def block_modules(target: Any) -> list[nn.Module]:
    """The transformer blocks of a pipeline or model, as cachekit's adapters find them."""
    return [m for _, m, _ in resolve(target).blocks]


def _block_paths(transformer: nn.Module, target: Any) -> list[str]:
    return list(resolve(target).layout.block_lists)


def library_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for pkg in ("diffusers", "cache-dit"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _sets_own_context(transformer: nn.Module) -> bool:
    """diffusers pipelines call ``transformer.cache_context(...)`` only for models with CacheMixin."""
    return callable(getattr(transformer, "cache_context", None))


def _batched_cfg(transformer: nn.Module) -> bool:
    # Our reference pipelines: DiT batches [cond, uncond] in one forward; Wan makes two forwards.
    return not _sets_own_context(transformer)


@dataclass
class Anchor:
    """One setting of one other library's cache.

    Attributes:
        family: "diffusers" or "cache-dit".
        method: e.g. "FirstBlockCache".
        params: the knob values, as shown in reports.
    """

    family: str
    method: str
    params: dict
    _transformer: nn.Module | None = field(default=None, repr=False)
    _snapshot: dict = field(default_factory=dict, repr=False)
    _handles: list = field(default_factory=list, repr=False)
    _t: list = field(default_factory=lambda: [1000.0], repr=False)

    # -- the interface ------------------------------------------------------------------------
    def install(self, target: Any, steps: int) -> None:
        transformer, _ = find_model(target)
        self._check(transformer, target, steps)          # raises AnchorUnavailable, touches nothing
        self._transformer = transformer
        self._snapshot = {id(m): ("forward" in m.__dict__, "_diffusers_hook" in m.__dict__)
                          for m in transformer.modules()}
        self._root_keys = (set(transformer.__dict__), set(transformer._modules))
        # the current timestep, for the methods that gate on it (PAB, FasterCache)
        self._handles.append(transformer.register_forward_pre_hook(self._record_timestep, with_kwargs=True))
        self._apply(transformer, target, steps)
        if "_diffusers_hook" in transformer.__dict__:
            # a cache_context entered before install cached the list of hooked children: refresh it
            transformer._diffusers_hook.invalidate_child_registries_cache()

    def reset(self) -> None:
        from diffusers.hooks import HookRegistry

        HookRegistry.check_if_exists_or_initialize(self._transformer).reset_stateful_hooks(recurse=True)
        self._set_fixed_context(self._transformer)     # StateManager.reset also clears the context

    def remove(self) -> None:
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import _set_cache_context

        tr = self._transformer
        if tr is None:
            return
        try:
            if not _sets_own_context(tr):
                _set_cache_context(tr, None)
            registry = HookRegistry.check_if_exists_or_initialize(tr)
            for name in self._hook_names():
                registry.remove_hook(name, recurse=True)
            registry.invalidate_child_registries_cache()
        finally:
            self._release(tr)

    def _release(self, tr: nn.Module) -> None:
        """Our own pre-hooks off, every attribute the library added deleted, nothing held."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._forget_added_attributes(tr)
        self._transformer = None

    @property
    def label(self) -> str:
        return f"{self.method} " + ", ".join(f"{k}={v}" for k, v in self.params.items())

    # -- per method ---------------------------------------------------------------------------
    def _check(self, transformer: nn.Module, target: Any, steps: int) -> None:
        return None

    def _apply(self, transformer: nn.Module, target: Any, steps: int) -> None:
        raise NotImplementedError

    def _hook_names(self) -> list[str]:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    def _record_timestep(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if isinstance(t, torch.Tensor):
            self._t[0] = float(t.flatten()[0])
        elif t is not None:
            self._t[0] = float(t)

    def _timestep(self) -> float:
        return self._t[0]

    def _set_fixed_context(self, transformer: nn.Module) -> None:
        """For a model whose pipeline sets no cache_context: one context, kept while installed
        (one batched-CFG forward per step, so one branch state is right)."""
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        if not _sets_own_context(transformer):
            HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
            _set_cache_context(transformer, CacheContext("batched_cfg"))

    def _forget_added_attributes(self, root: nn.Module) -> None:
        """diffusers leaves an empty ``_diffusers_hook`` registry and an instance ``forward`` on every
        module it hooked; cache-dit's DiT patch functor leaves a patched ``forward``, ``_is_patched`` and
        a second name ``_norm1_emb`` for block 0's embedding on the transformer. Delete what was added,
        so nothing is left behind."""
        attrs, mods = getattr(self, "_root_keys", (None, None))
        if attrs is not None:
            for k in set(root._modules) - mods:
                del root._modules[k]
            for k in set(root.__dict__) - attrs - {"_diffusers_hook"}:
                del root.__dict__[k]
        for m in root.modules():
            had_forward, had_registry = self._snapshot.get(id(m), (False, False))
            reg = m.__dict__.get("_diffusers_hook")
            if not had_registry and reg is not None and not reg.hooks:
                del m._diffusers_hook
                if not had_forward and "forward" in m.__dict__:
                    del m.forward
        self._snapshot = {}


# ------------------------------------------------------------------------------------------------
# diffusers hooks
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# cache-dit
# ------------------------------------------------------------------------------------------------
class DBCacheAnchor(Anchor):
    """cache-dit DBCache. ``params``: Fn, Bn, threshold, taylorseer (order, 0 = off), warmup
    (max_warmup_steps, cache-dit's default 8)."""

    def _configs(self, steps):
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

        cache = DBCacheConfig(Fn_compute_blocks=self.params["Fn"], Bn_compute_blocks=self.params["Bn"],
                              residual_diff_threshold=self.params["threshold"], num_inference_steps=steps,
                              max_warmup_steps=self.params.get("warmup", 8))
        order = self.params.get("taylorseer", 0)
        cal = TaylorSeerCalibratorConfig(taylorseer_order=order) if order else None
        return cache, cal

    def _check(self, transformer, target, steps):
        try:
            import cache_dit  # noqa: F401
            from cache_dit.caching.block_adapters import BlockAdapterRegister
        except ImportError as e:
            raise AnchorUnavailable(f"cache-dit is not installed (pip install 'cachekit[anchors]'): {e}") from None
        if not BlockAdapterRegister.is_supported(transformer):
            raise AnchorUnavailable(f"cache-dit has no BlockAdapter for {type(transformer).__name__}")
        n = len(block_modules(target))
        if self.params["Fn"] + self.params["Bn"] >= n:
            raise AnchorUnavailable(f"Fn + Bn = {self.params['Fn'] + self.params['Bn']} covers all {n} blocks")

    def _apply(self, transformer, target, steps):
        import cache_dit

        self._steps = steps
        cache, cal = self._configs(steps)
        quiet = logging.getLogger("cache_dit")
        old = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            cache_dit.enable_cache(transformer, cache_config=cache, calibrator_config=cal)
        finally:
            quiet.setLevel(old)

    def reset(self) -> None:
        import cache_dit

        cache, cal = self._configs(self._steps)
        kw = {"cache_config": cache} | ({"calibrator_config": cal} if cal is not None else {})
        cache_dit.refresh_context(self._transformer, **kw)

    def remove(self) -> None:
        import cache_dit

        tr = self._transformer
        if tr is None:
            return
        try:
            cache_dit.disable_cache(tr)
        finally:
            self._release(tr)


# ------------------------------------------------------------------------------------------------
# grids
# ------------------------------------------------------------------------------------------------
#: method -> (anchor class, list of knob settings). Edit to widen a sweep.
DIFFUSERS_GRID: dict[str, tuple[type[Anchor], list[dict]]] = {
    "FirstBlockCache": (FirstBlockCacheAnchor, [{"threshold": t} for t in (0.05, 0.1, 0.2)]),
    "MagCache": (MagCacheAnchor, [{"threshold": t, "max_skip_steps": 3} for t in (0.06, 0.12, 0.24)]),
    "TaylorSeer": (TaylorSeerAnchor, [{"cache_interval": n, "max_order": 1, "warmup": 3, "identifiers": "attn+ffn"}
                                      for n in (2, 3, 5)] +
                   [{"cache_interval": 3, "max_order": 1, "warmup": 3, "identifiers": "default"}]),
    "PyramidAttentionBroadcast": (PyramidAttentionBroadcastAnchor, [{"skip_range": n} for n in (2, 3)]),
    "FasterCache": (FasterCacheAnchor, [{"uncond_skip_range": n, "attn_skip_range": 2} for n in (2, 5)]),
}
CACHE_DIT_GRID: dict[str, tuple[type[Anchor], list[dict]]] = {
    "DBCache": (DBCacheAnchor, [{"Fn": f, "Bn": b, "threshold": t, "taylorseer": 0}
                                for f, b, t in ((1, 0, 0.08), (1, 0, 0.16), (1, 0, 0.32), (2, 1, 0.16))]),
    "DBCache+TaylorSeer": (DBCacheAnchor, [{"Fn": 1, "Bn": 0, "threshold": t, "taylorseer": 1}
                                           for t in (0.16, 0.32)]),
}


def default_anchors(mag_ratios: list[float] | None = None, methods: set[str] | None = None) -> list[Anchor]:
    """One ``Anchor`` per setting of every grid above (``methods``: keep only these)."""
    out: list[Anchor] = []
    for family, grid in (("diffusers", DIFFUSERS_GRID), ("cache-dit", CACHE_DIT_GRID)):
        for method, (cls, settings) in grid.items():
            if methods is not None and method not in methods:
                continue
            for p in settings:
                a = cls(family, method, copy.deepcopy(p))
                if isinstance(a, MagCacheAnchor):
                    a.mag_ratios = mag_ratios
                out.append(a)
    return out
