"""cache-dit's DBCache (with or without its TaylorSeer calibrator) as an anchor (optional import)."""

from __future__ import annotations

import logging

from .base import Anchor, AnchorUnavailable, block_modules


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
