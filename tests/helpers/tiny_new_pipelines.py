"""Tiny random-weight pipelines for the newest diffusers pipelines (0.42), built offline from configs.

Pipelines: Flux2, Flux2 Klein (CFG), Flux2 Klein KV (reference-image KV prefill), QwenImageEdit,
ZImage, HunyuanVideo 1.5, LTX-2 (video + audio), Wan 2.2 image-to-video (two experts), Wan VACE,
Chroma. Transformer configs follow diffusers' own tests (tests/pipelines/<family>); every
text encoder / tokenizer is ``None`` and random ``prompt_embeds`` (+ masks, negatives) are passed.
Every component is in eval mode, and parameters that are initialised to all zeros get small random
values (as tests/helpers/diffusers_zoo.build does) so that no block is an identity and reuse is visible.
Calls return latents (``output_type="latent"``).

API::

    pipe = build("flux2")
    out = run("flux2", pipe, steps=4)          # a tensor (LTX-2: video and audio latents concatenated)
    kw = call_kwargs("flux2", pipe, steps=4)   # the keyword arguments ``run`` passes

``run`` is needed rather than ``pipe(**kw)`` for QwenImageEdit only: it shrinks the pipeline's fixed
1024x1024 condition-image area (``calculate_dimensions``) to 32x32 for the duration of the call.

This module deliberately imports nothing from ``cachekit``.
"""

from __future__ import annotations

import contextlib

import torch

NAMES: tuple[str, ...] = ("flux2", "flux2_klein", "flux2_klein_kv", "qwenimage_edit", "zimage", "hunyuanvideo15",
                          "ltx2", "ltx2_stg", "wan22_i2v", "wan_vace", "chroma")

# Transformer forwards per denoising step of the default call (the denoiser names that run them).
FORWARDS_PER_STEP: dict[str, int] = {
    "flux2": 1,  # guidance-distilled (embedded guidance), no CFG, no cache_context
    "flux2_klein": 2,  # CFG: separate "cond" / "uncond"
    "flux2_klein_kv": 1,  # distilled; step 0 "extract" over ref+noise tokens, later steps "cached"
    "qwenimage_edit": 2,  # true CFG: "cond" / "uncond"
    "zimage": 1,  # CFG batched as a list of 2 in one forward
    "hunyuanvideo15": 2,  # guider: "pred_cond" / "pred_uncond"
    "ltx2": 1,  # CFG batched: "cond_uncond" (stg / modality guidance off)
    "ltx2_stg": 3,  # + "uncond_stg" (block 1's self-attention skipped) + "uncond_modality" (no cross-modal attn)
    "wan22_i2v": 2,  # "cond" / "uncond", transformer for the high-noise steps, transformer_2 after
    "wan_vace": 2,  # "cond" / "uncond"
    "chroma": 2,  # CFG: two unlabelled forwards
}

# Branch names cachekit is expected to report per step (in call order), where the pipeline names them.
BRANCHES: dict[str, tuple] = {
    "flux2_klein": ("cond", "uncond"),
    "qwenimage_edit": ("cond", "uncond"),
    "hunyuanvideo15": ("pred_cond", "pred_uncond"),
    "ltx2": ("cond_uncond",),
    "ltx2_stg": ("cond_uncond", "uncond_stg", "uncond_modality"),
    "wan22_i2v": ("cond", "uncond"),
    "wan_vace": ("cond", "uncond"),
}

DENOISERS: dict[str, tuple[str, ...]] = {n: ("transformer",) for n in NAMES}
DENOISERS["wan22_i2v"] = ("transformer", "transformer_2")

VIDEO: tuple[str, ...] = ("hunyuanvideo15", "ltx2", "ltx2_stg", "wan22_i2v", "wan_vace")

# Default call size (pixels) and a second size that also works (different token count).
DEFAULT_SIZE: dict[str, int] = {n: 32 for n in NAMES}
DEFAULT_SIZE.update(hunyuanvideo15=16)
ALT_SIZE: dict[str, int] = {n: 48 for n in NAMES}
ALT_SIZE.update(hunyuanvideo15=24, ltx2=64, ltx2_stg=64, zimage=64, qwenimage_edit=64)
DEFAULT_FRAMES = 9
ALT_FRAMES = 5

_TEXT_LEN = 8


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _fill_zero_params(module: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * 0.05)


def _flux2_transformer(**extra):
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                   timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4], **extra)


def _flux2_vae():
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3,
                              down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                              block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                              use_quant_conv=False, use_post_quant_conv=False)  # 2x down, packed 2x2 -> 16 channels


def _kl_vae(latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=32, **extra)


def _build_flux2():
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    return Flux2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(), text_encoder=None,
                         tokenizer=None, transformer=_flux2_transformer())


def _build_flux2_klein():
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    return Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(), text_encoder=None,
                              tokenizer=None, transformer=_flux2_transformer(guidance_embeds=False),
                              is_distilled=False)


def _build_flux2_klein_kv():
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinKVPipeline

    return Flux2KleinKVPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flux2_vae(), text_encoder=None,
                                tokenizer=None, transformer=_flux2_transformer(guidance_embeds=False))


def _build_qwenimage_edit():
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline,
                           QwenImageTransformer2DModel)

    z_dim = 4
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=z_dim * 6, z_dim=z_dim, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * z_dim,
                                 latents_std=[1.0] * z_dim)
    return QwenImageEditPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                                 tokenizer=None, processor=None, transformer=transformer)


def _build_zimage():
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                           n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                           qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():  # torch.empty in __init__: may hold NaN
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    vae = _kl_vae(16, scaling_factor=0.3611, shift_factor=0.1159)
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                          transformer=transformer)


def _build_hunyuanvideo15():
    from diffusers import (AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel)

    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=32,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v")
    vae = AutoencoderKLHunyuanVideo15(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
                                      layers_per_block=1, spatial_compression_ratio=4, temporal_compression_ratio=2,
                                      downsample_match_channel=False, upsample_match_channel=False)
    return HunyuanVideo15Pipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                  scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                  tokenizer_2=None, guider=ClassifierFreeGuidance(guidance_scale=6.0))


_LTX2_CAPTION = 32
_LTX2_PROJ_FACTOR = 3  # prompt_embeds are the stacked hidden states of (layers + 1) text-encoder outputs


def _build_ltx2():
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2Pipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=_LTX2_CAPTION, rope_double_precision=False, rope_type="split")
    connectors = LTX2TextConnectors(
        caption_channels=_LTX2_CAPTION, text_proj_in_factor=_LTX2_PROJ_FACTOR,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    vocoder = LTX2Vocoder(in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins,
                          hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
                          resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
                          output_sampling_rate=16000)
    return LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae, text_encoder=None,
                        tokenizer=None, connectors=connectors, transformer=transformer, vocoder=vocoder,
                        processor=None, prompt_enhancer=None, duration_head=None)


def _wan_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(in_channels: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                 num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=32)


def _build_wan22_i2v():
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=scheduler,
                                   image_processor=None, image_encoder=None, transformer=_wan_transformer(36),
                                   transformer_2=_wan_transformer(36), boundary_ratio=0.875)


def _build_wan_vace():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96)
    return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer,
                           transformer_2=None)


def _build_chroma():
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    transformer = ChromaTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                           attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                           axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
                                           approximator_layers=1, approximator_num_channels=16)
    vae = _kl_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                          transformer=transformer, image_encoder=None, feature_extractor=None)


_BUILDERS = {
    "flux2": _build_flux2,
    "flux2_klein": _build_flux2_klein,
    "flux2_klein_kv": _build_flux2_klein_kv,
    "qwenimage_edit": _build_qwenimage_edit,
    "zimage": _build_zimage,
    "hunyuanvideo15": _build_hunyuanvideo15,
    "ltx2": _build_ltx2,
    "ltx2_stg": _build_ltx2,
    "wan22_i2v": _build_wan22_i2v,
    "wan_vace": _build_wan_vace,
    "chroma": _build_chroma,
}


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown pipeline {name!r}; expected one of {NAMES}")


def build(name: str, seed: int = 0):
    """A tiny random-weight pipeline (deterministic in ``seed``), every module in eval mode."""
    _check(name)
    torch.manual_seed(seed)
    pipe = _BUILDERS[name]()
    gen = torch.Generator().manual_seed(seed + 1)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            _fill_zero_params(component, gen)
            component.eval()
            component.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------
# calling
# --------------------------------------------------------------------------------------------


def _embeds(variant: int, batch: int, dim: int, negative: bool = False, length: int = _TEXT_LEN):
    gen = torch.Generator("cpu").manual_seed((7919 * (variant + 1) + (104729 if negative else 0)) % (2**31))
    return torch.randn(batch, length, dim, generator=gen), torch.ones(batch, length, dtype=torch.long)


def _image(size: int, variant: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1000 + variant)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _video(size: int, frames: int):
    return [_image(size, k) for k in range(frames)]


def call_kwargs(name: str, pipe, steps: int = 4, *, seed: int = 0, size: int | None = None,
                frames: int | None = None, prompt_variant: int = 0, **overrides) -> dict:
    """Keyword arguments for a deterministic call (CFG on where the pipeline has it); ``overrides`` win."""
    _check(name)
    size = DEFAULT_SIZE[name] if size is None else int(size)
    frames = DEFAULT_FRAMES if frames is None else int(frames)
    if name not in VIDEO and frames != DEFAULT_FRAMES:
        raise ValueError(f"{name} is not a video pipeline")
    kw: dict = dict(num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(seed),
                    height=size, width=size, output_type="latent")
    v = prompt_variant

    if name in ("flux2", "flux2_klein", "flux2_klein_kv"):
        dim = pipe.transformer.config.joint_attention_dim
        kw.update(prompt_embeds=_embeds(v, 1, dim)[0])
        if name == "flux2":
            kw.update(guidance_scale=4.0)
        elif name == "flux2_klein":
            kw.update(guidance_scale=4.0, negative_prompt_embeds=_embeds(0, 1, dim, negative=True)[0])
        else:
            kw.update(image=_image(64, v))  # reference tokens: KV extracted at step 0, reused after
    elif name == "qwenimage_edit":
        dim = pipe.transformer.config.joint_attention_dim
        pe, pm = _embeds(v, 1, dim)
        ne, nm = _embeds(0, 1, dim, negative=True)
        kw.update(image=_image(size, v), prompt_embeds=pe, prompt_embeds_mask=pm, negative_prompt_embeds=ne,
                  negative_prompt_embeds_mask=nm, true_cfg_scale=4.0, max_sequence_length=_TEXT_LEN)
    elif name == "zimage":
        dim = pipe.transformer.config.cap_feat_dim
        kw.update(prompt_embeds=[_embeds(v, 1, dim)[0][0]], negative_prompt_embeds=[_embeds(0, 1, dim, True)[0][0]],
                  guidance_scale=3.0, cfg_normalization=False, cfg_truncation=1.0, max_sequence_length=_TEXT_LEN)
    elif name == "hunyuanvideo15":
        cfg = pipe.transformer.config
        pe, pm = _embeds(v, 1, cfg.text_embed_dim)
        pe2, pm2 = _embeds(v + 50, 1, cfg.text_embed_2_dim)
        ne, nm = _embeds(0, 1, cfg.text_embed_dim, negative=True)
        ne2, nm2 = _embeds(50, 1, cfg.text_embed_2_dim, negative=True)
        kw.update(prompt_embeds=pe, prompt_embeds_mask=pm, prompt_embeds_2=pe2, prompt_embeds_mask_2=pm2,
                  negative_prompt_embeds=ne, negative_prompt_embeds_mask=nm, negative_prompt_embeds_2=ne2,
                  negative_prompt_embeds_mask_2=nm2, num_frames=frames)
    elif name in ("ltx2", "ltx2_stg"):
        dim = _LTX2_CAPTION * _LTX2_PROJ_FACTOR
        pe, pm = _embeds(v, 1, dim)
        ne, nm = _embeds(0, 1, dim, negative=True)
        kw.update(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm, num_frames=frames, frame_rate=25.0,
                  guidance_scale=3.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
                  audio_guidance_scale=None, audio_stg_scale=None, audio_modality_scale=None,
                  audio_guidance_rescale=None, spatio_temporal_guidance_blocks=None, use_cross_timestep=False,
                  max_sequence_length=_TEXT_LEN)
        if name == "ltx2_stg":  # LTX-2.3 style guidance: three forwards per step
            kw.update(stg_scale=1.0, modality_scale=3.0, spatio_temporal_guidance_blocks=[1])
    elif name in ("wan22_i2v", "wan_vace"):
        dim = pipe.transformer.config.text_dim
        kw.update(prompt_embeds=_embeds(v, 1, dim)[0], negative_prompt_embeds=_embeds(0, 1, dim, negative=True)[0],
                  guidance_scale=5.0, num_frames=frames, max_sequence_length=_TEXT_LEN)
        if name == "wan22_i2v":
            kw.update(image=_image(size, v), guidance_scale_2=3.0)
    elif name == "chroma":
        dim = pipe.transformer.config.joint_attention_dim
        pe, pm = _embeds(v, 1, dim)
        ne, nm = _embeds(0, 1, dim, negative=True)
        # ChromaPipeline's own text path makes float masks (a long mask reaches SDPA and fails)
        kw.update(prompt_embeds=pe, prompt_attention_mask=pm.float(), negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm.float(), guidance_scale=5.0, max_sequence_length=_TEXT_LEN)
    kw.update(overrides)
    return kw


@contextlib.contextmanager
def _small_condition_area(name: str):
    """QwenImageEdit resizes its condition image to about 1024x1024 whatever the input (16k tokens, a
    1024^2 VAE encode): shrink that target area to 32x32 for the call."""
    if name != "qwenimage_edit":
        yield
        return
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as mod

    original = mod.calculate_dimensions
    mod.calculate_dimensions = lambda target_area, ratio: original(32 * 32, ratio)
    try:
        yield
    finally:
        mod.calculate_dimensions = original


def output_tensor(name: str, result) -> torch.Tensor:
    """The latents a call returned, flattened per batch item (LTX-2: video then audio latents)."""
    _check(name)
    if name in ("ltx2", "ltx2_stg"):
        video, audio = result.frames, result.audio
        return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)
    out = result[0]
    if isinstance(out, (list, tuple)):
        out = torch.stack(list(out))
    return out


def run(name: str, pipe, steps: int = 4, **kw) -> torch.Tensor:
    """Call ``pipe`` with ``call_kwargs(name, pipe, steps, **kw)`` and return its output tensor."""
    with torch.no_grad(), _small_condition_area(name):
        return output_tensor(name, pipe(**call_kwargs(name, pipe, steps, **kw)))
