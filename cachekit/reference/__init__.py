"""Reference models shipped with cachekit (trained here, weights in ``assets/``): their loaders.

Modules:

* :mod:`~cachekit.reference.digits` -- the class-conditional digits DiT (served lazily from here);
* :mod:`~cachekit.reference.digits_flux2` -- the class-conditional digits Flux.2-layout model
  (``load_digits_flux2_pipeline``, served lazily from here; its weights are benchmark-only, not in
  the wheel: see :func:`checkout_weights`);
* :mod:`~cachekit.reference.video` -- the moving-digits Wan video model, with its condition
  vocabulary in :mod:`~cachekit.reference.video_conditions`;
* :mod:`~cachekit.reference.policy` -- the reference diffusion policy;
* :mod:`~cachekit.reference.weights` -- checked safetensors / config loading shared by the loaders.

How their outputs are judged and the policies' tasks are evaluation, not loading:
:mod:`cachekit.evaluation.judges` and :mod:`cachekit.evaluation.tasks` (``pointmass``, ``metaworld``;
the old paths ``cachekit.reference.judges`` / ``.pointmass`` / ``.metaworld`` still import).

The scripts that train these models and evaluate them from the command line are not part of the
package: they live in the top-level ``reference/`` folder of the repository (see its README).

Importing this package is lean: diffusers is imported only when a model is actually loaded.

    from cachekit.reference import load_digits_pipeline
    pipe = load_digits_pipeline()
    images = pipe(class_labels=[0, 1, 2], output_type="pt").images   # (3, 1, 8, 8) in [0, 1]
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import pathlib

__all__ = [
    "asset_path",
    "checkout_weights",
    "checkout_weights_path",
    "DATA_ENV",
    "load_digits_pipeline",
    "load_digits_transformer",
    "DigitsDiTPipeline",
    "ReferenceWeightsError",
    "DEFAULT_CLASS_LABELS",
    "load_digits_flux2_pipeline",
    "DigitsFlux2Pipeline",
]

# Names served lazily from cachekit.reference.digits (which imports diffusers).
_LAZY = {
    "load_digits_pipeline", "load_digits_transformer", "DigitsDiTPipeline",
    "ReferenceWeightsError", "DEFAULT_CLASS_LABELS",
}

# Names served lazily from cachekit.reference.digits_flux2 (which imports diffusers).
_LAZY_FLUX2 = {"load_digits_flux2_pipeline", "DigitsFlux2Pipeline"}


def asset_path(*parts: str) -> pathlib.Path:
    """Path of a shipped asset, e.g. ``asset_path("digits_dit", "model.safetensors")``.

    Looks in the installed package ``cachekit.assets`` first (the packaging maps the top-level
    ``assets/`` folder there); if that package does not exist, falls back to ``<repo root>/assets``
    computed from this file's location. The returned path need not exist.
    """
    try:
        root = importlib.resources.files("cachekit.assets")
    except ModuleNotFoundError:
        root = None
    if root is not None:
        target = root.joinpath(*parts)
        # files() may return a Traversable that is not a real path (zip install); materialise only
        # what we can address on disk.
        try:
            return pathlib.Path(str(target))
        except TypeError:  # pragma: no cover - exotic loaders
            pass
    return pathlib.Path(__file__).resolve().parents[2].joinpath("assets", *parts)


#: Environment variable naming a folder that holds the benchmark-only weights (one sub-folder per
#: model, as in the repository's ``reference_weights/``); unset, the checkout's own folder is used.
DATA_ENV = "CACHEKIT_DATA"


def checkout_weights_path(*parts: str) -> pathlib.Path:
    """Path of a benchmark-only reference model's files, e.g. ``checkout_weights_path("digits_flux2")``.

    The digits Flux.2 model and the Meta-World push / pick-place policies serve only the benchmarks
    and tests (18.0 of the wheel's 45.5 MB), so they are not shipped: they live in the repository's
    ``reference_weights/`` folder, or in the folder ``$CACHEKIT_DATA`` names. The returned path
    need not exist; :func:`checkout_weights` checks it.
    """
    root = os.environ.get(DATA_ENV)
    base = pathlib.Path(root) if root else pathlib.Path(__file__).resolve().parents[2] / "reference_weights"
    return base.joinpath(*parts)


def checkout_weights(name: str) -> pathlib.Path:
    """The folder of benchmark-only model ``name``; a one-line :class:`ReferenceWeightsError` naming
    the path and how to get it when it is absent (e.g. cachekit installed from a wheel, no checkout)."""
    from ..errors import ReferenceWeightsError

    path = checkout_weights_path(name)
    if not path.is_dir():
        raise ReferenceWeightsError(
            f"{name}: weights not found at {path}; they are not in the cachekit wheel (benchmarks only): "
            f"use a clone of the cachekit repository (reference_weights/{name}) or set {DATA_ENV} to a folder "
            f"holding {name}/")
    return path


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(".digits", __name__)
        return getattr(module, name)
    if name in _LAZY_FLUX2:
        module = importlib.import_module(".digits_flux2", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY | _LAZY_FLUX2)
