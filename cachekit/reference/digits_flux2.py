"""Class-conditional Flux.2-layout transformer on scikit-learn's 8x8 digits: model, pipeline and loader.

A third reference model, of another family than the digits DiT (:mod:`.digits`) and the
moving-digits Wan (:mod:`.video`): a stock :class:`diffusers.Flux2Transformer2DModel` (double-stream
blocks, then single-stream blocks, joint attention over text + image tokens, 4-axis RoPE ids, no
guidance embedding) trained with rectified flow (flow matching) and sampled with
:class:`diffusers.FlowMatchEulerDiscreteScheduler`.

* Image tokens: the 8x8x1 image in ``[-1, 1]`` is cut into 2x2 patches packed into channels, as
  Flux.2 packs its latents (``Flux2Pipeline._patchify_latents`` then ``_pack_latents``): 16 tokens of
  4 channels, RoPE ids ``(t=0, h, w, l=0)`` on a 4x4 grid.
* "Text" tokens: the class (10 digits, plus a null class 10 for classifier-free guidance) is looked
  up in :class:`DigitsClassEmbedder`, a tiny learned table giving ``num_tokens`` tokens of
  ``joint_attention_dim`` channels each, fed as ``encoder_hidden_states`` with ids
  ``(0, 0, 0, l)``. The transformer itself is the unmodified diffusers class.
* Guidance: "true CFG" as Flux.2 Klein / Qwen-Image do it, two transformer forwards per step
  (conditional inside ``transformer.cache_context("cond")``, null class inside
  ``cache_context("uncond")``), combined as ``uncond + s * (cond - uncond)``.
* Flow convention (diffusers'): ``x_sigma = (1 - sigma) * x0 + sigma * noise``, the model predicts
  the velocity ``noise - x0`` and is called with ``timestep = sigma`` (the pipeline passes
  ``scheduler_timestep / 1000``; the transformer multiplies by 1000 itself).

Weights: one safetensors file holding ``transformer.*`` and ``class_embedder.*`` (never pickle),
checked against the SHA-256 recorded in ``config.json``; problems raise
:class:`~cachekit.reference.digits.ReferenceWeightsError` naming the file.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .digits import ReferenceWeightsError
from .weights import (CONFIG_NAME, WEIGHTS_NAME, load_checked_state, read_config_file, resolve_files,
                      scheduler_from_config, sha256_file)

__all__ = [
    "DigitsFlux2Pipeline",
    "DigitsClassEmbedder",
    "ReferenceWeightsError",
    "load_digits_flux2_pipeline",
    "build_transformer",
    "build_class_embedder",
    "build_scheduler",
    "read_config",
    "images_to_tokens",
    "tokens_to_images",
    "image_ids",
    "text_ids",
    "sha256_file",
    "DEFAULT_TRANSFORMER_CONFIG",
    "DEFAULT_CLASS_EMBEDDER_CONFIG",
    "DEFAULT_SCHEDULER_CONFIG",
    "DEFAULT_SAMPLING",
    "FORMAT",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

_LABEL = "digits Flux.2 reference model"
FORMAT = "cachekit-digits-flux2/1"
IMAGE_SIZE = 8
PATCH = 2  # 2x2 pixel patches packed into channels, as Flux.2 packs its latents

#: Architecture (kwargs of Flux2Transformer2DModel): 2 double-stream + 6 single-stream blocks,
#: width 128 (4 heads x 32), SwiGLU MLP ratio 3; 16 image tokens of 4 channels; 4 class tokens of
#: 64 channels; RoPE over 4 axes (t, h, w, l) of 8 dims each; no guidance embedding (true CFG).
DEFAULT_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": PATCH * PATCH,
    "out_channels": None,
    "num_layers": 2,
    "num_single_layers": 6,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": [8, 8, 8, 8],
    "rope_theta": 2000,
    "eps": 1e-6,
    "guidance_embeds": False,
}

#: The class -> "text" tokens table (10 digits + the null class 10).
DEFAULT_CLASS_EMBEDDER_CONFIG: dict[str, Any] = {"num_classes": 10, "num_tokens": 4, "dim": 64}

#: Plain Euler flow matching over sigma 1 -> 0, no shift (8x8 pixels need no resolution shift).
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}

DEFAULT_SAMPLING: dict[str, Any] = {
    "num_inference_steps": 28,
    "guidance_scale": 4.0,
    "default_class_labels": list(range(10)) * 2,
    "image_size": IMAGE_SIZE,
    "pixel_range": [-1.0, 1.0],
}


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------
def images_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 8, 8) -> (B, 16, 4): 2x2 patches packed into channels (Flux.2's patchify + pack)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 1, 3, 5, 2, 4)
    x = x.reshape(b, c * PATCH * PATCH, (h // PATCH) * (w // PATCH))
    return x.permute(0, 2, 1)


def tokens_to_images(tokens: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Inverse of :func:`images_to_tokens`: (B, 16, 4) -> (B, 1, 8, 8)."""
    b, n, ch = tokens.shape
    g = size // PATCH
    c = ch // (PATCH * PATCH)
    x = tokens.permute(0, 2, 1).reshape(b, c, PATCH, PATCH, g, g)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c, size, size)


def image_ids(size: int = IMAGE_SIZE, device: torch.device | str | None = None) -> torch.Tensor:
    """RoPE ids (16, 4) of the image tokens: (t=0, h, w, l=0) on the 4x4 patch grid."""
    g = size // PATCH
    one = torch.arange(1)
    return torch.cartesian_prod(one, torch.arange(g), torch.arange(g), one).to(device)


def text_ids(num_tokens: int, device: torch.device | str | None = None) -> torch.Tensor:
    """RoPE ids (L, 4) of the class tokens: (0, 0, 0, l), as Flux.2 numbers its text tokens."""
    one = torch.arange(1)
    return torch.cartesian_prod(one, one, one, torch.arange(num_tokens)).to(device)


# --------------------------------------------------------------------------------------------
# Class embedder
# --------------------------------------------------------------------------------------------
class DigitsClassEmbedder(ModelMixin, ConfigMixin):
    """Class label -> ``num_tokens`` learned "text" tokens of ``dim`` channels (the text encoder of
    this model). Label ``num_classes`` is the null class used for classifier-free guidance."""

    @register_to_config
    def __init__(self, num_classes: int = 10, num_tokens: int = 4, dim: int = 64):
        super().__init__()
        self.embedding = torch.nn.Embedding(num_classes + 1, num_tokens * dim)
        torch.nn.init.normal_(self.embedding.weight, std=1.0)

    @property
    def null_class_label(self) -> int:
        return int(self.config.num_classes)

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        out = self.embedding(class_labels.long())
        return out.view(len(class_labels), self.config.num_tokens, self.config.dim)


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------
class DigitsFlux2Pipeline(DiffusionPipeline):
    r"""Class-conditional 8x8 digits with a Flux.2-layout transformer and flow-matching Euler sampling.

    Components: ``transformer`` (:class:`diffusers.Flux2Transformer2DModel`), ``scheduler``
    (:class:`diffusers.FlowMatchEulerDiscreteScheduler`), ``class_embedder``
    (:class:`DigitsClassEmbedder`). One ``scheduler.step`` per step; with guidance (``> 1``) two
    transformer forwards per step: conditional (``cache_context("cond")``) then null class
    (``cache_context("uncond")``), like ``Flux2KleinPipeline``.

    Output: ``output_type="pt"`` (default) gives a ``(B, 1, 8, 8)`` float tensor in ``[0, 1]``;
    ``"np"`` a ``(B, 8, 8, 1)`` array; ``"pil"`` a list of grayscale PIL images.
    """

    model_cpu_offload_seq = "class_embedder->transformer"

    def __init__(self, transformer: Flux2Transformer2DModel, scheduler: FlowMatchEulerDiscreteScheduler,
                 class_embedder: DigitsClassEmbedder):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, class_embedder=class_embedder)
        self.default_guidance_scale = float(DEFAULT_SAMPLING["guidance_scale"])
        self.default_num_inference_steps = int(DEFAULT_SAMPLING["num_inference_steps"])

    @property
    def null_class_label(self) -> int:
        """Label of the unconditional (null) class used for classifier-free guidance."""
        return self.class_embedder.null_class_label

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Pixel space: ``[-1, 1] -> [0, 1]`` (no VAE)."""
        return (samples / 2 + 0.5).clamp(0, 1)

    def _forward(self, latents, timestep, prompt_embeds, txt_ids, img_ids, name: str) -> torch.Tensor:
        ctx = getattr(self.transformer, "cache_context", None)
        with ctx(name) if ctx is not None else contextlib.nullcontext():
            return self.transformer(hidden_states=latents, timestep=timestep, guidance=None,
                                    encoder_hidden_states=prompt_embeds, txt_ids=txt_ids, img_ids=img_ids,
                                    return_dict=False)[0]

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[int] | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str | None = "pt",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one 8x8 digit per label.

        Args:
            class_labels: digits 0..9.
            num_inference_steps: Euler steps (``None``: the shipped default, 28).
            guidance_scale: classifier-free guidance scale, two forwards per step when ``> 1``;
                ``None``: the shipped default (:attr:`default_guidance_scale`).
            generator: torch generator(s) for the initial noise.
            output_type: ``"pt"``, ``"np"`` or ``"pil"``.
            return_dict: return an :class:`~diffusers.ImagePipelineOutput` rather than a tuple.
        """
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        device = self._execution_device
        dtype = self.transformer.dtype
        labels = torch.as_tensor(class_labels, device=device).reshape(-1).long()
        null = self.null_class_label
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= null):
            raise ValueError(f"class_labels must lie in [0, {null - 1}], got {labels.tolist()}")
        batch_size = len(labels)
        do_cfg = guidance_scale > 1

        prompt_embeds = self.class_embedder(labels).to(dtype)
        negative_embeds = self.class_embedder(torch.full_like(labels, null)).to(dtype) if do_cfg else None
        txt_ids = text_ids(prompt_embeds.shape[1], device)
        size = IMAGE_SIZE
        img_ids = image_ids(size, device)

        noise = randn_tensor((batch_size, 1, size, size), generator=generator, device=device, dtype=dtype)
        latents = images_to_tokens(noise)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            timestep = t.expand(batch_size).to(dtype) / 1000
            pred = self._forward(latents, timestep, prompt_embeds, txt_ids, img_ids, "cond")
            if do_cfg:
                uncond = self._forward(latents, timestep, negative_embeds, txt_ids, img_ids, "uncond")
                pred = uncond + guidance_scale * (pred - uncond)
            latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]

        samples = self.decode(tokens_to_images(latents, size).float())
        if output_type != "pt":
            samples = samples.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                samples = self.numpy_to_pil(samples)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (samples,)
        return ImagePipelineOutput(images=samples)


# --------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------
def _kwargs(config: dict[str, Any] | None, default: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(default if config is None else config)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_transformer(config: dict[str, Any] | None = None) -> Flux2Transformer2DModel:
    """A freshly initialised transformer with the reference architecture (or ``config``)."""
    cfg = _kwargs(config, DEFAULT_TRANSFORMER_CONFIG)
    if "axes_dims_rope" in cfg:
        cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
    return Flux2Transformer2DModel(**cfg)


def build_class_embedder(config: dict[str, Any] | None = None) -> DigitsClassEmbedder:
    return DigitsClassEmbedder(**_kwargs(config, DEFAULT_CLASS_EMBEDDER_CONFIG))


def build_scheduler(config: dict[str, Any] | None = None) -> FlowMatchEulerDiscreteScheduler:
    cfg = DEFAULT_SCHEDULER_CONFIG if config is None else config
    return scheduler_from_config(FlowMatchEulerDiscreteScheduler, cfg)


def _files(path: str | pathlib.Path | None) -> tuple[pathlib.Path, pathlib.Path]:
    """(config file, weight file) of ``path``, or of the checkout's ``reference_weights/digits_flux2``
    (or ``$CACHEKIT_DATA/digits_flux2``) when None: these weights are not in the wheel."""
    if path is not None:
        return resolve_files(path, pathlib.Path(path))
    from . import checkout_weights

    return resolve_files(None, checkout_weights("digits_flux2"))


def read_config(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory (default: the checkout's model)."""
    cfg_file, _ = _files(path)
    return read_config_file(cfg_file, FORMAT, ReferenceWeightsError, _LABEL)


def load_digits_flux2_pipeline(
    path: str | pathlib.Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    verify_checksum: bool = True,
) -> DigitsFlux2Pipeline:
    """Load the digits Flux.2 reference model (offline, safetensors only) as a :class:`DigitsFlux2Pipeline`.

    ``path``: a model directory (``config.json`` + ``model.safetensors``) or a ``.safetensors`` file
    next to its ``config.json``; default: the repository checkout's ``reference_weights/digits_flux2``
    (benchmark-only, not in the wheel; ``$CACHEKIT_DATA/digits_flux2`` when set). Every component is
    in ``eval()`` mode with gradients off. Raises :class:`ReferenceWeightsError` (a ``ValueError``)
    naming the file when the weight or config file is missing, corrupted or mismatched.
    """
    cfg_file, weights_file = _files(path)
    cfg = read_config_file(cfg_file, FORMAT, ReferenceWeightsError, _LABEL)
    state = load_checked_state(weights_file, cfg, cfg_file, ReferenceWeightsError, _LABEL, verify_checksum)
    transformer = build_transformer(cfg["transformer"])
    class_embedder = build_class_embedder(cfg.get("class_embedder"))
    parts: dict[str, dict[str, Any]] = {"transformer": {}, "class_embedder": {}}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head not in parts:
            raise ReferenceWeightsError(f"{_LABEL}: weight file {weights_file} holds an unexpected tensor {key!r}")
        parts[head][rest] = value
    try:
        transformer.load_state_dict(parts["transformer"], strict=True)
        class_embedder.load_state_dict(parts["class_embedder"], strict=True)
    except RuntimeError as exc:
        raise ReferenceWeightsError(
            f"{_LABEL}: weight file {weights_file} does not match the architecture in {cfg_file}: {exc}") from exc
    pipe = DigitsFlux2Pipeline(transformer=transformer, scheduler=build_scheduler(cfg.get("scheduler")),
                               class_embedder=class_embedder)
    sampling = {**DEFAULT_SAMPLING, **(cfg.get("sampling") or {})}
    pipe.default_guidance_scale = float(sampling["guidance_scale"])
    pipe.default_num_inference_steps = int(sampling["num_inference_steps"])
    pipe.to(device)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    for module in (transformer, class_embedder):
        module.eval()
        module.requires_grad_(False)
    return pipe
