"""Registered layouts of the diffusers transformer families and of torch's own layers.

Keys are exact class paths (module + qualname), so a subclass is never matched by accident and
diffusers is not imported to build the table. Checked against diffusers 0.42.1 sources: the call
line of each block in the model's forward and the block's return statement.
"""

from __future__ import annotations

from .base import BlockIO, ModelLayout

_T = "diffusers.models.transformers."

SINGLE = BlockIO(("hidden_states",))
# Flux / SD3 / QwenImage MMDiT blocks: return (encoder_hidden_states, hidden_states); SD3's last
# block (context_pre_only) returns None for the text stream.
TEXT_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states"))
# CogVideoX / HunyuanVideo blocks: return (hidden_states, encoder_hidden_states).
IMAGE_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("hidden_states", "encoder_hidden_states"))

KNOWN_LAYOUTS: dict[str, ModelLayout] = {
    _T + "dit_transformer_2d.DiTTransformer2DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "pixart_transformer_2d.PixArtTransformer2DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "transformer_flux.FluxTransformer2DModel":
        ModelLayout(("transformer_blocks", "single_transformer_blocks"), (TEXT_FIRST,)),
    _T + "transformer_sd3.SD3Transformer2DModel": ModelLayout(("transformer_blocks",), (TEXT_FIRST,)),
    _T + "transformer_qwenimage.QwenImageTransformer2DModel": ModelLayout(("transformer_blocks",), (TEXT_FIRST,)),
    _T + "transformer_wan.WanTransformer3DModel": ModelLayout(("blocks",), (SINGLE,)),
    _T + "cogvideox_transformer_3d.CogVideoXTransformer3DModel": ModelLayout(("transformer_blocks",), (IMAGE_FIRST,)),
    _T + "transformer_ltx.LTXVideoTransformer3DModel": ModelLayout(("transformer_blocks",), (SINGLE,)),
    _T + "transformer_hunyuan_video.HunyuanVideoTransformer3DModel":
        ModelLayout(("transformer_blocks", "single_transformer_blocks"), (IMAGE_FIRST,)),
}

# Blocks recognised inside models with no registered layout (the single-ModuleList fallback).
KNOWN_BLOCK_IO: dict[str, BlockIO] = {
    "torch.nn.modules.transformer.TransformerDecoderLayer": BlockIO(("tgt",)),
    "torch.nn.modules.transformer.TransformerEncoderLayer": BlockIO(("src",)),
    "diffusers.models.attention.BasicTransformerBlock": SINGLE,
}

# Sub-block units (BAC): per block class, (kind, attribute) pairs in execution order. The attribute
# is either a submodule (its forward is wrapped; its output is the branch output before gating and
# the residual add) or a method of the block returning the branch output (torch's pre-norm layers:
# x = x + self._sa_block(self.norm1(x)), ...). Blocks not listed are cached as one unit.
# torch's TransformerEncoderLayer is deliberately not listed: in eval under no_grad it takes the
# fused kernel torch._transformer_encoder_layer_fwd, which never calls _sa_block / _ff_block, so
# sub-block hooks would silently never run (tests/test_bac.py checks the whole-block fallback).
KNOWN_UNITS: dict[str, tuple[tuple[str, str], ...]] = {
    "torch.nn.modules.transformer.TransformerDecoderLayer":
        (("self_attn", "_sa_block"), ("cross_attn", "_mha_block"), ("ffn", "_ff_block")),
    # DiT / PixArt: attn2 is None without cross-attention (DiT) and is then skipped.
    "diffusers.models.attention.BasicTransformerBlock": (("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ff")),
    _T + "transformer_wan.WanTransformerBlock": (("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ffn")),
    _T + "transformer_ltx.LTXVideoTransformerBlock": (("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ff")),
}

# Blocks whose output, when the named attribute is true, is exactly the main input plus the outputs
# of their units added one after the other: torch's pre-norm decoder layer runs
# x = x + _sa_block(norm1(x)); x = x + _mha_block(norm2(x), memory); x = x + _ff_block(norm3(x)).
# When every unit of such a block is reused at a step, the runtime returns x + c_sa + c_ca + c_ff
# (same additions, same order: bit-identical to running the layer with reused units) and skips the
# layer's norms and Python. Measured on the policy reference model (1 thread, contended machine):
# that part was 1.6 of the 3.5 ms a fully reused denoising step took (cProfile, 300 steps).
ADDITIVE_BLOCKS: dict[str, str] = {
    "torch.nn.modules.transformer.TransformerDecoderLayer": "norm_first",
}
