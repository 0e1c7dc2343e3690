"""Tiny random-weight diffusers pipelines for tests, built fully offline from configs.

Nine families: DiT, PixArt-Sigma, Flux, SD3, QwenImage, Wan, CogVideoX, LTX-Video, HunyuanVideo.
Nothing is downloaded (no ``from_pretrained``). Text encoders / tokenizers are left out
(``None``) and the pipelines are fed random ``prompt_embeds`` (plus masks / pooled embeds) instead;
``prompt_variant`` selects which random embeds are used, ``seed`` only drives the latent noise.
All calls return latents (``output_type="latent"``), except DiT, whose pipeline always decodes
(``output_type="pt"``, a tiny 8-channel VAE).

API::

    pipe = build("flux", seed=0)
    out = pipe(**call_kwargs("flux", pipe, steps=6, seed=0))
    x = output_tensor("flux", out)

This module deliberately imports nothing from ``cachekit``.
"""

from __future__ import annotations

import torch

FAMILIES: tuple[str, ...] = ("dit", "pixart", "flux", "sd3", "qwenimage", "wan", "cogvideox", "ltx", "hunyuanvideo")

VIDEO_FAMILIES: tuple[str, ...] = ("wan", "cogvideox", "ltx", "hunyuanvideo")

# Default height/width (pixels) of a call, and a second size that also works.
# DiT has no size argument: its latent size is fixed by ``transformer.config.sample_size``
# (32 px here), so ``size`` must be None or 32 for DiT.
DEFAULT_SIZE: dict[str, int] = {f: 32 for f in FAMILIES}
ALT_SIZE: dict[str, int | None] = {f: 48 for f in FAMILIES}
ALT_SIZE["dit"] = None
ALT_SIZE["ltx"] = 64  # LTXPipeline.check_inputs requires height/width divisible by 32
SUPPORTS_SIZE: dict[str, bool] = {f: f != "dit" for f in FAMILIES}

# Default number of frames for video families and a second value that also works.
DEFAULT_FRAMES = 9
ALT_FRAMES = 5

# Families whose default call (guidance-distilled, embedded guidance) does one transformer forward
# per step; ``call_kwargs(..., true_cfg=True)`` switches them to separate cond/uncond forwards.
EMBEDDED_GUIDANCE: tuple[str, ...] = ("flux", "hunyuanvideo")

# Transformer forward calls per denoising step for the default ``call_kwargs`` (CFG on where supported).
FORWARDS_PER_STEP: dict[str, int] = {
    "dit": 1,  # cond+uncond batched
    "pixart": 1,  # batched
    "flux": 1,  # embedded guidance, no CFG (2 with true_cfg=True)
    "sd3": 1,  # batched
    "qwenimage": 2,  # true CFG: separate cond / uncond forwards
    "wan": 2,  # separate cond / uncond forwards
    "cogvideox": 1,  # batched
    "ltx": 1,  # batched
    "hunyuanvideo": 1,  # embedded guidance, no CFG (2 with true_cfg=True)
}

_TEXT_LEN = 8  # sequence length of the random prompt embeddings


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _vae_kl(latent_channels: int, **extra):
    """Tiny 2-D AutoencoderKL with 3 blocks -> spatial factor 4."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        **extra,
    )


def _build_dit():
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # learned sigma, like the real DiT
        num_layers=2,
        sample_size=8,  # latent 8x8 -> 16 tokens, 32 px images
        patch_size=2,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=1000,
    )
    vae = _vae_kl(4)
    return DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())


def _build_pixart():
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    return PixArtSigmaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_vae_kl(4),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def _build_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        out_channels=None,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    vae = _vae_kl(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )


def _build_sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    )
    vae = _vae_kl(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def _build_qwenimage():
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    z_dim = 4
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,  # z_dim * 4 (2x2 packing)
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],  # vae_scale_factor = 2 ** 2 = 4
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    return QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )


def _build_wan():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    # vae=None: the pipeline falls back to 4x temporal / 8x spatial factors; output_type="latent".
    return WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


def _build_cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=_TEXT_LEN,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    return CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=CogVideoXDDIMScheduler()
    )


def _build_ltx():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )  # 4x spatial, 4x temporal
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )


def _build_hunyuanvideo():
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        guidance_embeds=True,
        rope_axes_dim=(4, 6, 6),
    )
    # vae=None: the pipeline falls back to 4x temporal / 8x spatial factors; output_type="latent".
    return HunyuanVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=None,
        tokenizer_2=None,
    )


_BUILDERS = {
    "dit": _build_dit,
    "pixart": _build_pixart,
    "flux": _build_flux,
    "sd3": _build_sd3,
    "qwenimage": _build_qwenimage,
    "wan": _build_wan,
    "cogvideox": _build_cogvideox,
    "ltx": _build_ltx,
    "hunyuanvideo": _build_hunyuanvideo,
}


def build_wan22(seed: int = 0, boundary_ratio: float = 0.75):
    """Wan 2.2's two-expert layout: ``transformer`` for timesteps >= boundary_ratio * 1000,
    ``transformer_2`` (another random model of the same config) for the rest. With the tiny
    pipeline's shift-3 flow schedule and 8 steps, 0.75 splits them 4 + 4."""
    torch.manual_seed(seed)
    pipe = _build_wan()
    second = _build_wan().transformer
    pipe = type(pipe)(tokenizer=None, text_encoder=None, vae=None, scheduler=pipe.scheduler,
                      transformer=pipe.transformer, transformer_2=second, boundary_ratio=boundary_ratio)
    for component in (pipe.transformer, pipe.transformer_2):
        component.eval()
        component.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_family(family: str) -> None:
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def build(family: str, seed: int = 0):
    """Build a tiny random-weight pipeline for ``family`` (deterministic in ``seed``)."""
    _check_family(family)
    torch.manual_seed(seed)
    pipe = _BUILDERS[family]()
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            component.eval()
            component.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------
# calling
# --------------------------------------------------------------------------------------------


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def _embeds(variant: int, batch: int, dim: int, pooled_dim: int | None = None, negative: bool = False):
    """Random prompt embeddings: (B, L, dim), mask (B, L) of ones, optional pooled (B, pooled_dim).

    Content depends only on ``variant`` (and ``negative``), never on the noise seed.
    """
    gen = torch.Generator("cpu").manual_seed((7919 * (variant + 1) + (104729 if negative else 0)) % (2**31))
    emb = _randn(gen, batch, _TEXT_LEN, dim)
    mask = torch.ones(batch, _TEXT_LEN, dtype=torch.long)
    pooled = _randn(gen, batch, pooled_dim) if pooled_dim is not None else None
    return emb, mask, pooled


def call_kwargs(
    family: str,
    pipe,
    *,
    steps: int = 6,
    seed: int = 0,
    batch: int = 1,
    size: int | None = None,
    frames: int | None = None,
    prompt_variant: int = 0,
    true_cfg: bool = False,
) -> dict:
    """Keyword arguments for ``pipe(**kwargs)``: deterministic, CFG on where the family supports it.

    ``true_cfg`` (Flux / HunyuanVideo only) additionally enables true CFG with negative embeds, i.e.
    separate cond and uncond transformer forwards per step, on top of the embedded guidance.
    """
    _check_family(family)
    if true_cfg and family not in EMBEDDED_GUIDANCE:
        raise ValueError(f"true_cfg only applies to {EMBEDDED_GUIDANCE}")
    if family == "dit":
        if size not in (None, DEFAULT_SIZE["dit"]):
            raise ValueError("DiTPipeline has no height/width: its size is fixed by transformer.config.sample_size")
    if family not in VIDEO_FAMILIES and frames is not None:
        raise ValueError(f"{family} is not a video family")
    size = DEFAULT_SIZE[family] if size is None else int(size)
    frames = DEFAULT_FRAMES if frames is None else int(frames)
    gen = torch.Generator("cpu").manual_seed(seed)
    kw: dict = {"num_inference_steps": steps, "generator": gen}
    B = batch

    if family == "dit":
        labels = [(101 * prompt_variant + 37 * i + 1) % 1000 for i in range(B)]
        kw.update(class_labels=labels, guidance_scale=4.0, output_type="pt")
        return kw

    if family == "pixart":
        dim = pipe.transformer.config.caption_channels
        pe, pm, _ = _embeds(prompt_variant, B, dim)
        ne, nm, _ = _embeds(0, B, dim, negative=True)
        kw.update(
            prompt=None,
            negative_prompt=None,  # the default "" clashes with negative_prompt_embeds
            prompt_embeds=pe,
            prompt_attention_mask=pm,
            negative_prompt_embeds=ne,
            negative_prompt_attention_mask=nm,
            guidance_scale=4.5,
            height=size,
            width=size,
            use_resolution_binning=False,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "flux":
        cfg = pipe.transformer.config
        pe, _, pp = _embeds(prompt_variant, B, cfg.joint_attention_dim, cfg.pooled_projection_dim)
        kw.update(
            prompt_embeds=pe,
            pooled_prompt_embeds=pp,
            guidance_scale=3.5,
            height=size,
            width=size,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        if true_cfg:
            ne, _, npp = _embeds(0, B, cfg.joint_attention_dim, cfg.pooled_projection_dim, negative=True)
            kw.update(true_cfg_scale=4.0, negative_prompt_embeds=ne, negative_pooled_prompt_embeds=npp)
        return kw

    if family == "sd3":
        cfg = pipe.transformer.config
        pe, _, pp = _embeds(prompt_variant, B, cfg.joint_attention_dim, cfg.pooled_projection_dim)
        ne, _, npp = _embeds(0, B, cfg.joint_attention_dim, cfg.pooled_projection_dim, negative=True)
        kw.update(
            prompt_embeds=pe,
            pooled_prompt_embeds=pp,
            negative_prompt_embeds=ne,
            negative_pooled_prompt_embeds=npp,
            guidance_scale=5.0,
            height=size,
            width=size,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "qwenimage":
        dim = pipe.transformer.config.joint_attention_dim
        pe, pm, _ = _embeds(prompt_variant, B, dim)
        ne, nm, _ = _embeds(0, B, dim, negative=True)
        kw.update(
            prompt_embeds=pe,
            prompt_embeds_mask=pm,
            negative_prompt_embeds=ne,
            negative_prompt_embeds_mask=nm,
            true_cfg_scale=4.0,
            height=size,
            width=size,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "wan":
        dim = pipe.transformer.config.text_dim
        pe, _, _ = _embeds(prompt_variant, B, dim)
        ne, _, _ = _embeds(0, B, dim, negative=True)
        kw.update(
            prompt_embeds=pe,
            negative_prompt_embeds=ne,
            guidance_scale=5.0,
            height=size,
            width=size,
            num_frames=frames,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "cogvideox":
        dim = pipe.transformer.config.text_embed_dim
        pe, _, _ = _embeds(prompt_variant, B, dim)
        ne, _, _ = _embeds(0, B, dim, negative=True)
        kw.update(
            prompt_embeds=pe,
            negative_prompt_embeds=ne,
            guidance_scale=6.0,
            height=size,
            width=size,
            num_frames=frames,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "ltx":
        dim = pipe.transformer.config.caption_channels
        pe, pm, _ = _embeds(prompt_variant, B, dim)
        ne, nm, _ = _embeds(0, B, dim, negative=True)
        kw.update(
            prompt_embeds=pe,
            prompt_attention_mask=pm,
            negative_prompt_embeds=ne,
            negative_prompt_attention_mask=nm,
            guidance_scale=3.0,
            height=size,
            width=size,
            num_frames=frames,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        return kw

    if family == "hunyuanvideo":
        cfg = pipe.transformer.config
        pe, pm, pp = _embeds(prompt_variant, B, cfg.text_embed_dim, cfg.pooled_projection_dim)
        kw.update(
            prompt_embeds=pe,
            prompt_attention_mask=pm,
            pooled_prompt_embeds=pp,
            guidance_scale=6.0,
            height=size,
            width=size,
            num_frames=frames,
            max_sequence_length=_TEXT_LEN,
            output_type="latent",
        )
        if true_cfg:
            ne, nm, npp = _embeds(0, B, cfg.text_embed_dim, cfg.pooled_projection_dim, negative=True)
            kw.update(
                true_cfg_scale=4.0,
                negative_prompt_embeds=ne,
                negative_prompt_attention_mask=nm,
                negative_pooled_prompt_embeds=npp,
            )
        return kw

    raise AssertionError(family)


def output_tensor(family: str, result) -> torch.Tensor:
    """The images / latents / frames of a pipeline return value, as a torch tensor."""
    _check_family(family)
    if isinstance(result, (tuple, list)):
        out = result[0]
    else:
        out = None
        for attr in ("images", "frames", "latents", "sample"):
            if hasattr(result, attr):
                out = getattr(result, attr)
                break
        if out is None:
            raise TypeError(f"cannot find an output tensor in {type(result).__name__}")
    if isinstance(out, torch.Tensor):
        return out
    import numpy as np

    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return torch.stack(list(out))
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], np.ndarray):
        return torch.from_numpy(np.stack(out))
    raise TypeError(f"unsupported output type {type(out).__name__}")


def generate(family: str, pipe, steps: int = 6, seed: int = 0) -> torch.Tensor:
    """One no-grad generation of ``pipe`` with ``call_kwargs``, as a tensor (``output_tensor``)."""
    with torch.no_grad():
        return output_tensor(family, pipe(**call_kwargs(family, pipe, steps=steps, seed=seed)))
