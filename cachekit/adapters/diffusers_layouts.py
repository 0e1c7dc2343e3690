"""The layouts of diffusers 0.42.1's other transformer classes (``known.py`` holds the first nine).

Proposed by discovery (``discover.py``) on each class's own tiny test configuration with every
one-layer list made two layers (``tests/data/diffusers_configs.pt``), checked against the model and
block ``forward`` sources, and corrected where discovery cannot see the reason (commented). Where
``segment_lists`` is set, block-range methods cache those lists only: a refiner that runs first on
another stream (text or noise refiners: Lumina2, Z-Image, Krea2, MiniMax-H3, HunyuanVideo 1.5), or
double-stream blocks whose two streams are concatenated before the single-stream ones (AuraFlow,
Chroma, Flux2, Bria-Fibo, HiDream); unit-level methods (the default) cache every list.
``tests/test_diffusers_zoo.py`` runs every entry.
"""

from __future__ import annotations

from .base import BlockIO, BlockUnits, ModelLayout

_T = "diffusers.models.transformers."


def U(*units: tuple[str, str]) -> BlockUnits:
    """Sub-block units in execution order: (kind, attribute) pairs."""
    return BlockUnits(tuple(units))


SINGLE = BlockIO(("hidden_states",))
TEXT_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states"))
IMAGE_FIRST = BlockIO(("hidden_states", "encoder_hidden_states"), ("hidden_states", "encoder_hidden_states"))

LAYOUTS: dict[str, ModelLayout] = {
    _T + 'ace_step_transformer.AceStepTransformer1DModel': ModelLayout(
        'layers', SINGLE, units=U(('self_attn', 'self_attn'), ('cross_attn', 'cross_attn'), ('ffn', 'mlp'))),
    _T + 'transformer_allegro.AllegroTransformer3DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    _T + 'transformer_anyflow.AnyFlowTransformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    _T + 'transformer_anyflow_far.AnyFlowFARTransformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    _T + 'auraflow_transformer_2d.AuraFlowTransformer2DModel': ModelLayout(
        ('joint_transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('self_attn', 'attn'), ('ffn', 'ff'))), segment_lists=('single_transformer_blocks',)),
    _T + 'transformer_bria.BriaTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn')))),
    _T + 'transformer_bria_fibo.BriaFiboTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn'))), segment_lists=('single_transformer_blocks',)),
    _T + 'transformer_chroma.ChromaTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn'))), segment_lists=('single_transformer_blocks',)),
    _T + 'transformer_chronoedit.ChronoEditTransformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    _T + 'transformer_cogview3plus.CogView3PlusTransformer2DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'), ('ffn', 'ff'))),
    _T + 'transformer_cogview4.CogView4Transformer2DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'))),
    _T + 'consisid_transformer_3d.ConsisIDTransformer3DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'), ('ffn', 'ff'))),
    # Two streams per block: und_seq (text, causal, no timestep) and gen_seq (the generated vision
    # tokens: the main stream); returned (und, gen). Packed 2-D tensors, no batch dimension.
    _T + 'transformer_cosmos3.Cosmos3OmniTransformer': ModelLayout(
        'layers', BlockIO(('gen_seq', 'und_seq'), ('und_seq', 'gen_seq')), timestep_arg='vision_timesteps',
        units=U(('self_attn', 'self_attn'), ('ffn', 'mlp'), ('ffn_gen', 'mlp_moe_gen'))),
    _T + 'transformer_easyanimate.EasyAnimateTransformer3DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'), ('ffn', 'ff'), ('ffn_txt_ff', 'txt_ff'))),
    _T + 'transformer_ernie_image.ErnieImageTransformer2DModel': ModelLayout(
        'layers', BlockIO(('x',), None), units=U(('self_attn', 'self_attention'), ('ffn', 'mlp'))),
    _T + 'transformer_flux2.Flux2Transformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('self_attn', 'attn'))), segment_lists=('single_transformer_blocks',)),
    _T + 'transformer_glm_image.GlmImageTransformer2DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'))),
    _T + 'transformer_helios.HeliosTransformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    # HiDreamBlock wraps the real block (.block); attn1 of the double-stream block returns (image, text);
    # ff_i is the image MoE (routed + shared experts), ff_t the dense text FFN, each gated inline.
    _T + 'transformer_hidream_image.HiDreamImageTransformer2DModel': ModelLayout(
        ('double_stream_blocks', 'single_stream_blocks'), (IMAGE_FIRST, SINGLE), timestep_arg='timesteps',
        units=(U(('self_attn', 'block.attn1'), ('ffn', 'block.ff_i'), ('ffn_text', 'block.ff_t')),
               U(('self_attn', 'block.attn1'), ('ffn', 'block.ff_i'))),
        segment_lists=('single_stream_blocks',)),
    _T + 'transformer_hunyuan_video15.HunyuanVideo15Transformer3DModel': ModelLayout(
        ('context_embedder.token_refiner.refiner_blocks', 'transformer_blocks'), (SINGLE, IMAGE_FIRST), units=(U(('self_attn', 'attn'), ('ffn', 'ff')), U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context'))), segment_lists=('transformer_blocks',)),
    _T + 'hunyuan_transformer_2d.HunyuanDiT2DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    _T + 'transformer_hunyuan_video_framepack.HunyuanVideoFramepackTransformer3DModel': ModelLayout(
        ('context_embedder.token_refiner.refiner_blocks', 'transformer_blocks', 'single_transformer_blocks'), (SINGLE, IMAGE_FIRST, IMAGE_FIRST), units=(U(('self_attn', 'attn'), ('ffn', 'ff')), U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn'))), segment_lists=('transformer_blocks', 'single_transformer_blocks')),
    _T + 'transformer_ideogram4.Ideogram4Transformer2DModel': ModelLayout(
        'layers', SINGLE, units=U(('self_attn', 'attention'), ('ffn', 'feed_forward'))),
    _T + 'transformer_joyimage.JoyImageEditTransformer3DModel': ModelLayout(
        'double_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn'), ('ffn', 'img_mlp'), ('ffn_txt_mlp', 'txt_mlp'))),
    _T + 'transformer_joyimage_edit_plus.JoyImageEditPlusTransformer3DModel': ModelLayout(
        'double_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn'), ('ffn', 'img_mlp'), ('ffn_txt_mlp', 'txt_mlp'))),
    _T + 'transformer_krea2.Krea2Transformer2DModel': ModelLayout(
        ('text_fusion.layerwise_blocks', 'text_fusion.refiner_blocks', 'transformer_blocks'), SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'ff')), segment_lists=('transformer_blocks',)),
    # Spatial block i and temporal block i alternate with a reshape between them: no range of blocks
    # carries one stream, so only unit-level methods (the default) cache Latte.
    _T + 'latte_transformer_3d.LatteTransformer3DModel': ModelLayout(
        ('transformer_blocks', 'temporal_transformer_blocks'), SINGLE,
        units=(U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff')), U(('self_attn', 'attn1'), ('ffn', 'ff'))),
        segment_lists=(), note="spatial and temporal blocks alternate with a reshape between them"),
    _T + 'transformer_longcat_audio_dit.LongCatAudioDiTTransformer': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'self_attn'), ('cross_attn', 'cross_attn'), ('ffn', 'ffn'))),
    _T + 'transformer_longcat_image.LongCatImageTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn')))),
    _T + 'transformer_ltx2.LTX2VideoTransformer3DModel': ModelLayout(
        'transformer_blocks', BlockIO(('hidden_states', 'audio_hidden_states'), ('hidden_states', 'audio_hidden_states')), units=U(('self_attn', 'attn1'), ('self_attn_audio_attn1', 'audio_attn1'), ('cross_attn', 'attn2'), ('cross_attn_audio_attn2', 'audio_attn2'), ('self_attn_audio_to_video_attn', 'audio_to_video_attn'), ('self_attn_video_to_audio_attn', 'video_to_audio_attn'), ('ffn', 'ff'), ('ffn_audio_ff', 'audio_ff'))),
    _T + 'lumina_nextdit2d.LuminaNextDiT2DModel': ModelLayout(
        'layers', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'feed_forward'))),
    _T + 'transformer_lumina2.Lumina2Transformer2DModel': ModelLayout(
        ('context_refiner', 'noise_refiner', 'layers'), SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'feed_forward')), segment_lists=('layers',)),
    _T + 'transformer_minimax_h3.MiniMaxH3Transformer3DModel': ModelLayout(
        ('token_refiner.refiner_blocks', 'transformer_blocks'), SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'ff')), segment_lists=('transformer_blocks',)),
    _T + 'transformer_minimax_music3.MiniMaxMusic3Transformer1DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'ff_in'), ('ffn_ff_out', 'ff_out'))),
    _T + 'transformer_mochi.MochiTransformer3DModel': ModelLayout(
        'transformer_blocks', IMAGE_FIRST, units=U(('self_attn', 'attn1'), ('ffn', 'ff'))),
    _T + 'transformer_motif_video.MotifVideoTransformer3DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), IMAGE_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn')))),
    _T + 'transformer_nucleusmoe_image.NucleusMoEImageTransformer2DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'img_mlp'))),
    _T + 'transformer_omnigen.OmniGenTransformer2DModel': ModelLayout(
        'layers', SINGLE, units=U(('self_attn', 'self_attn'), ('ffn', 'mlp'))),
    _T + 'transformer_ovis_image.OvisImageTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), U(('ffn', 'proj_mlp'), ('self_attn', 'attn')))),
    _T + 'transformer_prx.PRXTransformer2DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attention'))),
    _T + 'sana_transformer.SanaTransformer2DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    _T + 'transformer_sana_video.SanaVideoTransformer3DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    _T + 'transformer_skyreels_v2.SkyReelsV2Transformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    _T + 'transformer_stable_audio3.StableAudio3DiTModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'self_attn'), ('cross_attn', 'cross_attn'), ('ffn', 'ff'))),
    _T + 'transformer_temporal.TransformerTemporalModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    _T + 'transformer_wan_animate.WanAnimateTransformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn'))),
    _T + 'transformer_wan_animate_2.WanAnimate2Transformer3DModel': ModelLayout(
        'blocks', SINGLE, units=U(('self_attn', 'self_attn'), ('cross_attn', 'cross_attn'), ('ffn', 'ffn'))),
    # vace_blocks all run first on the control stream and return (hint, control); the hints are added
    # after blocks[vace_layers[k]] (injections, taken out of the cached residual). VACE blocks are
    # cached by unit-level methods; block-range methods cache the main blocks.
    _T + 'transformer_wan_vace.WanVACETransformer3DModel': ModelLayout(
        ('vace_blocks', 'blocks'), (BlockIO(('control_hidden_states',)), SINGLE),
        units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ffn')), segment_lists=('blocks',)),
    _T + 'transformer_z_image.ZImageTransformer2DModel': ModelLayout(
        ('noise_refiner', 'context_refiner', 'layers'), BlockIO(('x',), None), units=U(('self_attn', 'attention'), ('ffn', 'feed_forward')), timestep_arg='t', segment_lists=('layers',)),
}
