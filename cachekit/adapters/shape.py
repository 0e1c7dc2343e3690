"""What a cache's size depends on, read off a model without running it: ``ModelShape``.

The block lists, the streams their blocks return, sub-block units per block, width and dtype, and
how the family's pipeline runs CFG: from a model instance (found as ``apply`` finds its blocks and
units), from a diffusers transformer config dict (``"_class_name"`` plus the architecture keys:
nothing is built), or from a published config by name. ``cachekit.memory`` turns a shape, a
method's ``MemoryNeeds`` and the token counts into bytes; every name here is importable from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import find_units, qualname, resolve
from .known import BLOCKS, LAYOUTS

__all__ = ["BlockList", "ModelShape", "PUBLISHED_CONFIGS", "describe", "model_shape", "shape_from_config"]

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
# block where the registered layout does not name them: 0 = each block is one unit), how CFG runs
# ("separate" forwards per branch, or "batched" in one forward) and whether the published pipeline
# uses it by default (Flux and HunyuanVideo are guidance-distilled). Units per block follow adapters.known.BLOCKS (Wan / LTX: attn1, attn2, FFN;
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

    def list_of(self, block: int) -> int:
        """Index of the list that holds block ``block`` (counted over all lists in order)."""
        for k, bl in enumerate(self.lists):
            if block < bl.blocks:
                return k
            block -= bl.blocks
        raise ValueError(f"block {block} beyond the model's {self.num_blocks} blocks")


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


def describe(target: Any, width: int | None = None, dtype: torch.dtype | None = None) -> ModelShape:
    """The ``ModelShape`` of any target ``estimate_cache_bytes`` takes: a ``ModelShape`` (``width`` /
    ``dtype`` override its own), a published config's name, a diffusers config dict, or an instance."""
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
