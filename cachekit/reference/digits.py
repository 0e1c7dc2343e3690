"""Class-conditional pixel-space DiT on scikit-learn's 8x8 digits: model, pipeline and loader.

The transformer is a stock :class:`diffusers.DiTTransformer2DModel` (``ada_norm_zero``) working
directly on 8x8x1 images (patch size 1, 64 tokens). :class:`DigitsDiTPipeline` is a thin subclass of
:class:`diffusers.DiTPipeline`: same scheduler loop, classifier-free guidance batched in one
transformer forward (conditional half first, null-class half second), progress bar, ``generator``,
``num_inference_steps`` (default 50) and ``output_type``; only what must change for pixel space
changes: there is no VAE (decoding is the identity followed by ``[-1, 1] -> [0, 1]``) and the null
class is ``transformer.config.num_embeds_ada_norm`` (10 here) instead of the hard-coded 1000.

Weights are safetensors only (never pickle) and are checked against the SHA-256 recorded in
``config.json``; any problem with the weight or config file raises :class:`ReferenceWeightsError`
whose message names the file.
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch
from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .weights import (CONFIG_NAME, WEIGHTS_NAME, load_checked_state, read_config_file, resolve_files,
                      scheduler_from_config, sha256_file)
from ..errors import ReferenceWeightsError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = [
    "DigitsDiTPipeline",
    "ReferenceWeightsError",
    "load_digits_pipeline",
    "load_digits_transformer",
    "build_transformer",
    "build_scheduler",
    "read_config",
    "sha256_file",
    "DEFAULT_CLASS_LABELS",
    "DEFAULT_TRANSFORMER_CONFIG",
    "DEFAULT_SCHEDULER_CONFIG",
    "DEFAULT_SAMPLING",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

_LABEL = "digits reference model"
FORMAT = "cachekit-digits-dit/1"

#: Default batch of class labels: each digit twice -> 20 images, 40 rows per transformer forward
#: with classifier-free guidance.
DEFAULT_CLASS_LABELS: list[int] = list(range(10)) * 2

#: Architecture (kwargs of DiTTransformer2DModel). 8 blocks, width 128 (4 heads x 32), patch 1 on
#: 8x8x1 images -> 64 tokens; 10 classes (+1 null embedding for CFG, index 10).
DEFAULT_TRANSFORMER_CONFIG: dict[str, Any] = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 8,
    "dropout": 0.0,
    "norm_num_groups": 1,
    "attention_bias": True,
    "sample_size": 8,
    "patch_size": 1,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 10,
    "upcast_attention": False,
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-5,
}

#: DDIM with DiT's linear beta schedule; clip_sample=True because samples live in pixel space [-1, 1].
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

DEFAULT_SAMPLING: dict[str, Any] = {
    "num_inference_steps": 50,
    "guidance_scale": 2.0,
    "default_class_labels": DEFAULT_CLASS_LABELS,
    "image_size": 8,
    "pixel_range": [-1.0, 1.0],
}


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------
class DigitsDiTPipeline(DiTPipeline):
    r"""Pixel-space :class:`~diffusers.DiTPipeline` for the 8x8 digits reference model.

    Differences from the stock pipeline, and nothing else:

    * no ``vae`` component: the transformer denoises pixels in ``[-1, 1]``; decoding maps them to
      ``[0, 1]``;
    * the null label used for classifier-free guidance is ``transformer.config.num_embeds_ada_norm``
      (the index of the CFG embedding in diffusers' ``LabelEmbedding``), not 1000;
    * ``guidance_scale=None`` means the model's shipped default (:attr:`default_guidance_scale`).

    Output: ``output_type="pt"`` gives a ``(B, 1, 8, 8)`` float tensor in ``[0, 1]``; ``"np"`` a
    ``(B, 8, 8, 1)`` array; ``"pil"`` (the diffusers default) a list of grayscale PIL images.
    """

    model_cpu_offload_seq = "transformer"

    def __init__(
        self,
        transformer: DiTTransformer2DModel,
        scheduler: DDIMScheduler,
        id2label: dict[int, str] | None = None,
    ):
        # DiTPipeline.__init__ registers a VAE; skip it and register only what exists.
        DiffusionPipeline.__init__(self)
        self.register_modules(transformer=transformer, scheduler=scheduler)
        if id2label is None:
            names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
            id2label = {i: f"{i}, {n}" for i, n in enumerate(names)}
        self.labels = {}
        for key, value in id2label.items():
            for label in value.split(","):
                self.labels[label.strip()] = int(key)
        self.labels = dict(sorted(self.labels.items()))
        self.default_guidance_scale = float(DEFAULT_SAMPLING["guidance_scale"])

    @property
    def null_class_label(self) -> int:
        """Label index of the unconditional (null) embedding used for classifier-free guidance."""
        return int(self.transformer.config.num_embeds_ada_norm)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Pixel space: ``[-1, 1] -> [0, 1]`` (the stock pipeline runs the VAE here)."""
        return (samples / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[int],
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate digits. Same arguments and loop as :meth:`diffusers.DiTPipeline.__call__`.

        Args:
            class_labels: digits 0..9 to generate, one image each.
            guidance_scale: classifier-free guidance scale; enabled when ``> 1``. ``None`` uses
                :attr:`default_guidance_scale` (from the shipped config).
            generator: torch generator(s) for the initial noise.
            num_inference_steps: scheduler steps (default 50).
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict: return an :class:`~diffusers.ImagePipelineOutput` rather than a tuple.
        """
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        labels = torch.as_tensor(class_labels, device=self._execution_device).reshape(-1).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.null_class_label):
            raise ValueError(f"class_labels must lie in [0, {self.null_class_label - 1}], got {labels.tolist()}")

        batch_size = len(labels)
        latent_size = self.transformer.config.sample_size
        latent_channels = self.transformer.config.in_channels

        latents = randn_tensor(
            shape=(batch_size, latent_channels, latent_size, latent_size),
            generator=generator,
            device=self._execution_device,
            dtype=self.transformer.dtype,
        )
        latent_model_input = torch.cat([latents] * 2) if guidance_scale > 1 else latents

        class_null = torch.full((batch_size,), self.null_class_label, device=self._execution_device, dtype=torch.long)
        class_labels_input = torch.cat([labels, class_null], 0) if guidance_scale > 1 else labels

        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            if guidance_scale > 1:
                half = latent_model_input[: len(latent_model_input) // 2]
                latent_model_input = torch.cat([half, half], dim=0)
            latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)

            timesteps = t
            if not torch.is_tensor(timesteps):
                dtype = torch.float64 if isinstance(timesteps, float) else torch.int64
                timesteps = torch.tensor([timesteps], dtype=dtype, device=latent_model_input.device)
            elif len(timesteps.shape) == 0:
                timesteps = timesteps[None].to(latent_model_input.device)
            timesteps = timesteps.expand(latent_model_input.shape[0])
            noise_pred = self.transformer(
                latent_model_input, timestep=timesteps, class_labels=class_labels_input
            ).sample

            if guidance_scale > 1:
                eps, rest = noise_pred[:, :latent_channels], noise_pred[:, latent_channels:]
                cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
                half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
                eps = torch.cat([half_eps, half_eps], dim=0)
                noise_pred = torch.cat([eps, rest], dim=1)

            if self.transformer.config.out_channels // 2 == latent_channels:
                model_output, _ = torch.split(noise_pred, latent_channels, dim=1)
            else:
                model_output = noise_pred

            latent_model_input = self.scheduler.step(model_output, t, latent_model_input).prev_sample

        if guidance_scale > 1:
            latents, _ = latent_model_input.chunk(2, dim=0)
        else:
            latents = latent_model_input

        samples = self.decode(latents)

        if output_type != "pt":
            samples = samples.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                samples = self.numpy_to_pil(samples)

        self.maybe_free_model_hooks()

        if not return_dict:
            return (samples,)
        return ImagePipelineOutput(images=samples)


# --------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------
def build_transformer(config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """A freshly initialised transformer with the reference architecture (or ``config``)."""
    cfg = dict(DEFAULT_TRANSFORMER_CONFIG if config is None else config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return DiTTransformer2DModel(**cfg)


def build_scheduler(config: dict[str, Any] | None = None) -> DDIMScheduler:
    return scheduler_from_config(DDIMScheduler, DEFAULT_SCHEDULER_CONFIG if config is None else config)


def _default_dir() -> pathlib.Path:
    from . import asset_path

    return asset_path("digits_dit")


def _resolve(path: str | pathlib.Path | None) -> tuple[pathlib.Path, pathlib.Path]:
    return resolve_files(path, _default_dir())


def read_config(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory (default: the shipped model)."""
    return read_config_file(_resolve(path)[0], FORMAT, ReferenceWeightsError, _LABEL)


def load_digits_transformer(
    path: str | pathlib.Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    verify_checksum: bool = True,
) -> tuple[DiTTransformer2DModel, dict[str, Any]]:
    """Load the transformer (in eval mode) and the parsed config. Raises :class:`ReferenceWeightsError`."""
    cfg_file, weights_file = _resolve(path)
    cfg = read_config(cfg_file.parent)
    state = load_checked_state(weights_file, cfg, cfg_file, ReferenceWeightsError, _LABEL, verify_checksum)

    model = build_transformer(cfg["transformer"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ReferenceWeightsError(
            f"digits reference model: weight file {weights_file} does not match the architecture in {cfg_file}: {exc}"
        ) from exc
    model = model.to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    model.eval()
    model.requires_grad_(False)
    return model, cfg


def load_digits_pipeline(
    path: str | pathlib.Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DigitsDiTPipeline:
    """Load the shipped digits DiT (offline, safetensors only) as a :class:`DigitsDiTPipeline`.

    ``path`` is a model directory (holding ``config.json`` and ``model.safetensors``) or a
    ``.safetensors`` file next to its ``config.json``; default: the packaged ``assets/digits_dit``.
    Raises :class:`ReferenceWeightsError` (a ``ValueError``) naming the file when the weight or
    config file is missing or corrupted.
    """
    transformer, cfg = load_digits_transformer(path, device=device, dtype=dtype)
    scheduler = build_scheduler(cfg.get("scheduler"))
    pipe = DigitsDiTPipeline(transformer=transformer, scheduler=scheduler)
    sampling = {**DEFAULT_SAMPLING, **(cfg.get("sampling") or {})}
    pipe.default_guidance_scale = float(sampling["guidance_scale"])
    pipe.default_num_inference_steps = int(sampling["num_inference_steps"])
    pipe.to(device)
    transformer.eval()
    return pipe
