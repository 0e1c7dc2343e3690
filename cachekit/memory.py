"""What a cache will hold, before a run: ``estimate_cache_bytes(model, config, tokens=..., ...)``.

A pure function of what the method says it caches (``CacheMethod.memory_needs``: granularity,
segments, history depth, its own scratch tensors; this module never looks at a method's name), a
description of the model (``ModelShape``, ``adapters/shape.py``: block lists, their streams,
sub-block units per block, width, dtype), the token counts, the batch and the CFG branches. The
model may be given as an instance (a pipeline or a module: its blocks and units are found as
``apply`` finds them, no forward is run), as a diffusers config dict (``"_class_name"`` plus the
architecture keys: nothing is built), or as one of the published configs by name
(``"flux.1-dev"``, ``"wan2.1-1.3b"``, ``"wan2.1-14b"``), so a user can ask about Wan-14B at 720p
without the weights. What is counted, per CFG branch (the runtime keeps one cache per branch):

- the newest cached tensors: per segment (block range) the residual of each stream its last
  block returns, or per sub-block unit its output (the main stream; a block cached whole holds
  every stream it returns);
- the forecast history: ``history_depth - 1`` older copies of each (Taylor order k: k, FoCa: 2,
  ERTACache's linear correction: 1), where and in which precision ``history=`` keeps them;
- the method's own tensors (``MemoryNeeds.scratch``), in the branch that decides (the first of a
  step) only: e.g. EasyCache keeps the last computed stack input and output and the newest input
  (3 main-stream tensors, 2 at the end of a generation whose last step computed); BlockDrift at
  most one probe residual per middle range (none once the last step computed everything), 3 more
  with ``predict``.

``total`` is what the cache holds once its history is full (the most it holds); ``at_end`` is what
``cachekit.stats(...).cached_bytes`` reports after a generation whose last step was computed (every
method's default). Checked against real runs of every method on Flux and Wan (``tests/runtime/test_estimate.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import methods as _methods  # noqa: F401  (registers the built-in methods)
from .adapters.shape import PUBLISHED_CONFIGS, BlockList, ModelShape, describe, model_shape, shape_from_config
from .config import CacheConfig, ConfigError, method_for
from .methods.base import MemoryNeeds
from .recipe import load_recipe, recipe_for_model
from .runtime.guards import _human
from .runtime.history import HistoryStorage, is_scaled, scale_bytes

__all__ = ["BlockList", "ModelShape", "CachePart", "CacheEstimate", "estimate_cache_bytes", "model_shape",
           "shape_from_config", "cheaper_options", "PUBLISHED_CONFIGS"]



@dataclass(frozen=True)
class CachePart:
    """One kind of cached tensor: ``tensors`` of ``bytes_each`` in each of ``branches`` branches."""

    what: str
    tensors: int
    bytes_each: int
    branches: int
    where: str = "device"
    at_end: bool = True   # still held after a generation whose last step computed

    @property
    def bytes(self) -> int:
        return self.tensors * self.bytes_each * self.branches


@dataclass(frozen=True)
class CacheEstimate:
    """The breakdown ``estimate_cache_bytes`` returns; ``str()`` is a readable table.

    Example:
        >>> import cachekit
        >>> e = cachekit.estimate_cache_bytes("flux.1-dev", cachekit.FixedIntervalConfig(), tokens=4096)
        >>> print(str(e).splitlines()[0])
        cachekit cache estimate: flux.1-dev, FixedIntervalConfig()
        >>> e.total == e.device == sum(p.bytes for p in e.parts)
        True
    """

    model: str
    method: str
    tokens: int
    text_tokens: int
    batch: int
    branches: int
    dtype: torch.dtype
    width: int
    slots: int
    depth: int
    granularity: str
    parts: tuple[CachePart, ...]

    @property
    def total(self) -> int:
        """Bytes held once the history is full: the most the cache holds."""
        return sum(p.bytes for p in self.parts)

    @property
    def device(self) -> int:
        return sum(p.bytes for p in self.parts if p.where == "device")

    @property
    def host(self) -> int:
        return sum(p.bytes for p in self.parts if p.where == "host")

    @property
    def at_end(self) -> int:
        """What ``cachekit.stats(...).cached_bytes`` reports after a generation whose last step computed."""
        return sum(p.bytes for p in self.parts if p.at_end)

    @property
    def per_branch(self) -> dict[str, int]:
        """Bytes of the deciding branch (the first of a step) and of each other branch."""
        lead = sum(p.tensors * p.bytes_each for p in self.parts)
        other = sum(p.tensors * p.bytes_each for p in self.parts if p.branches == self.branches)
        return {"deciding": lead, "each other": other} if self.branches > 1 else {"deciding": lead}

    def __str__(self) -> str:
        head = (f"cachekit cache estimate: {self.model}, {self.method}\n"
                f"  {self.tokens:,} tokens" + (f" + {self.text_tokens:,} text" if self.text_tokens else "")
                + f" x batch {self.batch} x width {self.width:,}, {str(self.dtype).removeprefix('torch.')}; "
                f"{self.branches} CFG branch{'es' if self.branches > 1 else ''}; {self.slots} "
                f"{'units' if self.granularity == 'unit' else 'segments'}, history depth {self.depth}")
        rows = [("part", "tensors x size", "branches", "where", "bytes")]
        rows += [(p.what + ("" if p.at_end else " *"), f"{p.tensors} x {_human(p.bytes_each)}", str(p.branches),
                  p.where, _human(p.bytes)) for p in self.parts]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        tail = (f"  total {_human(self.total)} (device {_human(self.device)}, host {_human(self.host)}); "
                f"per branch: " + ", ".join(f"{k} {_human(v)}" for k, v in self.per_branch.items()))
        if any(not p.at_end for p in self.parts):
            tail += f"\n  * not held once the last step computed: {_human(self.at_end)} then"
        return "\n".join([head, *lines, tail])


# ---- the estimate ----------------------------------------------------------------------------------
def _config(config: CacheConfig | str | Path | None, class_name: str) -> CacheConfig:
    if config is None:
        return recipe_for_model(class_name).config
    if isinstance(config, CacheConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_recipe(config).config
    raise ConfigError(f"config must be a CacheConfig, a recipe name or a recipe path, got {type(config).__name__}")


def estimate_cache_bytes(target: Any, config: CacheConfig | str | Path | None = None, *, tokens: int,
                         text_tokens: int | None = None, batch: int = 1, cfg: bool | None = None,
                         dtype: torch.dtype | None = None, width: int | None = None,
                         history: HistoryStorage | str | None = None) -> CacheEstimate:
    """What ``cachekit.apply(target, config, history=history)`` will cache, before any run.

    Args:
        target: a pipeline or module (nothing is run), a diffusers transformer config dict, a
            published config's name ("flux.1-dev", "wan2.1-1.3b", "wan2.1-14b"), or a ``ModelShape``.
        config: as for ``apply`` (None: the family's recipe).
        tokens: main-stream (image / video) tokens per sample, e.g. Wan 720p x 81 frames:
            21 x 45 x 80 = 75,600.
        text_tokens: text tokens in the blocks' text stream (joint-attention families; Flux.1-dev's
            pipeline: 512, the default for "flux.1-dev").
        batch: samples per forward without CFG.
        cfg: classifier-free guidance on; None: as the family's pipeline does (Wan: on, 2 separate
            branches; Flux.1-dev: off). Batched-CFG families double the batch instead.
        dtype: the streams' dtype (default: the model's parameters', bf16 for configs and names).
        width: hidden size, when it cannot be read off the model.
        history: as for ``apply``: where the older forecast entries are kept, in which precision.

    Example:
        >>> import cachekit
        >>> config = cachekit.FixedIntervalConfig(units=True, forecast="taylor")
        >>> e = cachekit.estimate_cache_bytes("wan2.1-14b", config, tokens=75_600)   # 720p x 81 frames
        >>> round(e.total / 1e9), e.slots, e.depth, e.branches      # GB; 40 blocks x 3 units; Taylor 1; CFG
        (372, 120, 2, 2)
        >>> round(cachekit.estimate_cache_bytes("wan2.1-14b", config, tokens=75_600, history="int8").total / 1e9)
        279
    """
    shape = describe(target, width, dtype)
    config = _config(config, shape.class_name)
    storage = HistoryStorage.parse(history)
    text = shape.text_tokens if text_tokens is None else text_tokens
    if any(len(bl.streams) > 1 for bl in shape.lists) and text is None:
        raise ValueError(f"cachekit.estimate_cache_bytes: {shape.name}'s blocks carry a text stream; pass text_tokens=")
    text = text or 0
    for name, v, least in (("tokens", tokens, 1), ("text_tokens", text, 0), ("batch", batch, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"cachekit.estimate_cache_bytes: {name} must be an int >= {least}, got {v!r}")
    needs = method_for(config).memory_needs(shape.num_blocks)   # what the method caches, asked of it
    cfg = shape.cfg_default if cfg is None else bool(cfg)
    branches = 2 if cfg and shape.cfg == "separate" else 1
    rows = batch * (2 if cfg and shape.cfg == "batched" else 1)
    elem = torch.empty((), dtype=shape.dtype).element_size()
    low = (storage.dtype.itemsize if storage.dtype is not None and shape.dtype.is_floating_point
           and storage.dtype.itemsize < elem else elem)

    # int8 / fp8 storage adds one fp32 scale per channel (the last dimension) to each stored tensor;
    # a "main+text" unit output is counted as the tuple of both streams joint attention returns (a
    # joint sequence in one tensor, CogVideoX's, holds one width of scales less: 4 x width bytes)
    def size(stream: int | tuple[str, float], nbytes: int = elem) -> int:
        extra = 0
        if nbytes < elem and is_scaled(storage.dtype):
            extra = scale_bytes((int(shape.width * (stream[1] if isinstance(stream, tuple) else 1)),))
            extra *= 2 if isinstance(stream, tuple) and stream[0] == "main+text" else 1
        if isinstance(stream, tuple):   # a unit's output: (tokens, width multiple)
            n = {"main": tokens, "text": text, "main+text": tokens + text}[stream[0]]
            return int(rows * n * shape.width * stream[1]) * nbytes + extra
        return rows * (tokens if stream == 0 else text) * shape.width * nbytes + extra

    slots, n_slots = _slots(shape, needs)
    depth = needs.history_depth
    parts = [CachePart(f"newest {what}", n, size(s), branches) for what, n, s in slots]
    if depth > 1:
        lower = f", {str(storage.dtype).removeprefix('torch.')}" if low < elem else ""
        parts += [CachePart(f"older {what}{lower}", n * (depth - 1), size(s, low), branches,
                            "host" if storage.where == "host" else "device") for what, n, s in slots]
    parts += [CachePart(t.what, t.count, size(0), 1, "device", t.held_at_end) for t in needs.scratch if t.count]
    return CacheEstimate(shape.name, _short(config), tokens, text, rows, branches, shape.dtype, shape.width,
                         n_slots, depth, needs.granularity, tuple(parts))


def _slots(shape: ModelShape, needs: MemoryNeeds) -> tuple[list[tuple[str, int, int]], int]:
    """What the newest entries are, as (what, tensors per branch, stream index: 0 main, else text;
    or a unit output's (tokens, width multiple)), and the number of segments or units."""
    out: list[tuple[str, int, Any]] = []
    if needs.granularity == "unit":
        for k, bl in enumerate(shape.lists):
            if bl.units and bl.unit_outputs:
                for o in sorted(set(bl.unit_outputs)):
                    wide = f", {o[1]:g}x wide" if o[1] != 1 else ""
                    out.append((f"unit outputs, list {k} ({o[0]}{wide})", bl.blocks * bl.unit_outputs.count(o), o))
                continue
            kind = "unit outputs" if bl.units else "whole-block unit outputs"
            for s, stream in enumerate(bl.streams[:1] if bl.units else bl.streams):
                out.append((f"{kind}, list {k} ({stream})", bl.blocks * max(bl.units, 1), s))
        return out, sum(bl.blocks * max(bl.units, 1) for bl in shape.lists)
    segments = needs.segments
    ends = [shape.lists[shape.list_of(b - 1)].streams for _, b in segments]   # the streams each segment returns
    for s in range(max(len(e) for e in ends)):
        holding = [e for e in ends if s < len(e)]
        out.append((f"segment residuals ({holding[0][s]})", len(holding), s))
    return out, len(segments)


def _short(config: CacheConfig) -> str:
    """The config's class and the fields that differ from their defaults (plans elided)."""
    parts = []
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if v != f.default:
            text = repr(v)
            parts.append(f"{f.name}={text if len(text) <= 40 else text[:37] + '...'}")
    return f"{type(config).__name__}({', '.join(parts)})"


def cheaper_options(target: Any, config: CacheConfig, **kwargs: Any) -> list[tuple[str, CacheEstimate]]:
    """The estimate of ``config`` and of its cheaper variants (same arguments as
    ``estimate_cache_bytes``): plain reuse, a lower forecast order, stack-level reuse instead of
    units, the history in host memory, in bf16 or in int8."""
    out = [("as given", estimate_cache_bytes(target, config, **kwargs))]
    base, hist = out[0][1], kwargs.get("history")
    variants: list[tuple[str, CacheConfig, Any]] = []
    if base.depth > 1:
        variants.append(("forecast='none'", dataclasses.replace(config, forecast="none"), hist))
        if config.forecast == "taylor" and config.forecast_order > 1:
            lower = config.forecast_order - 1
            variants.append((f"forecast_order={lower}", dataclasses.replace(config, forecast_order=lower), hist))
    if base.granularity == "unit" and any(f.name == "units" for f in dataclasses.fields(config)):
        variants.append(("stack-level (units=False)", dataclasses.replace(config, units=False), hist))  # type: ignore[call-arg]
    if base.depth > 1:
        variants += [("history='host'", config, "host"), ("history='bf16'", config, "bf16"),
                     ("history='int8'", config, "int8")]
    for label, cfg, h in variants:
        out.append((label, estimate_cache_bytes(target, cfg, **{**kwargs, "history": h})))
    return out
