"""``--model SPEC`` to a ``Workload``: a shipped reference model, a local diffusers folder, a Hub id
already in the local cache (never downloaded), or a user's ``package.module:function``."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from .reference_models import digits_workload, video_workload
from .workloads import Workload, WorkloadError, pipeline_workload

__all__ = ["load_workload", "REFERENCE_MODELS"]


def _reference(name: str, steps: int | None) -> Workload:
    if name == "digits":
        return digits_workload(steps)
    if name == "video":
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
