"""The default fits: what ``cachekit.apply(pipe)`` (no config, or a ``quality=`` preset) runs when
its cache would not fit in what the device can give (or in ``max_cache_bytes``).

A pure rule of the config: the cheaper configurations to try, best first. The runtime tries them
in order, each at a generation's first stored tensor (``runtime.guards.Budget``: one unit or
segment computed in vain per refusal), says in one line what it chose and why, and ``stats``
records it (``CacheStats.chosen``). Explicit configs are never changed: they are refused.

Order (issue 28): sub-block units with their forecast, then the same with the older history in
host memory (the newest stays on the device: half the device bytes at depth 2, read back only on
forecast steps), then stack-level reuse with the forecast (one residual per segment instead of
one output per unit: Wan2.1-14B 720p x 81 frames, 40 blocks x 3 units, 120x fewer tensors), then
stack-level with host history, then stack-level plain reuse (one tensor per segment and branch).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import CacheConfig
from .runtime.history import HistoryStorage

__all__ = ["fallback_chain", "fit_by_estimate"]


def _label(config: CacheConfig, history: HistoryStorage) -> str:
    units = getattr(config, "units", False)
    forecast = getattr(config, "forecast", "none")
    what = ("sub-block units" if units else "stack-level reuse") + (f" + {forecast} forecast" if forecast != "none" else "")
    return what + (", older history in host memory" if history.where == "host" else "")


def fallback_chain(config: CacheConfig, history: HistoryStorage | None = None) -> list[tuple[str, CacheConfig, HistoryStorage]]:
    """(label, config, history) to try, best first; the first is ``config`` as given."""
    history = history or HistoryStorage()
    host = dataclasses.replace(history, where="host")
    fields = {f.name for f in dataclasses.fields(config)}
    forecasts = getattr(config, "forecast", "none") != "none"
    out: list[tuple[CacheConfig, HistoryStorage]] = [(config, history)]
    if forecasts and history.where != "host":
        out.append((config, host))
    if getattr(config, "units", False):
        stack = dataclasses.replace(config, units=False)  # type: ignore[call-arg]  # checked: it has units
        out.append((stack, history))
        if forecasts and history.where != "host":
            out.append((stack, host))
    if forecasts and "forecast" in fields:
        plain: Any = dataclasses.replace(config, forecast="none", **({"units": False} if "units" in fields else {}))
        out.append((plain, HistoryStorage()))
    seen, chain = set(), []
    for cfg, h in out:
        if (cfg, h) not in seen:
            seen.add((cfg, h))
            chain.append((_label(cfg, h), cfg, h))
    return chain


def fit_by_estimate(target: Any, config: CacheConfig, free_bytes: int, *, history: Any = None,
                    **estimate: Any) -> tuple[str, CacheConfig, HistoryStorage, Any]:
    """Before a run, nothing allocated: the configuration the default would run on a device that
    can give ``free_bytes`` to the cache, by ``cachekit.estimate_cache_bytes`` (``estimate``: its
    ``tokens``, ``text_tokens``, ``batch``, ``cfg``). Returns (label, config, history, estimate);
    raises ``ValueError`` when nothing in the chain fits.

    Example:
        >>> fit_by_estimate("wan2.1-14b", load_recipe("default").config, 24 * 2**30, tokens=75_600)[0]
        'stack-level reuse + taylor forecast'
    """
    from .memory import estimate_cache_bytes

    tried = []
    for label, cfg, hist in fallback_chain(config, HistoryStorage.parse(history)):
        e = estimate_cache_bytes(target, cfg, history=hist, **estimate)
        if e.device <= free_bytes:
            return label, cfg, hist, e
        tried.append(f"{label} {e.device / 1e9:.3g} GB")
    raise ValueError(f"cachekit: nothing fits in {free_bytes / 1e9:.3g} GB: {'; '.join(tried)}")
