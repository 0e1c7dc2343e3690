"""Loading a shipped reference model's files safely: one place for the checks every model needs.

A model folder holds ``config.json`` (with a ``format`` tag and the weights' SHA-256) and
``model.safetensors``. Every failure is one error of the caller's class naming the file.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def sha256_file(path: str | pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_files(path: str | pathlib.Path | None, default_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(config file, weight file) for a model directory, a weight file, or None (the shipped model)."""
    p = default_dir if path is None else pathlib.Path(path)
    if p.suffix == ".safetensors":
        return p.parent / CONFIG_NAME, p
    return p / CONFIG_NAME, p / WEIGHTS_NAME


def read_config_file(cfg_file: pathlib.Path, fmt: str, error: type[Exception], label: str) -> dict[str, Any]:
    """The parsed config, checked for the expected format tag and a 'transformer' section."""
    if not cfg_file.is_file():
        raise error(f"{label}: config file not found: {cfg_file}")
    try:
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("format") != fmt or not isinstance(cfg.get("transformer"), dict):
            raise ValueError(f"expected format {fmt!r} with a 'transformer' section")
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{label}: config file {cfg_file} is corrupted: {exc}") from exc
    return cfg


def load_checked_state(weights_file: pathlib.Path, cfg: dict, cfg_file: pathlib.Path, error: type[Exception],
                       label: str, verify_checksum: bool = True) -> dict[str, torch.Tensor]:
    """The weights as a state dict: present, matching the recorded SHA-256, safetensors, finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_file.is_file():
        raise error(f"{label}: weight file not found: {weights_file}")
    expected = (cfg.get("weights") or {}).get("sha256")
    if verify_checksum and expected:
        actual = sha256_file(weights_file)
        if actual != expected:
            raise error(f"{label}: weight file {weights_file} is corrupted "
                        f"(sha256 {actual[:16]}... does not match {expected[:16]}... recorded in {cfg_file})")
    try:
        state = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{label}: weight file {weights_file} is corrupted or not safetensors: {exc}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise error(f"{label}: weight file {weights_file} holds non-finite values in {bad[:3]}")
    return state


def scheduler_from_config(scheduler_cls: type, config: dict[str, Any]) -> Any:
    """A diffusers scheduler of exactly ``scheduler_cls`` from a shipped config's ``scheduler``
    entry; another ``_class_name`` there is a one-line error."""
    cfg = dict(config)
    name = cfg.pop("_class_name", scheduler_cls.__name__)
    if name != scheduler_cls.__name__:
        raise ValueError(f"unsupported scheduler class {name!r} (expected {scheduler_cls.__name__})")
    return scheduler_cls.from_config(cfg)
