"""diffusers' own tiny transformer test configurations, run offline (tests/data/diffusers_configs.pt,
written by eval/harvest_diffusers_tests.py from diffusers' tests/models/transformers).

``build(name)`` makes the model (seeded, eval mode, zero-initialised parameters given small random
values so that no block is an identity and reuse is visible); ``calls(name, n)`` gives n forward
kwargs whose timestep moves from call to call, as a denoising loop's would.
"""

from __future__ import annotations

import copy
import importlib
import pathlib
import re

import torch

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "diffusers_configs.pt"
_cache: dict = {}

TIMESTEP_KEYS = ("timestep", "timesteps", "t", "vision_timesteps", "bb_ca_time", "decoder_noise_time")


def data() -> dict:
    if "d" not in _cache:
        _cache["d"] = torch.load(DATA, weights_only=False)   # our own file (see module docstring)
    return _cache["d"]


def names() -> list[str]:
    return list(data()["entries"])


def entry(name: str) -> dict:
    return data()["entries"][name]


def model_class(name: str) -> type:
    path = entry(name)["class"]
    mod, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(mod), cls)


_LAYERS = re.compile(r"^(num_)?(\w*_)?(layers|blocks)$|^num_\w*(layers|blocks)\w*$|^depth\w*$")


def deepened(init: dict) -> dict:
    """The config with every count of layers / blocks that is 1 made 2 (one-block lists hide whether
    a stack chains block to block)."""
    out = dict(init)
    for k, v in init.items():
        if _LAYERS.match(k) and isinstance(v, int) and not isinstance(v, bool) and v == 1:
            out[k] = 2
    return out


def build(name: str, deep: bool = False, seed: int = 0) -> torch.nn.Module:
    init = entry(name)["init"]
    init = deepened(init) if deep else dict(init)
    torch.manual_seed(seed)
    model = model_class(name)(**copy.deepcopy(init))
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            if p.is_floating_point() and p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.05)
    return model.eval()


def timestep_key(name: str) -> str | None:
    inputs = entry(name)["inputs"]
    return next((k for k in TIMESTEP_KEYS if k in inputs), None)


def _vary(t, k: int):
    if isinstance(t, torch.Tensor):
        if t.is_floating_point():
            return (t.abs() + 1.0) * (1.0 - k / 10)
        return ((t.abs() + 1) * (10 - k) // 10).to(t.dtype)
    if isinstance(t, (list, tuple)):
        return type(t)(_vary(x, k) for x in t)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return type(t)((abs(t) + 1) * (1.0 - k / 10))
    return t


def calls(name: str, n: int = 8) -> list[dict]:
    """n forward kwargs; the timestep differs from call to call (a denoising loop's calls)."""
    inputs = entry(name)["inputs"]
    key = timestep_key(name)
    out = []
    for k in range(n):
        kw = copy.deepcopy(inputs)
        if key is not None:
            kw[key] = _vary(inputs[key], k)
        out.append(kw)
    return out


def main_output(result) -> torch.Tensor:
    """The denoiser's prediction: the first tensor of what the model returned."""
    if isinstance(result, torch.Tensor):
        return result
    if hasattr(result, "to_tuple"):
        result = result.to_tuple()
    if isinstance(result, dict):
        result = tuple(result.values())
    for r in result:
        t = main_output(r) if not isinstance(r, torch.Tensor) and r is not None and not isinstance(r, (int, float, str)) else r
        if isinstance(t, torch.Tensor):
            return t
    raise TypeError(f"no tensor in {type(result).__name__}")


def outputs(result):
    """Every tensor the model returned, in order (for exact comparisons)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if hasattr(result, "to_tuple"):
        result = result.to_tuple()
    if isinstance(result, dict):
        result = list(result.values())
    if isinstance(result, (list, tuple)):
        return [t for r in result for t in outputs(r)]
    return []


@torch.no_grad()
def run(model: torch.nn.Module, kwargs_list: list[dict]) -> list[list[torch.Tensor]]:
    return [[t.clone() for t in outputs(model(**copy.deepcopy(kw)))] for kw in kwargs_list]


def same(a, b) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(p, q) for p, q in zip(x, y))
                                    for x, y in zip(a, b))
