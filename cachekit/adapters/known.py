"""The built-in layouts: diffusers' transformer families, and torch's and diffusers' own blocks.

Keys are exact class paths (module + qualname), so a subclass is never matched by accident and
diffusers is not imported to build the tables. Checked against diffusers 0.42.1 sources: the call
line of each block in the model's forward and the block's return statement. A new family is one
more entry in ``LAYOUTS`` here, or one ``cachekit.register_layout`` call in user code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import BlockIO, BlockUnits, ModelLayout

_T = "diffusers.models.transformers."

SINGLE = BlockIO(("hidden_states",))
# Flux / SD3 / QwenImage MMDiT blocks: return (encoder_hidden_states, hidden_states); SD3's last
# block (context_pre_only) returns None for the text stream.
TEXT_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states"))
# CogVideoX / HunyuanVideo blocks: return (hidden_states, encoder_hidden_states).
IMAGE_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("hidden_states", "encoder_hidden_states"))

# Sub-block units of the MMDiT / joint blocks, as discovery finds them (``discover.py``; checked in
# the sources): the joint attention (dual-stream: returns (image, text), forecast per element), the
# image and text FFNs. A unit that is None on a block (SD3's last block has no text FFN) is skipped
# there. ``outputs`` sizes each unit's cache for ``estimate_cache_bytes``. Single-stream blocks stay
# one unit each (see diffusers_layouts.py: their MLP output is 4x wide).
_JOINT = (("self_attn", "attn"), ("ffn", "ff"), ("ffn_context", "ff_context"))
_JOINT_OUT = (("main+text", 1), ("main", 1), ("text", 1))
_FLUX_UNITS = (BlockUnits(_JOINT, outputs=_JOINT_OUT), None)

LAYOUTS: dict[str, ModelLayout] = {
    _T + "dit_transformer_2d.DiTTransformer2DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "pixart_transformer_2d.PixArtTransformer2DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "transformer_flux.FluxTransformer2DModel":
        ModelLayout(("transformer_blocks", "single_transformer_blocks"), (TEXT_FIRST,), units=_FLUX_UNITS),
    _T + "transformer_sd3.SD3Transformer2DModel": ModelLayout(("transformer_blocks",), (TEXT_FIRST,), units=BlockUnits(_JOINT, outputs=_JOINT_OUT)),
    _T + "transformer_qwenimage.QwenImageTransformer2DModel": ModelLayout(("transformer_blocks",), (TEXT_FIRST,), units=BlockUnits(
        (("self_attn", "attn"), ("ffn", "img_mlp"), ("ffn_context", "txt_mlp")), outputs=_JOINT_OUT)),
    _T + "transformer_wan.WanTransformer3DModel": ModelLayout(("blocks",), (SINGLE,)),
    # CogVideoX: one FFN on the joint [text, image] sequence, split after
    _T + "cogvideox_transformer_3d.CogVideoXTransformer3DModel": ModelLayout(("transformer_blocks",), (IMAGE_FIRST,), units=BlockUnits(
        (("self_attn", "attn1"), ("ffn", "ff")), outputs=(("main+text", 1), ("main+text", 1)))),
    _T + "transformer_ltx.LTXVideoTransformer3DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "transformer_hunyuan_video.HunyuanVideoTransformer3DModel":
        ModelLayout(("transformer_blocks", "single_transformer_blocks"), (IMAGE_FIRST,), units=_FLUX_UNITS),
}


@dataclass(frozen=True)
class KnownBlock:
    """What is known of one block class wherever it appears: its streams (used when a model has no
    registered layout and this is the class of its single block list), and its units."""

    io: BlockIO | None = None
    units: BlockUnits | None = None


# Sub-block units (BAC): the attribute is a submodule whose output is the branch output before
# gating and the residual add, or a method of the block returning the branch output (torch's
# pre-norm layers: x = x + self._sa_block(self.norm1(x)), ...). Blocks not listed are one unit.
# torch's TransformerEncoderLayer has no units on purpose: in eval under no_grad it takes the fused
# kernel torch._transformer_encoder_layer_fwd, which never calls _sa_block / _ff_block, so
# sub-block hooks would silently never run (tests/runtime/test_bac.py checks the whole-block fallback).
# torch's pre-norm decoder layer is additive: x = x + _sa_block(norm1(x)); x = x + _mha_block(
# norm2(x), memory); x = x + _ff_block(norm3(x)). Skipping it whole when its three units are
# reused saved 1.6 of the 3.5 ms a fully reused step took on the policy reference model (cProfile,
# 300 steps, 1 thread).
BLOCKS: dict[str, KnownBlock] = {
    "torch.nn.modules.transformer.TransformerDecoderLayer": KnownBlock(
        BlockIO(("tgt",)),
        BlockUnits((("self_attn", "_sa_block"), ("cross_attn", "_mha_block"), ("ffn", "_ff_block")), "norm_first")),
    "torch.nn.modules.transformer.TransformerEncoderLayer": KnownBlock(BlockIO(("src",))),
    # DiT / PixArt: attn2 is None without cross-attention (DiT) and is then skipped.
    "diffusers.models.attention.BasicTransformerBlock": KnownBlock(
        SINGLE, BlockUnits((("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ff")))),
    _T + "transformer_wan.WanTransformerBlock": KnownBlock(
        units=BlockUnits((("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ffn")))),
    _T + "transformer_ltx.LTXVideoTransformerBlock": KnownBlock(
        units=BlockUnits((("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ff")))),
}
