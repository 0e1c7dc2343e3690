"""The layouts of diffusers 0.42.1's other transformer classes (``known.py`` holds the first nine).

Proposed by discovery (``discover.py``) on each class's own tiny test configuration with every
one-layer list made two layers (``tests/data/diffusers_configs.pt``), checked against the model and
block ``forward`` sources, and corrected where discovery cannot see the reason (commented). Where
``segment_lists`` is set, block-range methods cache those lists only: a refiner that runs first on
another stream (text or noise refiners: Lumina2, Z-Image, Krea2, MiniMax-H3, HunyuanVideo 1.5), or
double-stream blocks whose two streams are concatenated before the single-stream ones (AuraFlow,
Chroma, Flux2, Bria-Fibo, HiDream); unit-level methods (the default) cache every list.
``tests/families/test_diffusers_zoo.py`` runs every entry.
"""

from __future__ import annotations

from .base import BlockIO, BlockUnits, ModelLayout

_T = "diffusers.models.transformers."


# Flux-style single-stream blocks (proj_mlp beside the attention, both into one proj_out) are one
# unit each: their only separable MLP output is proj_mlp's, 4x wide on the joint sequence, which
# would make the default's cache on Flux.1-dev at 4096 tokens 12.9 GB instead of 4.3
# (``cachekit.estimate_cache_bytes("flux.1-dev", tokens=4096)``).


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
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None)),
    _T + 'transformer_bria_fibo.BriaFiboTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None), segment_lists=('single_transformer_blocks',)),
    _T + 'transformer_chroma.ChromaTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), (TEXT_FIRST, SINGLE), units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None), segment_lists=('single_transformer_blocks',)),
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
        ('context_embedder.token_refiner.refiner_blocks', 'transformer_blocks', 'single_transformer_blocks'), (SINGLE, IMAGE_FIRST, IMAGE_FIRST), units=(U(('self_attn', 'attn'), ('ffn', 'ff')), U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None), segment_lists=('transformer_blocks', 'single_transformer_blocks')),
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
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None)),
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
        ('transformer_blocks', 'single_transformer_blocks'), IMAGE_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None)),
    _T + 'transformer_nucleusmoe_image.NucleusMoEImageTransformer2DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'img_mlp'))),
    _T + 'transformer_omnigen.OmniGenTransformer2DModel': ModelLayout(
        'layers', SINGLE, units=U(('self_attn', 'self_attn'), ('ffn', 'mlp'))),
    _T + 'transformer_ovis_image.OvisImageTransformer2DModel': ModelLayout(
        ('transformer_blocks', 'single_transformer_blocks'), TEXT_FIRST, units=(U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None)),
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

    # Classes with no test configuration in diffusers' tests: proposed by discovery on the hand-written
    # tiny configs of eval/handmade_diffusers_configs.py and checked against the sources as above.

    # Flux 3: per-mode blocks first, each on its own stream (text, image, reference image; the block's
    # argument is hidden_states, one tensor returned); then the joint single blocks take (content, text)
    # and return (text, content). The content stream is the image tokens, with the reference tokens
    # concatenated after them when given, and the text stream comes from txt_mode_blocks: no range across
    # lists carries the same streams, so block-range methods cache the single blocks. Both kinds of block
    # run attn and ff side by side on one modulated input and gate their sum: each unit is its branch.
    # mode_blocks.image_cond runs only with reference images (image-to-image), so it is left uncached:
    # hooked blocks that never run make text-to-image calls fail cachekit's composition guard.
    _T + 'transformer_flux3.Flux3Transformer2DModel': ModelLayout(
        ('txt_mode_blocks', 'mode_blocks.image', 'single_transformer_blocks'), (SINGLE, SINGLE, TEXT_FIRST),
        units=U(('self_attn', 'attn'), ('ffn', 'ff')), segment_lists=('single_transformer_blocks',)),
    # Qwen-Image 2.1: one stream, the joint [text, condition images, target image] sequence (the model
    # projects every position out). kv_cache_mode="cached" runs the target tokens only, a shorter stream
    # than at the "extract" step, which is step 0 (always computed, so every layer's prefix K/V is
    # written); a residual is only reused at its own shape (checked: the default and interval 2 run).
    _T + 'transformer_qwenimage21.QwenImage21Transformer2DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn'), ('ffn', 'img_mlp'))),
    # HunyuanImage 2.1: HunyuanVideo's layout (token refiner on the text first; double- then single-
    # stream blocks, both returning (image, text)); single-stream blocks one unit each (see above).
    _T + 'transformer_hunyuanimage.HunyuanImageTransformer2DModel': ModelLayout(
        ('context_embedder.token_refiner.refiner_blocks', 'transformer_blocks', 'single_transformer_blocks'),
        (SINGLE, IMAGE_FIRST, IMAGE_FIRST),
        units=(U(('self_attn', 'attn'), ('ffn', 'ff')), U(('self_attn', 'attn'), ('ffn', 'ff'), ('ffn_ff_context', 'ff_context')), None),
        segment_lists=('transformer_blocks', 'single_transformer_blocks')),
    # Kandinsky 5: text encoder blocks (stream x) run first and hand the text to every visual block's
    # cross-attention; the visual blocks (stream visual_embed) are the cached range.
    _T + 'transformer_kandinsky.Kandinsky5Transformer3DModel': ModelLayout(
        ('text_transformer_blocks', 'visual_transformer_blocks'), (BlockIO(('x',)), BlockIO(('visual_embed',))),
        units=(U(('self_attn', 'self_attention'), ('ffn', 'feed_forward')),
               U(('self_attn', 'self_attention'), ('cross_attn', 'cross_attention'), ('ffn', 'feed_forward'))),
        segment_lists=('visual_transformer_blocks',)),
    # Kandinsky 6: a video and an audio text encoder (stream x each), then fused blocks on (vis, aud),
    # returned (vis, aud). The fused block calls the submodules of video_dec_block / audio_dec_block
    # itself (their forward never runs), in this order. Without audio_hidden_states (aud None) the audio
    # units never run and unit-level methods refuse the call (composition guard); the pipeline
    # (ti2va) always passes audio, and block-range methods run either way.
    _T + 'transformer_kandinsky6.Kandinsky6Transformer3DModel': ModelLayout(
        ('video_text_transformer_blocks', 'audio_text_transformer_blocks', 'visual_transformer_blocks'),
        (BlockIO(('x',)), BlockIO(('x',)), BlockIO(('vis', 'aud'), ('vis', 'aud'))),
        units=(U(('self_attn', 'attn'), ('ffn', 'feed_forward')), U(('self_attn', 'attn'), ('ffn', 'feed_forward')),
               U(('self_attn', 'video_dec_block.self_attention'), ('cross_attn', 'video_dec_block.cross_attention'),
                 ('self_attn_audio', 'audio_dec_block.self_attention'), ('cross_attn_audio', 'audio_dec_block.cross_attention'),
                 ('cross_attn_va', 'va_cross_attention'), ('cross_attn_av', 'av_cross_attention'),
                 ('ffn', 'video_dec_block.feed_forward'), ('ffn_audio', 'audio_dec_block.feed_forward'))),
        segment_lists=('visual_transformer_blocks',)),
    _T + 'transformer_kandinsky6_sr.Kandinsky6SRTransformer3DModel': ModelLayout(
        'visual_transformer_blocks', SINGLE, units=U(('self_attn', 'self_attention'), ('ffn', 'feed_forward'))),
    # Cosmos 1 / Predict 2: the block adds extra_pos_emb to its input and, under a ControlNet, its
    # controlnet_residual in place before returning: that addition is inside the cached residual.
    _T + 'transformer_cosmos.CosmosTransformer3DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    # Bria Fibo 2: Z-Image's blocks. The noise refiner runs on the image (and context image) tokens, the
    # Perceiver's layers turn the text into gist tokens (no timestep), then the main layers run on [gist,
    # image, context]: a longer stream, so block-range methods cache the main layers. cross_attention
    # exists on the injection layers only (None elsewhere: skipped); attention / cross_attention outputs
    # go through a norm before their gate, which the unit leaves to the block.
    _T + 'transformer_bria_fibo2.BriaFibo2Transformer2DModel': ModelLayout(
        ('noise_refiner', 'perceiver.layers', 'layers'), (BlockIO(('x',)), BlockIO(('latents',)), BlockIO(('x',))),
        units=(U(('self_attn', 'attention'), ('cross_attn', 'cross_attention'), ('ffn', 'feed_forward')),
               U(('cross_attn', 'cross_attention'), ('self_attn', 'self_attention'), ('ffn', 'ffn')),
               U(('self_attn', 'attention'), ('cross_attn', 'cross_attention'), ('ffn', 'feed_forward'))),
        segment_lists=('layers',)),
    # SANA-WM: one stream x; attn (GDN or softmax, camera-conditioned) and mlp are gated by the block,
    # cross_attn is added ungated.
    _T + 'transformer_sana_wm.SanaWMTransformer3DModel': ModelLayout(
        'blocks', BlockIO(('x',)), units=U(('self_attn', 'attn'), ('cross_attn', 'cross_attn'), ('ffn', 'mlp'))),
    # SANA-WM stage-2 refiner: LTX-2's video blocks only. The pipeline (sana_wm/refiner.py) also calls it
    # at timestep 0 in the "capture_*" KV modes between denoising loops, where each layer records its K/V
    # as it runs: a block reused in such a call records nothing.
    _T + 'transformer_sana_wm_refiner.SanaWMLTX2RefinerTransformer3DModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    # Stable Audio Open: pre-norm blocks, residual branches added ungated.
    _T + 'stable_audio_transformer.StableAudioDiTModel': ModelLayout(
        'transformer_blocks', SINGLE, units=U(('self_attn', 'attn1'), ('cross_attn', 'attn2'), ('ffn', 'ff'))),
    # The generic class as a denoiser (patched input: the original DiT / PixArt checkpoints) and the
    # unCLIP prior: BasicTransformerBlock stacks, units by block class (known.BLOCKS).
    _T + 'transformer_2d.Transformer2DModel': ModelLayout('transformer_blocks', SINGLE),
    _T + 'prior_transformer.PriorTransformer': ModelLayout('transformer_blocks', SINGLE),
    # RFD4-Proteina: trunk layers on the token stream (values); the pair stream is an input the model
    # updates between layers (pair_update_layers), not a block output. The units are the attention and
    # the transition inside mhba / transition, before their condition-dependent output scale. The
    # timestep is the backbone time (local_latents_time moves with it in the released sampler).
    _T + 'transformer_rfd4_proteina.RFD4ProteinaTransformer': ModelLayout(
        'transformer_layers', BlockIO(('values',)), timestep_arg='bb_ca_time',
        units=U(('self_attn', 'mhba.mha'), ('ffn', 'transition.transition'))),
    # Spectrogram Diffusion's decoder: DecoderLayer returns a 1-tuple; its sub-layers (layer[0..2]) add
    # their own residual, so the units are the attentions and the gated-GELU MLP inside them.
    _T + 't5_film_transformer.T5FilmDecoder': ModelLayout(
        'decoders', BlockIO(('hidden_states',), ('hidden_states',)), timestep_arg='decoder_noise_time',
        units=U(('self_attn', 'layer.0.attention'), ('cross_attn', 'layer.1.attention'), ('ffn', 'layer.2.DenseReluDense'))),
}
