"""What to run: a model plus the way to turn inputs into outputs, for ``cachekit eval | sweep | tune``.

A ``Workload`` hides where the model came from (a shipped reference model, a local diffusers folder,
a Hub id already in the local cache, or a ``module:function`` of the user's: ``loading.py``) behind
one call:
``generate(inputs, seed) -> tensor in [0, 1]`` shaped (N, C, H, W) for images or (N, F, C, H, W)
for video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from ..errors import WorkloadError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = ["Workload", "WorkloadError", "pipeline_workload", "read_inputs", "chunks"]


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

    def runs(self, inputs: Sequence, seeds: Sequence[int], batch_size: int) -> list[Callable[[], torch.Tensor]]:
        """One callable per seed and batch of ``batch_size`` inputs, each one generation (what
        ``cachekit.record`` takes), in the order ``run_pass`` runs them."""
        return [(lambda c=c, s=s: self.generate(c, s)) for s in seeds for c in chunks(list(inputs), batch_size)]


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """``items`` in batches of ``size`` (the last may be shorter)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


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
