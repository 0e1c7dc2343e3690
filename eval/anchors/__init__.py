"""Other libraries' caches as anchors for ``eval/bench_compare.py`` and ``cachekit demo``; the
interface is in ``base.py``. Import this folder as a package from ``eval/`` (the scripts there run
with it on ``sys.path``)."""

from __future__ import annotations

import copy

from .base import Anchor, AnchorUnavailable, block_modules, library_versions
from .cachedit import DBCacheAnchor
from .diffusers_caches import FasterCacheAnchor, FirstBlockCacheAnchor, MagCacheAnchor, PyramidAttentionBroadcastAnchor, TaylorSeerAnchor, calibrate_mag_ratios

__all__ = ["Anchor", "AnchorUnavailable", "DIFFUSERS_GRID", "CACHE_DIT_GRID", "default_anchors",
           "calibrate_mag_ratios", "block_modules", "library_versions"]


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
