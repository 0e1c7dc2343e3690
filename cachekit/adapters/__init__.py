"""Find the model and its blocks in a target: a diffusers pipeline, a diffusers model, or any module.

Lookup order for a model: a ``layout=`` given by the user; the registered layout of its exact class
(``registry.py``: the built-ins of ``known.py`` and ``cachekit.register_layout``); else the one
``nn.ModuleList`` of same-class blocks it holds (ambiguity is an error that lists the candidates).
Sub-block units: the layout's ``units``, else the block class's (``known.BLOCKS``), else the whole
block is one unit.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .base import BlockIO, BlockUnits, ModelLayout, UnsupportedModelError, get_path, qualname
from .discover import _has_attention, layout_source
from .known import BLOCKS
from .registry import is_registered, layout_for, register_layout, unregister_layout

__all__ = ["BlockIO", "BlockUnits", "ModelLayout", "UnsupportedModelError", "Block", "Resolved", "resolve",
           "find_model", "find_denoisers", "denoiser_span", "qualname", "Unit", "find_units", "segment_blocks", "model_fingerprint", "register_layout",
           "unregister_layout", "NeedsDiscovery", "layout_source"]


class NeedsDiscovery(UnsupportedModelError):
    """No layout is registered for the model's class and none was given: its blocks are found
    from its first call (``discover.py``)."""


@dataclass(frozen=True)
class Block:
    """One transformer block of a resolved target: dotted name relative to the model, the module,
    its streams, and its sub-block units when the layout names them (else None: by block class)."""

    name: str
    module: nn.Module
    io: BlockIO
    units: BlockUnits | None = None


@dataclass(frozen=True)
class Resolved:
    """A target taken apart: the model that owns the blocks, the blocks (dotted names relative to
    the model), the scheduler when the target is a pipeline."""

    model: nn.Module
    layout: ModelLayout
    blocks: tuple[Block, ...]
    scheduler: Any = None
    pipeline: Any = None


def _is_pipeline(obj: Any) -> bool:
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "components", None), dict)


def _denoiser(module: nn.Module) -> nn.Module:
    """The module called once per denoising step inside ``module``: itself when its class has a
    registered layout; else the one submodule that has; else the innermost module around the single
    block list whose forward takes a ``timestep`` (a policy wrapper's ``.model``); else itself."""
    if is_registered(module):
        return module
    known = [m for m in module.modules() if is_registered(m)]
    if len(known) == 1:
        return known[0]
    cands = _candidate_lists(module)
    if len(cands) == 1:
        parts = cands[0][0].split(".")
        for k in range(len(parts) - 1, -1, -1):
            anc = module.get_submodule(".".join(parts[:k]))
            if "timestep" in inspect.signature(anc.forward).parameters:
                return anc
    return module


_DENOISER_NAME = re.compile(r"^transformer(_\d+)?$")


def find_denoisers(target: Any) -> list[tuple[str, nn.Module]]:
    """A pipeline's denoisers, in the order its components list them: ``transformer`` and any
    ``transformer_2``, ``transformer_3``, ... that is a module (Wan 2.2's low-noise expert); empty
    for a module or a pipeline without them."""
    if isinstance(target, nn.Module) or not _is_pipeline(target):
        return []
    return [(k, v) for k, v in target.components.items() if _DENOISER_NAME.match(k) and isinstance(v, nn.Module)]


def denoiser_span(pipe: Any, name: str) -> Callable[[], int | None]:
    """How many steps of the current generation the denoiser ``name`` of ``pipe`` runs, asked at
    its first call: Wan 2.2's pipelines give ``transformer`` the timesteps >= ``boundary_ratio *
    num_train_timesteps`` and ``transformer_2`` the rest; otherwise unknown (None: to the end)."""

    def span() -> int | None:
        ratio = getattr(getattr(pipe, "config", None), "boundary_ratio", None)
        scheduler = getattr(pipe, "scheduler", None)
        timesteps = getattr(scheduler, "timesteps", None)
        train = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)
        if ratio is None or timesteps is None or train is None or name not in ("transformer", "transformer_2"):
            return None
        high = int((timesteps >= ratio * train).sum())
        return high if name == "transformer" else len(timesteps) - high

    return span


def find_model(target: Any, component: str | None = None) -> tuple[nn.Module, Any]:
    """(model, pipeline or None). A pipeline's model is ``component`` when given, else its
    ``transformer`` component, else the one component with a registered layout. A module's model:
    see ``_denoiser``."""
    if isinstance(target, nn.Module):
        return _denoiser(target), None
    if not _is_pipeline(target):
        raise UnsupportedModelError(
            f"cachekit.apply needs a diffusers pipeline or a torch.nn.Module, got {type(target).__name__}")
    if component is not None:
        return getattr(target, component), target
    transformer = getattr(target, "transformer", None)
    if isinstance(transformer, nn.Module):
        return transformer, target
    mods = {k: v for k, v in target.components.items() if isinstance(v, nn.Module)}
    known = [k for k, v in mods.items() if is_registered(v)]
    if len(known) == 1:
        return mods[known[0]], target
    raise UnsupportedModelError(
        f"{type(target).__name__} has no 'transformer' component; components: {', '.join(mods) or 'none'}")


def _candidate_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """ModuleLists of >= 2 modules of one class, not nested inside another such list."""
    found: list[tuple[str, nn.ModuleList]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) < 2:
            continue
        if len({type(m) for m in mod}) != 1:
            continue
        if any(name.startswith(prev + ".") for prev, _ in found):
            continue
        found.append((name, mod))
    return found


def _known_block_layout(model: nn.Module) -> ModelLayout | None:
    """The one list of blocks of a class whose streams are known (torch's transformer layers,
    diffusers' BasicTransformerBlock): no call needs observing."""
    cands = _candidate_lists(model)
    if len(cands) != 1:
        return None
    name, lst = cands[0]
    known = getattr(BLOCKS.get(qualname(lst[0])), "io", None)
    if known is None:
        # A model whose only container is this list, of attention-free blocks of one class (a toy):
        # nothing else could be the stack; the first argument is the stream (checked at the first
        # call: a block returning a tuple is refused there, with the BlockIO that describes it).
        containers = [m for m in model.modules() if isinstance(m, (nn.ModuleList, nn.Sequential))]
        first = next(iter(inspect.signature(lst[0].forward).parameters), None)
        if len(containers) != 1 or first is None or _has_attention(lst[0]):
            return None   # a transformer: what its blocks return is seen at its first call
        known = BlockIO((first,))
    params = inspect.signature(model.forward).parameters
    return ModelLayout((name,), (known,), "timestep" if "timestep" in params else None)


def resolve(target: Any, layout: ModelLayout | None = None, component: str | None = None) -> Resolved:
    model, pipe = find_model(target, component)
    layout = layout or layout_for(model) or _known_block_layout(model)
    if layout is None:
        name = type(model).__name__
        raise NeedsDiscovery(
            f"{name} has no registered layout: cachekit finds its blocks at its first call; to know them now, "
            f"print(cachekit.layout_source({name}, cachekit.propose_layout(model, **inputs))) and register it")
    blocks: list[Block] = []
    for k, path in enumerate(layout.block_lists):
        try:
            lst = get_path(model, path)
        except AttributeError:
            raise UnsupportedModelError(f"{type(model).__name__} has no block list {path!r}") from None
        if not isinstance(lst, (nn.ModuleList, nn.Sequential)):
            raise UnsupportedModelError(f"{type(model).__name__}.{path} is {type(lst).__name__}, not an nn.ModuleList")
        blocks += [Block(f"{path}.{j}", m, layout.io_for(k), layout.units_for(k)) for j, m in enumerate(lst)]
    if not blocks:
        raise UnsupportedModelError(f"{type(model).__name__}: the block lists {layout.block_lists} are empty")
    # A pipeline's scheduler, or a policy wrapper's: its set_timesteps starts each generation.
    scheduler = getattr(pipe if pipe is not None else target, "scheduler", None)
    if not callable(getattr(scheduler, "set_timesteps", None)):
        scheduler = None
    return Resolved(model, layout, tuple(blocks), scheduler, pipe)


def segment_blocks(resolved: Resolved) -> tuple[Block, ...]:
    """The blocks block-range methods cache: those of ``layout.segment_paths`` (see ``ModelLayout``)."""
    paths = resolved.layout.segment_paths
    if not paths:
        raise UnsupportedModelError(
            f"{type(resolved.model).__name__}: no run of its block lists carries one stream from block to block, so "
            f"block-range reuse cannot run on it{': ' + resolved.layout.note if resolved.layout.note else ''}; use "
            f"a unit-level config (the default, or FixedIntervalConfig(units=True))")
    return tuple(b for b in resolved.blocks if b.name.rsplit(".", 1)[0] in paths)


@dataclass(frozen=True)
class Unit:
    """A cacheable sub-block: ``owner.attr`` returns a branch output (before the residual add).

    Attributes:
        name: "<block name>.<kind>", e.g. "decoder.layers.3.cross_attn".
        owner: the module whose attribute is wrapped (the block, or the submodule itself).
        attr: "forward" for a submodule, else the block's method name (e.g. "_ff_block").
        kind: "self_attn", "cross_attn", "ffn", ..., or "block" for blocks without known units.
        layer: index of the block in execution order.
        additive: the block's ``BlockUnits.additive`` flag name, if any.
    """

    name: str
    owner: nn.Module
    attr: str
    kind: str
    layer: int
    additive: str | None = None


def find_units(blocks: tuple[Block, ...] | list[Block]) -> list[Unit]:
    units = []
    for i, b in enumerate(blocks):
        spec = b.units
        if spec is None:
            known = BLOCKS.get(qualname(b.module))
            spec = known.units if known is not None else None
        if spec is None:
            units.append(Unit(f"{b.name}.block", b.module, "forward", "block", i))
            continue
        found = [(kind, attr, _attr(b.module, attr)) for kind, attr in spec.units]
        if all(obj is None for _, _, obj in found):
            raise UnsupportedModelError(
                f"block {b.name} ({type(b.module).__name__}) has none of its unit attributes "
                f"{', '.join(a for _, a in spec.units)}; fix the layout's BlockUnits")
        for kind, attr, obj in found:
            if obj is None:
                continue
            if isinstance(obj, nn.Module):
                units.append(Unit(f"{b.name}.{kind}", obj, "forward", kind, i, spec.additive))
            elif "." in attr:
                raise UnsupportedModelError(f"block {b.name}: unit {attr!r} is not a submodule")
            else:
                units.append(Unit(f"{b.name}.{kind}", b.module, attr, kind, i, spec.additive))
    return units


def _attr(module: nn.Module, dotted: str) -> Any:
    obj: Any = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def model_fingerprint(model: nn.Module) -> str:
    """Class name + a hash of the architecture (config when the model has one, else parameter
    names and shapes): a calibrated plan is only valid for the model it was made on."""
    import hashlib
    import json

    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "items"):
        text = json.dumps({k: v for k, v in sorted(dict(cfg).items()) if not k.startswith("_")},
                          sort_keys=True, default=str)
    else:
        text = json.dumps([(n, list(p.shape)) for n, p in model.named_parameters()])
    return f"{type(model).__name__}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
