"""Other libraries' caches ("anchors") behind one small interface, for ``eval/bench_compare.py`` and
the demo's comparison column. Not part of the cachekit package: these adapters are built on other
libraries' private names (``diffusers.hooks`` internals, cache-dit's adapters) and live beside the
benchmarks. ``base.py``: the interface; ``diffusers_caches.py``, ``cachedit.py``: the families;
``__init__.py``: the grids.

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

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from cachekit.adapters import find_model, resolve

__all__ = ["Anchor", "AnchorUnavailable", "block_modules", "library_versions"]


class AnchorUnavailable(RuntimeError):
    """This anchor cannot run on this model; the message says why in one line."""


def block_modules(target: Any) -> list[nn.Module]:
    """The transformer blocks of a pipeline or model, as cachekit's adapters find them."""
    return [b.module for b in resolve(target).blocks]


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

    @contextlib.contextmanager
    def installed(self, target: Any, steps: int) -> Iterator[None]:
        """Installed for the duration of a block (a timed pass), removed even if it raises."""
        self.install(target, steps)
        try:
            yield
        finally:
            self.remove()

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
