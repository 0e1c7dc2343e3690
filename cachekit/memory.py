"""What a cache will hold, before a run: ``estimate_cache_bytes(model, config, tokens=..., ...)``.

A pure function of the config and a description of the model (``ModelShape``: block lists, their
streams, sub-block units per block, width, dtype), the token counts, the batch and the CFG
branches. The model may be given as an instance (a pipeline or a module: its blocks and units are
found as ``apply`` finds them, no forward is run), as a diffusers config dict (``"_class_name"``
plus the architecture keys: nothing is built), or as one of the published configs by name
(``"flux.1-dev"``, ``"wan2.1-1.3b"``, ``"wan2.1-14b"``), so a user can ask about Wan-14B at 720p
without the weights. What is counted, per CFG branch (the runtime keeps one cache per branch):

- the newest cached tensors: per segment (block range) the residual of each stream its last
  block returns, or per sub-block unit its output (the main stream; a block cached whole holds
  every stream it returns);
- the forecast history: ``history_depth - 1`` older copies of each (Taylor order k: k, FoCa: 2,
  ERTACache's linear correction: 1), where and in which precision ``history=`` keeps them;
- the method's own tensors, in the branch that decides (the first of a step) only: EasyCache keeps
  the last computed stack input and output and the newest input (3 main-stream tensors, 2 at the
  end of a generation whose last step computed); BlockDrift at most one probe residual per middle
  range (none once the last step computed everything), 3 more with ``predict``.

``total`` is what the cache holds once its history is full (the most it holds); ``at_end`` is what
``cachekit.stats(...).cached_bytes`` reports after a generation whose last step was computed (every
method's default). Checked against real runs of every method on Flux and Wan (``tests/test_estimate.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import methods as _methods  # noqa: F401  (registers the built-in methods)
from .adapters import find_units, qualname, resolve
from .adapters.known import BLOCKS, LAYOUTS
from .config import CacheConfig, ConfigError, method_for
from .recipe import load_recipe, recipe_for_model
from .runtime.guards import _human
from .runtime.history import HistoryStorage

__all__ = ["BlockList", "ModelShape", "CachePart", "CacheEstimate", "estimate_cache_bytes", "model_shape",
           "cheaper_options", "PUBLISHED_CONFIGS"]

# Architecture keys of the published transformer configs (the Hub's transformer/config.json).
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "flux.1-dev": dict(_class_name="FluxTransformer2DModel", patch_size=1, in_channels=64, num_layers=19,
                       num_single_layers=38, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                       pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56]),
    "wan2.1-1.3b": dict(_class_name="WanTransformer3DModel", patch_size=[1, 2, 2], num_attention_heads=12,
                        attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                        ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                        rope_max_seq_len=1024),
    "wan2.1-14b": dict(_class_name="WanTransformer3DModel", patch_size=[1, 2, 2], num_attention_heads=40,
                       attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                       ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                       rope_max_seq_len=1024),
}
# Text tokens the published pipelines feed their blocks (Flux.1-dev: T5 max_sequence_length 512).
_TEXT_TOKENS = {"flux.1-dev": 512}

# Per diffusers class: the block lists as (config key holding the block count, sub-block units per
# block where the registered layout does not name them: 0 = each block is one unit), how CFG runs ("separate" forwards per branch, or "batched" in
# one forward) and whether the published pipeline uses it by default (Flux and HunyuanVideo are
# guidance-distilled). Units per block follow adapters.known.BLOCKS (Wan / LTX: attn1, attn2, FFN;
# DiT: attn1, FFN, no cross-attention; PixArt: all three); tests check these against built models.
_FAMILIES: dict[str, tuple[tuple[tuple[str, int], ...], str, bool]] = {
    "FluxTransformer2DModel": ((("num_layers", 0), ("num_single_layers", 0)), "separate", False),
    "HunyuanVideoTransformer3DModel": ((("num_layers", 0), ("num_single_layers", 0)), "separate", False),
    "WanTransformer3DModel": ((("num_layers", 3),), "separate", True),
    "QwenImageTransformer2DModel": ((("num_layers", 0),), "separate", True),
    "SD3Transformer2DModel": ((("num_layers", 0),), "batched", True),
    "CogVideoXTransformer3DModel": ((("num_layers", 0),), "batched", True),
    "LTXVideoTransformer3DModel": ((("num_layers", 3),), "batched", True),
    "DiTTransformer2DModel": ((("num_layers", 2),), "batched", True),
    "PixArtTransformer2DModel": ((("num_layers", 3),), "batched", True),
}


@dataclass(frozen=True)
class BlockList:
    """One list of blocks as the cache sees it.

    Args:
        blocks: number of blocks.
        streams: the streams its blocks return, main stream first (("hidden_states",), or
            ("hidden_states", "encoder_hidden_states") for joint-attention blocks).
        units: sub-block units per block (``units=True``, BAC); 0 = each block is one unit, whose
            output holds every stream.
        unit_outputs: what each unit's output holds (``BlockUnits.outputs``: (tokens, width
            multiple) pairs); empty: every unit returns the main stream at the model's width.
    """

    blocks: int
    streams: tuple[str, ...] = ("hidden_states",)
    units: int = 0
    unit_outputs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ModelShape:
    """What a cache's size depends on, besides tokens and batch.

    Args:
        name: what to call the model in reports.
        width: hidden size of every stream (heads x head dim).
        lists: the block lists in execution order.
        dtype: the streams' dtype.
        cfg: how CFG runs: "separate" (a forward per branch, each branch keeps its own cache) or
            "batched" (both halves in one forward: twice the batch).
        cfg_default: whether the model's pipeline runs CFG unless told otherwise.
        text_tokens: text tokens fed to the blocks when the caller does not say (None: must say,
            if a list carries a text stream).
        class_name: the model's class name (its recipe is the default config); "" if none.
    """

    name: str
    width: int
    lists: tuple[BlockList, ...]
    dtype: torch.dtype = torch.bfloat16
    cfg: str = "batched"
    cfg_default: bool = False
    text_tokens: int | None = None
    class_name: str = ""

    @property
    def num_blocks(self) -> int:
        return sum(bl.blocks for bl in self.lists)


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
    """The breakdown ``estimate_cache_bytes`` returns; ``str()`` is a readable table."""

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


# ---- the model's description ----------------------------------------------------------------------
def _layout_io(class_name: str):
    for path, layout in LAYOUTS.items():
        if path.rsplit(".", 1)[-1] == class_name:
            return layout
    return None


def _streams(io) -> tuple[str, ...]:
    """The streams a block returns, main stream first."""
    out = io.outputs or (io.streams[0],)
    return (io.streams[0], *[s for s in out if s != io.streams[0]]) if io.streams[0] in out else tuple(out)


def shape_from_config(config: dict[str, Any], *, name: str | None = None, dtype: torch.dtype = torch.bfloat16,
                      text_tokens: int | None = None) -> ModelShape:
    """A ``ModelShape`` from a diffusers transformer config dict (``_class_name`` and the
    architecture keys), without building the model."""
    cls = config.get("_class_name")
    family, layout = _FAMILIES.get(cls), _layout_io(cls) if cls else None
    if family is None or layout is None:
        raise ValueError(f"cachekit.estimate_cache_bytes: no known layout for a config of class {cls!r} "
                         f"(known: {', '.join(_FAMILIES)}); pass the model or a cachekit.memory.ModelShape")
    lists_spec, cfg, cfg_default = family
    missing = [k for k in ("num_attention_heads", "attention_head_dim", *[k for k, _ in lists_spec]) if k not in config]
    if missing:
        raise ValueError(f"cachekit.estimate_cache_bytes: the {cls} config lacks {', '.join(missing)}")
    # Units per block: the layout's own where it names them (Flux, SD3, Qwen-Image, CogVideoX,
    # HunyuanVideo), else the count above (the block class's units, ``known.BLOCKS``).
    lists = tuple(_block_list(int(config[key]), _streams(layout.io_for(i)), layout.units_for(i), units)
                  for i, (key, units) in enumerate(lists_spec))
    return ModelShape(name or cls, int(config["num_attention_heads"]) * int(config["attention_head_dim"]), lists,
                      dtype, cfg, cfg_default, text_tokens, cls)


def _block_list(blocks: int, streams: tuple[str, ...], spec: Any, units: int) -> BlockList:
    """A list whose blocks have ``spec``'s units (a ``BlockUnits``), else ``units`` units each."""
    if spec is None:
        return BlockList(blocks, streams, units)
    return BlockList(blocks, streams, len(spec.units), spec.outputs or ())


def _width(model: nn.Module, first_block: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    get = (lambda k: cfg.get(k)) if hasattr(cfg, "get") else (lambda k: getattr(cfg, k, None))
    if cfg is not None and get("num_attention_heads") and get("attention_head_dim"):
        return int(get("num_attention_heads")) * int(get("attention_head_dim"))
    lin = next((m for m in first_block.modules() if isinstance(m, nn.Linear)), None)
    return lin.in_features if lin is not None else None


def model_shape(target: Any, *, width: int | None = None, dtype: torch.dtype | None = None) -> ModelShape:
    """The ``ModelShape`` of a model instance (a pipeline or a module), found as ``apply`` finds
    its blocks and units; no forward is run. Width: heads x head dim from the model's config, else
    the first ``nn.Linear`` of the first block (``width=`` overrides)."""
    resolved = resolve(target)
    model = resolved.model
    blocks = list(resolved.blocks)
    units = find_units(blocks)
    per_block = [0] * len(blocks)
    whole = [False] * len(blocks)
    for u in units:
        per_block[u.layer] += 1
        whole[u.layer] = whole[u.layer] or u.kind == "block"
    lists: list[BlockList] = []
    for path in resolved.layout.block_lists:
        idx = [i for i, b in enumerate(blocks) if b.name.rsplit(".", 1)[0] == path]
        if idx:
            i = idx[0]
            spec = blocks[i].units or getattr(BLOCKS.get(qualname(blocks[i].module)), "units", None)
            n = 0 if whole[i] else per_block[i]
            lists.append(BlockList(len(idx), _streams(blocks[i].io), n,
                                   spec.outputs if spec is not None and spec.outputs and n == len(spec.units) else ()))
    w = width or _width(model, blocks[0].module)
    if w is None:
        raise ValueError(f"cachekit.estimate_cache_bytes: cannot tell the width of {type(model).__name__}; pass width=")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    family = _FAMILIES.get(type(model).__name__)
    return ModelShape(type(model).__name__, int(w), tuple(lists), dtype,
                      family[1] if family else "batched", family[2] if family else False, None, type(model).__name__)


def _describe(target: Any, width: int | None, dtype: torch.dtype | None) -> ModelShape:
    if isinstance(target, ModelShape):
        return dataclasses.replace(target, dtype=dtype or target.dtype, width=width or target.width)
    if isinstance(target, str):
        key = target.lower()
        if key not in PUBLISHED_CONFIGS:
            raise ValueError(f"cachekit.estimate_cache_bytes: unknown model {target!r}; known: "
                             f"{', '.join(PUBLISHED_CONFIGS)} (or pass the model, its config dict or a ModelShape)")
        shape = shape_from_config(PUBLISHED_CONFIGS[key], name=key, dtype=dtype or torch.bfloat16,
                                  text_tokens=_TEXT_TOKENS.get(key))
        return dataclasses.replace(shape, width=width or shape.width)
    if isinstance(target, dict):
        shape = shape_from_config(target, dtype=dtype or torch.bfloat16)
        return dataclasses.replace(shape, width=width or shape.width)
    return model_shape(target, width=width, dtype=dtype)


# ---- the estimate ----------------------------------------------------------------------------------
def _config(config: CacheConfig | str | Path | None, class_name: str) -> CacheConfig:
    if config is None:
        return recipe_for_model(class_name).config
    if isinstance(config, CacheConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_recipe(config).config
    raise ConfigError(f"config must be a CacheConfig, a recipe name or a recipe path, got {type(config).__name__}")


def _scratch(config: CacheConfig, segments: int) -> list[tuple[str, int, bool]]:
    """The method's own main-stream tensors in the deciding branch: (what, count, held at the end)."""
    if config.method == "easycache":
        return [("EasyCache: last computed stack input and output", 2, True),
                ("EasyCache: newest stack input", 1, False)]
    if config.method == "block_drift":
        out = [("BlockDrift: probe residual references", segments, False)]
        if getattr(config, "predict", 0.0) > 0:
            out += [("BlockDrift predict: last full input and output", 2, True),
                    ("BlockDrift predict: newest input", 1, False)]
        return out
    return []


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
    """
    shape = _describe(target, width, dtype)
    config = _config(config, shape.class_name)
    method = method_for(config)
    storage = HistoryStorage.parse(history)
    text = shape.text_tokens if text_tokens is None else text_tokens
    if any(len(bl.streams) > 1 for bl in shape.lists) and text is None:
        raise ValueError(f"cachekit.estimate_cache_bytes: {shape.name}'s blocks carry a text stream; pass text_tokens=")
    text = text or 0
    for name, v, least in (("tokens", tokens, 1), ("text_tokens", text, 0), ("batch", batch, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"cachekit.estimate_cache_bytes: {name} must be an int >= {least}, got {v!r}")
    cfg = shape.cfg_default if cfg is None else bool(cfg)
    branches = 2 if cfg and shape.cfg == "separate" else 1
    rows = batch * (2 if cfg and shape.cfg == "batched" else 1)
    elem = torch.empty((), dtype=shape.dtype).element_size()
    low = (storage.dtype.itemsize if storage.dtype is not None and shape.dtype.is_floating_point
           and storage.dtype.itemsize < elem else elem)

    def size(stream: int | tuple[str, float], nbytes: int = elem) -> int:
        if isinstance(stream, tuple):   # a unit's output: (tokens, width multiple)
            n = {"main": tokens, "text": text, "main+text": tokens + text}[stream[0]]
            return int(rows * n * shape.width * stream[1]) * nbytes
        return rows * (tokens if stream == 0 else text) * shape.width * nbytes

    slots, n_slots = _slots(shape, method)
    depth = method.history_depth
    parts = [CachePart(f"newest {what}", n, size(s), branches) for what, n, s in slots]
    if depth > 1:
        lower = f", {str(storage.dtype).removeprefix('torch.')}" if low < elem else ""
        parts += [CachePart(f"older {what}{lower}", n * (depth - 1), size(s, low), branches,
                            "host" if storage.where == "host" else "device") for what, n, s in slots]
    middle = len(config.range_thresholds) if config.method == "block_drift" else 0
    parts += [CachePart(what, n, size(0), 1, "device", held) for what, n, held in _scratch(config, middle) if n]
    return CacheEstimate(shape.name, _short(config), tokens, text, rows, branches, shape.dtype, shape.width,
                         n_slots, depth, method.granularity, tuple(parts))


def _slots(shape: ModelShape, method: Any) -> tuple[list[tuple[str, int, int]], int]:
    """What the newest entries are, as (what, tensors per branch, stream index: 0 main, else text;
    or a unit output's (tokens, width multiple)), and the number of segments or units."""
    out: list[tuple[str, int, Any]] = []
    if method.granularity == "unit":
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
    segments = method.segments(shape.num_blocks)
    ends = [shape.lists[_list_of(shape, b - 1)].streams for _, b in segments]   # the streams each segment returns
    for s in range(max(len(e) for e in ends)):
        holding = [e for e in ends if s < len(e)]
        out.append((f"segment residuals ({holding[0][s]})", len(holding), s))
    return out, len(segments)


def _list_of(shape: ModelShape, block: int) -> int:
    for k, bl in enumerate(shape.lists):
        if block < bl.blocks:
            return k
        block -= bl.blocks
    raise ValueError(f"block {block} beyond the model's {shape.num_blocks} blocks")


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
    units, the history in host memory or in bf16."""
    out = [("as given", estimate_cache_bytes(target, config, **kwargs))]
    base, hist = out[0][1], kwargs.get("history")
    variants: list[tuple[str, CacheConfig, Any]] = []
    if base.depth > 1:
        variants.append(("forecast='none'", dataclasses.replace(config, forecast="none"), hist))
        if config.forecast == "taylor" and config.forecast_order > 1:
            lower = config.forecast_order - 1
            variants.append((f"forecast_order={lower}", dataclasses.replace(config, forecast_order=lower), hist))
    if base.granularity == "unit" and any(f.name == "units" for f in dataclasses.fields(config)):
        variants.append(("stack-level (units=False)", dataclasses.replace(config, units=False), hist))
    if base.depth > 1:
        variants += [("history='host'", config, "host"), ("history='bf16'", config, "bf16")]
    for label, cfg, h in variants:
        out.append((label, estimate_cache_bytes(target, cfg, **{**kwargs, "history": h})))
    return out
