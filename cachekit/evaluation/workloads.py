"""What to run: a model plus the way to turn inputs into outputs, for ``cachekit eval | sweep | tune``.

A ``Workload`` hides where the model came from (a shipped reference model, a local diffusers folder,
a Hub id already in the local cache, or a ``module:function`` of the user's) behind one call:
``generate(inputs, seed) -> tensor in [0, 1]`` shaped (N, C, H, W) for images or (N, F, C, H, W)
for video.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

__all__ = ["Workload", "WorkloadError", "load_workload", "pipeline_workload", "read_inputs"]


class WorkloadError(ValueError):
    """The model or the inputs cannot be loaded; one line saying which and why."""


@dataclass
class Workload:
    """A model and how to run it.

    Attributes:
        name: shown in reports.
        kind: "image" or "video".
        target: what ``cachekit.apply`` receives (a pipeline or a module).
        generate: (inputs, seed) -> outputs in [0, 1].
        default_inputs: used when the command line gives none.
        steps: denoising steps (None: the model's own default).
        extra_metrics: optional (outputs, inputs) -> {name: value}, e.g. class recognition.
    """

    name: str
    kind: str
    target: Any
    generate: Callable[[Sequence, int], torch.Tensor]
    default_inputs: list = field(default_factory=list)
    steps: int | None = None
    extra_metrics: Callable[[torch.Tensor, Sequence], dict] | None = None


def _to_unit_tensor(result: Any) -> torch.Tensor:
    """A pipeline's output as float in [0, 1]: (N, C, H, W) images or (N, F, C, H, W) video."""
    frames = getattr(result, "frames", None)
    images = getattr(result, "images", None)
    x = frames if frames is not None else images if images is not None else result
    if isinstance(x, (list, tuple)):
        x = torch.stack([torch.as_tensor(v) for v in x])
    x = torch.as_tensor(x).float()
    if x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC numpy images
        x = x.permute(0, 3, 1, 2)
    if x.dim() == 5 and x.shape[-1] in (1, 3) and x.shape[2] not in (1, 3):  # N F H W C video
        x = x.permute(0, 1, 4, 2, 3)
    if x.dim() not in (4, 5):
        raise WorkloadError(f"pipeline output has shape {tuple(x.shape)}; expected images (N, C, H, W) or video (N, F, C, H, W)")
    return x.clamp(0, 1)


def pipeline_workload(pipe: Any, name: str, steps: int | None = None) -> Workload:
    """A text-to-image/video diffusers pipeline driven by prompts."""
    from ..adapters import find_model

    find_model(pipe)  # raises a one-line error for anything that is not a pipeline or module
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)

    def generate(prompts: Sequence, seed: int) -> torch.Tensor:
        kw = {"prompt": list(prompts), "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "pt"}
        if steps is not None:
            kw["num_inference_steps"] = steps
        with torch.no_grad():
            return _to_unit_tensor(pipe(**kw))

    kind = "video" if "video" in type(pipe).__name__.lower() or "wan" in type(pipe).__name__.lower() else "image"
    return Workload(name, kind, pipe, generate, ["a photo of a cat"], steps)


def _reference(name: str, steps: int | None) -> Workload:
    if name == "digits":
        from .reference_models import digits_workload
        return digits_workload(steps)
    if name == "video":
        from .reference_models import video_workload
        return video_workload(steps)
    raise WorkloadError(f"unknown reference model {name!r}; shipped: digits, video")


REFERENCE_MODELS = ("digits", "video")


def load_workload(spec: str, steps: int | None = None) -> Workload:
    """``digits`` (a shipped reference model), ``path/to/diffusers_folder``, ``org/name`` (a Hub id
    already in the local cache; never downloaded here), or ``package.module:function`` returning a
    pipeline or a ``Workload``."""
    if spec in REFERENCE_MODELS:
        return _reference(spec, steps)
    if ":" in spec and not Path(spec).exists():
        mod_name, _, fn_name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise WorkloadError(f"cannot load model {spec!r}: {e}") from None
        obj = fn()
        return obj if isinstance(obj, Workload) else pipeline_workload(obj, spec, steps)
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise WorkloadError("loading a diffusers model needs diffusers: pip install 'cachekit[diffusers]'") from None
    if Path(spec).is_dir():
        pipe = DiffusionPipeline.from_pretrained(spec, local_files_only=True)
        return pipeline_workload(pipe, spec, steps)
    if spec.count("/") == 1 and not Path(spec).exists():
        try:
            pipe = DiffusionPipeline.from_pretrained(spec, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - huggingface_hub raises several types here
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise WorkloadError(f"model {spec!r} is not in the local Hugging Face cache"
                                f"{' (HF_HUB_OFFLINE=1)' if offline else ''}; cachekit never downloads: "
                                f"fetch it first ({type(e).__name__})") from None
        return pipeline_workload(pipe, spec, steps)
    raise WorkloadError(f"unknown model {spec!r}: give a reference name ({', '.join(REFERENCE_MODELS)}), "
                        f"a diffusers folder, a cached Hub id, or module:function")


def read_inputs(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"cannot read prompts file {path}: {e.strerror if isinstance(e, OSError) else e}") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise WorkloadError(f"prompts file {path} has no prompts")
    return prompts
