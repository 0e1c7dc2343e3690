"""Video reference model: a pixel-space Wan transformer on procedurally generated moving-digit clips.

What it is
    A stock :class:`diffusers.WanTransformer3DModel` (``patch_size=(3, 2, 2)``,
    ``qk_norm="rms_norm_across_heads"``) trained here (``reference/train_video.py``) on clips of
    9 frames of 16x16x1 pixels in which one of four scikit-learn 8x8 digits (the *content*: zero,
    one, four, seven) moves by one pixel per frame in one of four *directions* (up, down, left,
    right) across the canvas. It runs through :class:`MovingDigitsWanPipeline`, a thin subclass of
    :class:`diffusers.WanPipeline` that keeps its denoising loop verbatim -- in particular the two
    SEPARATE transformer forwards per step for classifier-free guidance, the conditional one inside
    ``transformer.cache_context("cond")`` and the unconditional one inside
    ``transformer.cache_context("uncond")`` -- and only changes what pixel space requires:

    * no VAE, text encoder or tokenizer: ``vae_scale_factor_temporal = vae_scale_factor_spatial = 1``,
      so the pipeline's "latents" ARE the frames (values in ``[-1, 1]``, shape ``(N, 1, F, H, W)``);
    * the condition is given as ``prompt_embeds`` / ``negative_prompt_embeds`` built from a learned
      embedding table (:class:`ConditionEmbedding`, shipped with the weights) by
      :func:`video_prompt_embeds` (both defined, with the condition vocabulary, in
      :mod:`cachekit.reference.video_conditions` and re-exported here); the negative embedding is
      the learned null condition (trained with 10% condition dropout);
    * ``output_type`` ``"pt"`` / ``"np"`` decode the frames to ``[0, 1]`` (``"latent"`` returns the raw
      ``[-1, 1]`` latents exactly like the stock pipeline).

Quick use::

    from cachekit.reference.video import load_video_pipeline, video_prompt_embeds, DEFAULT_CONDITIONS
    pipe = load_video_pipeline()
    contents, directions = zip(*DEFAULT_CONDITIONS)
    pe, npe = video_prompt_embeds(pipe, contents, directions)
    frames = pipe(prompt_embeds=pe, negative_prompt_embeds=npe, output_type="pt").frames
    # frames: (8, 9, 1, 16, 16) float in [0, 1]

Weights are safetensors only (never pickle), checked against the SHA-256 recorded in
``config.json``; any problem with the weight or config file raises :class:`VideoWeightsError`
(a ``ValueError``) whose message names the file.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import torch
from torch import nn

from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from diffusers.video_processor import VideoProcessor

from .digits import ReferenceWeightsError as _BaseWeightsError  # one error type for all reference models
# The condition vocabulary and embedding table live in video_conditions (torch only); re-exported here.
from .video_conditions import (CONTENT_DIGITS, CONTENT_NAMES, DEFAULT_CONDITIONS, DIRECTION_NAMES,
                               DIRECTION_VECTORS, TEXT_DIM, ConditionEmbedding, video_prompt_embeds)
from .video_conditions import NUM_CONDITION_TOKENS  # noqa: F401  (re-exported, not used here)
from .weights import (CONFIG_NAME, WEIGHTS_NAME, load_checked_state, read_config_file, resolve_files,
                      scheduler_from_config)
from .weights import sha256_file  # noqa: F401  (re-exported: cachekit.reference.video.sha256_file)

__all__ = [
    "MovingDigitsWanPipeline",
    "ConditionEmbedding",
    "VideoWeightsError",
    "load_video_pipeline",
    "video_prompt_embeds",
    "frames_from_output",
    "build_transformer",
    "build_scheduler",
    "read_config",
    "CONTENT_NAMES",
    "CONTENT_DIGITS",
    "DIRECTION_NAMES",
    "DIRECTION_VECTORS",
    "DEFAULT_CONDITIONS",
    "DEFAULT_TRANSFORMER_CONFIG",
    "DEFAULT_SCHEDULER_CONFIG",
    "DEFAULT_SAMPLING",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "ASSET_DIR",
]

_LABEL = "video reference model"
ASSET_DIR = "moving_digits_wan"
FORMAT = "cachekit-moving-digits-wan/1"

#: Architecture (kwargs of WanTransformer3DModel): width 96 (3 heads x 32), 8 blocks, FFN 256;
#: patch (3, 2, 2) on 9x16x16x1 clips -> 3 * 8 * 8 = 192 tokens per clip. Why a temporal patch of
#: 3: Wan's only position signal is a relative 3D RoPE, and the first model (patch (1, 2, 2), 576
#: tokens) learned the motion axis (83% of clips) but not its sign (at chance after 1.7k steps):
#: up vs down is the same clip played backwards. Inside a token spanning 3 frames the frame order
#: is absolute (fixed positions in the patch projection), so the local motion sign is visible to
#: every token; the shorter sequence also makes a training step 3.7x cheaper (1067 -> 288 ms,
#: batch 16, 2 threads, this machine; see the model card).
DEFAULT_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": [3, 2, 2],
    "num_attention_heads": 3,
    "attention_head_dim": 32,
    "in_channels": 1,
    "out_channels": 1,
    "text_dim": TEXT_DIM,
    "freq_dim": 64,
    "ffn_dim": 256,
    "num_layers": 8,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 64,
}

#: Flow matching (Wan's convention): x_sigma = (1 - sigma) x0 + sigma noise, model predicts
#: noise - x0, timestep = 1000 sigma; inference sigmas are shifted by ``shift``.
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 2.0,
}

DEFAULT_SAMPLING: dict[str, Any] = {
    "num_inference_steps": 50,
    "guidance_scale": 4.0,
    "num_frames": 9,
    "height": 16,
    "width": 16,
    "default_conditions": [list(c) for c in DEFAULT_CONDITIONS],
    "pixel_range": [-1.0, 1.0],
}


class VideoWeightsError(_BaseWeightsError):
    """The video reference model's weight or config file is missing, corrupted or does not match."""


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------
class MovingDigitsWanPipeline(WanPipeline):
    r"""Pixel-space :class:`~diffusers.WanPipeline` for the moving-digits reference model.

    ``__call__`` is :meth:`diffusers.WanPipeline.__call__` (same loop: per step one conditional
    forward in ``cache_context("cond")`` and, when ``guidance_scale > 1``, one unconditional
    forward in ``cache_context("uncond")``), with these differences only:

    * ``vae_scale_factor_temporal = vae_scale_factor_spatial = 1``: latents are frames;
    * defaults ``num_frames=9, height=16, width=16``, ``num_inference_steps`` and
      ``guidance_scale`` from the shipped config (50 and 4.0);
    * ``output_type``: ``"latent"`` -> ``(N, 1, F, H, W)`` in ``[-1, 1]`` (stock behaviour);
      ``"pt"`` -> ``(N, F, 1, H, W)`` float in ``[0, 1]``; ``"np"`` (the Wan default) ->
      ``(N, F, H, W, 1)`` float32 array in ``[0, 1]``. There is no ``"pil"``.
    * prompts must be given as ``prompt_embeds`` (see :func:`video_prompt_embeds`); when CFG is on
      and ``negative_prompt_embeds`` is None, the learned null condition is used.
    """

    model_cpu_offload_seq = "transformer"
    _optional_components = ["transformer", "transformer_2", "tokenizer", "text_encoder", "vae"]

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        condition_embedding: ConditionEmbedding | None = None,
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer_2: WanTransformer3DModel | None = None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
    ):
        if transformer_2 is not None or boundary_ratio is not None or expand_timesteps:
            raise ValueError("the moving-digits reference model uses a single transformer (Wan 2.1 style)")
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                         transformer=transformer)
        # Pixel space: the "latents" are the frames.
        self.vae_scale_factor_temporal = 1
        self.vae_scale_factor_spatial = 1
        self.video_processor = VideoProcessor(vae_scale_factor=1)
        # Not a diffusers component (no save_pretrained); a plain attribute.
        self.condition_embedding = condition_embedding
        self.default_num_inference_steps = int(DEFAULT_SAMPLING["num_inference_steps"])
        self.default_guidance_scale = float(DEFAULT_SAMPLING["guidance_scale"])
        self.content_names = list(CONTENT_NAMES)
        self.direction_names = list(DIRECTION_NAMES)

    @torch.no_grad()
    def __call__(
        self,
        prompt=None,
        negative_prompt=None,
        height: int = 16,
        width: int = 16,
        num_frames: int = 9,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "np",
        return_dict: bool = True,
        **kwargs,
    ):
        """Generate clips; see the class docstring. Extra keyword arguments go to ``WanPipeline.__call__``."""
        if prompt is not None or negative_prompt is not None:
            raise ValueError("this pipeline has no text encoder: pass prompt_embeds (see video_prompt_embeds)")
        if prompt_embeds is None:
            raise ValueError("prompt_embeds is required (see cachekit.reference.video.video_prompt_embeds)")
        if output_type not in ("latent", "pt", "np"):
            raise ValueError(f"output_type must be 'latent', 'pt' or 'np', got {output_type!r}")
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        if guidance_scale > 1.0 and negative_prompt_embeds is None:
            if self.condition_embedding is None:
                raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (no condition table attached)")
            negative_prompt_embeds = self.condition_embedding.null(prompt_embeds.shape[0]).to(prompt_embeds)
        # Wan rounds num_frames to ``k * vae_scale_factor_temporal + 1``; with a scale of 1 that rule
        # (``num_frames % 1 != 1`` is always true) would add one frame, so pre-compensate and drop the
        # warning it logs. The latents then have exactly ``num_frames`` frames.
        num_frames = max(int(num_frames), 1)
        p_t = int(self.transformer.config.patch_size[0])
        if num_frames % p_t:
            raise ValueError(f"num_frames must be a multiple of the transformer's temporal patch size {p_t}, "
                             f"got {num_frames}")
        with _DropFramesWarning():
            out = super().__call__(
            height=height, width=width, num_frames=num_frames - 1, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, output_type="latent", return_dict=False, **kwargs,
            )[0]
        video = out
        if output_type == "pt":
            video = frames_from_output(out)
        elif output_type == "np":
            video = frames_from_output(out).permute(0, 1, 3, 4, 2).cpu().float().numpy()
        if not return_dict:
            return (video,)
        return WanPipelineOutput(frames=video)


class _DropFramesWarning(logging.Filter):
    """Silences WanPipeline's "`num_frames - 1` has to be divisible by 1" warning for one call."""

    _logger = logging.getLogger("diffusers.pipelines.wan.pipeline_wan")

    def filter(self, record: logging.LogRecord) -> bool:
        return "has to be divisible by" not in record.getMessage()

    def __enter__(self):
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc):
        self._logger.removeFilter(self)
        return False


def frames_from_output(latents: torch.Tensor) -> torch.Tensor:
    """Pipeline latents ``(N, 1, F, H, W)`` in ``[-1, 1]`` -> frames ``(N, F, 1, H, W)`` in ``[0, 1]``.

    Accepts a :class:`WanPipelineOutput` or a tuple from the pipeline as well (with
    ``output_type="latent"``)."""
    if isinstance(latents, WanPipelineOutput):
        latents = latents.frames
    elif isinstance(latents, tuple):
        latents = latents[0]
    latents = torch.as_tensor(latents)
    if latents.ndim != 5:
        raise ValueError(f"expected latents of shape (N, C, F, H, W), got {tuple(latents.shape)}")
    return (latents.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous()


# --------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------
def build_transformer(config: dict[str, Any] | None = None) -> WanTransformer3DModel:
    """A freshly initialised transformer with the reference architecture (or ``config``)."""
    cfg = dict(DEFAULT_TRANSFORMER_CONFIG if config is None else config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["patch_size"] = tuple(cfg["patch_size"])
    return WanTransformer3DModel(**cfg)


def build_scheduler(config: dict[str, Any] | None = None) -> FlowMatchEulerDiscreteScheduler:
    return scheduler_from_config(FlowMatchEulerDiscreteScheduler, DEFAULT_SCHEDULER_CONFIG if config is None else config)


def _default_dir() -> pathlib.Path:
    from . import asset_path

    return asset_path(ASSET_DIR)


def _resolve(path: str | pathlib.Path | None) -> tuple[pathlib.Path, pathlib.Path]:
    return resolve_files(path, _default_dir())


def read_config(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory (default: the shipped model)."""
    return read_config_file(_resolve(path)[0], FORMAT, VideoWeightsError, _LABEL)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a shipped state dict into (transformer state, condition-embedding state)."""
    tr = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
    ce = {k[len("condition_embedding."):]: v for k, v in state.items() if k.startswith("condition_embedding.")}
    return tr, ce


def load_video_pipeline(
    path: str | pathlib.Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    verify_checksum: bool = True,
) -> MovingDigitsWanPipeline:
    """Load the shipped moving-digits Wan model (offline, safetensors only) as a pipeline.

    ``path`` is a model directory (holding ``config.json`` and ``model.safetensors``) or a
    ``.safetensors`` file next to its ``config.json``; default: the packaged
    ``assets/moving_digits_wan``. Every module is put in ``.eval()`` mode with gradients off.
    Raises :class:`VideoWeightsError` (a ``ValueError``) naming the file when the weight or config
    file is missing or corrupted.
    """
    cfg_file, weights_file = _resolve(path)
    cfg = read_config(cfg_file.parent)
    state = load_checked_state(weights_file, cfg, cfg_file, VideoWeightsError, _LABEL, verify_checksum)

    tr_state, ce_state = split_state(state)
    transformer = build_transformer(cfg["transformer"])
    cond = cfg.get("condition") or {}
    table = ConditionEmbedding(len(cond.get("contents", CONTENT_NAMES)), len(cond.get("directions", DIRECTION_NAMES)),
                               int(cfg["transformer"].get("text_dim", TEXT_DIM)))
    try:
        transformer.load_state_dict(tr_state, strict=True)
        table.load_state_dict(ce_state, strict=True)
    except RuntimeError as exc:
        raise VideoWeightsError(
            f"video reference model: weight file {weights_file} does not match the architecture in {cfg_file}: {exc}"
        ) from exc
    transformer = transformer.to(device=device)
    table = table.to(device=device)
    if dtype != torch.float32:
        transformer = transformer.to(dtype=dtype)
        table = table.to(dtype=dtype)
    transformer.eval().requires_grad_(False)
    table.eval().requires_grad_(False)

    pipe = MovingDigitsWanPipeline(transformer=transformer, scheduler=build_scheduler(cfg.get("scheduler")),
                                   condition_embedding=table)
    sampling = {**DEFAULT_SAMPLING, **(cfg.get("sampling") or {})}
    pipe.default_guidance_scale = float(sampling["guidance_scale"])
    pipe.default_num_inference_steps = int(sampling["num_inference_steps"])
    pipe.content_names = list(cond.get("contents", CONTENT_NAMES))
    pipe.direction_names = list(cond.get("directions", DIRECTION_NAMES))
    pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, nn.Module):
            module.eval()
    return pipe
