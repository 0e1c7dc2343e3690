"""Discovery: where the blocks of a model nobody registered are, from what one call executes.

A model class without a registered layout (a diffusers class released after this table, a user's
own DiT) is observed once (``observation.py``: every child of every ``nn.ModuleList`` /
``nn.Sequential`` and the direct children of those are wrapped on the instance, undone before
returning, and the model runs one call); this module judges what was seen. A list is a **block
stack** when, in that call:

- every one of its blocks ran, exactly once, in list order (lists that do not run, or run in part:
  conditional containers, MoE experts, are not);
- block k+1 took a tensor block k returned (the same object, or equal to it); the arguments that
  take them are the streams, in the block's return order (a one-block list: the arguments of the
  returned tensors' shapes);
- every tensor a block returns is one of its streams, and the main stream keeps its shape
  (projections, encoders that downsample, norms that are not chained, are not);
- its blocks hold an attention module (a chain of plain layers is not a transformer block).

Stacks are ordered by execution; two stacks whose blocks interleave (spatial / temporal
alternation) cannot be cut into segments and are refused. Sub-block units are the direct children
of a block called exactly once in every block call whose class or attribute names an attention or
a feed-forward module.

``cachekit.propose_layout(model, *args, **kwargs)`` (observing in ``runtime/observe.py``, judging
here) returns the ``ModelLayout`` and prints nothing;
``layout_source(model_class, layout)`` writes the ``register_layout`` call that fixes it.
Where discovery cannot decide, ``UnsupportedModelError`` lists every list it saw and why each was
left out, in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import BlockIO, BlockUnits, ModelLayout, UnsupportedModelError, qualname
from .observation import BlockCall, Observation

__all__ = ["layout_from_observation", "layout_source", "Observation"]

_ATTN = re.compile(r"attn|attention", re.I)
_FFN = re.compile(r"^(ff|ffn|mlp|feed_forward|feedforward|moe)(_|\d|$)|feedforward|mlp|ffn|moe|swiglu", re.I)
_STREAM_NAMES = ("hidden_states", "x", "hidden", "h", "tgt", "src", "sample", "latents")


def _tensors_of(out: Any) -> list[Any]:
    """A block's return as a list of positions (a tensor is one position)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def _links(out: Any, nxt: dict[str, Any]) -> dict[int, str]:
    """Output position -> argument name of the next block that took that very tensor (or an equal one)."""
    found: dict[int, str] = {}
    for p, o in enumerate(_tensors_of(out)):
        if not isinstance(o, torch.Tensor):
            continue
        same = [n for n, a in nxt.items() if a is o and n not in found.values()]
        if not same:
            same = [n for n, a in nxt.items() if isinstance(a, torch.Tensor) and a.shape == o.shape
                    and a.dtype == o.dtype and n not in found.values() and torch.equal(a, o)]
        if same:
            found[p] = same[0]
    return found


def _by_shape(out: Any, args: dict[str, Any]) -> dict[int, str]:
    """Output position -> argument of the same shape and dtype (one-block lists: no next block)."""
    found: dict[int, str] = {}
    used: set[str] = set()
    for p, o in enumerate(_tensors_of(out)):
        if not isinstance(o, torch.Tensor):
            continue
        cands = [n for n, a in args.items() if isinstance(a, torch.Tensor) and a.shape == o.shape
                 and a.dtype == o.dtype and n not in used]
        pref = [n for n in cands if n in _STREAM_NAMES or "hidden" in n] or cands
        if pref:
            found[p] = pref[0]
            used.add(pref[0])
    return found


def _near(out: Any, nxt: dict[str, Any]) -> bool:
    """Every block's main output reaches the next block with something added (an injection every
    pair: VACE hints, a face adapter): the next block takes a same-shaped tensor within 50% of it
    (a list of adapters whose outputs are added to the stream is far from it)."""
    o = _tensors_of(out)[0]
    if not isinstance(o, torch.Tensor) or not o.is_floating_point():
        return False
    for a in nxt.values():
        if isinstance(a, torch.Tensor) and a.shape == o.shape and a.dtype == o.dtype:
            scale = o.float().norm()
            if scale > 0 and (a.float() - o.float()).norm() < 0.5 * scale:
                return True
    return False


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().float(), b.detach().flatten().float()
    den = a.norm() * b.norm()
    return float((a @ b) / den) if den > 0 else 0.0


def _has_attention(module: nn.Module) -> bool:
    return any(_ATTN.search(type(m).__name__) or isinstance(m, nn.MultiheadAttention) for m in module.modules())


@dataclass
class _Verdict:
    path: str
    io: BlockIO | None = None
    units: BlockUnits | None = None
    why: str = ""
    first: int = 0
    last: int = 0
    orders: tuple[int, ...] = ()
    size: int = 0


def _judge(path: str, lst: nn.Module, seen: list[tuple[int, BlockCall]]) -> _Verdict:
    v = _Verdict(path)
    n = len(lst)
    if not seen:
        v.why = "does not run"
        return v
    idx = [j for j, _ in seen]
    if sorted(set(idx)) != list(range(n)):
        v.why = f"{len(set(idx))} of {n} blocks ran"
        return v
    if len(idx) != n:
        v.why = "blocks ran more than once"
        return v
    if idx != list(range(n)):
        v.why = "blocks ran out of list order"
        return v
    calls = [c for _, c in seen]
    if len({type(b) for b in lst}) != 1:
        v.why = "blocks of different classes"
        return v
    mapping: dict[int, str] = {}
    for a, b in zip(calls, calls[1:]):
        for p, name in _links(a.out, b.args).items():
            if mapping.get(p, name) != name:
                v.why = "blocks pass their outputs on inconsistently"
                return v
            mapping[p] = name
    if n > 1 and not mapping and not all(_near(a.out, b.args) for a, b in zip(calls, calls[1:])):
        v.why = "not chained (no block takes what the previous one returned)"
        return v
    # A stream the model adds to between blocks (VACE hints, face / identity adapters) is a new
    # tensor at the next block: it is named by shape, once another stream or pair proved the chain.
    for p, name in _by_shape(calls[0].out, {k: a for k, a in calls[0].args.items()
                                            if k not in mapping.values()}).items():
        mapping.setdefault(p, name)
    outs = _tensors_of(calls[0].out)
    if not mapping:
        v.why = "returns no tensor shaped like its inputs"
        return v
    for p, o in enumerate(outs):
        if isinstance(o, torch.Tensor) and p not in mapping:
            v.why = f"returns a tensor at position {p} that the next block does not take"
            return v
        if o is not None and not isinstance(o, torch.Tensor):
            v.why = f"returns {type(o).__name__} at position {p}"
            return v
    if any(o is None for o in outs) and any(p not in mapping for p, o in enumerate(outs)):
        v.why = "returns None at a position no block takes"
        return v
    names = [mapping[p] for p in range(len(outs))]
    main = next((s for s in _STREAM_NAMES if s in names), None) or max(
        names, key=lambda s: _tensors_of(calls[0].out)[names.index(s)].numel())
    for c in calls:
        o = _tensors_of(c.out)[names.index(main)]
        a = c.args.get(main)
        if not isinstance(o, torch.Tensor) or not isinstance(a, torch.Tensor) or o.shape != a.shape:
            v.why = f"changes the shape of its stream {main!r}"
            return v
        if n == 1 and _cosine(o, a) < 0.2:
            # one block, so no chain to prove it: a block returns its stream updated (a residual
            # block's output follows its input), an adapter whose output is added to the stream does not
            v.why = f"returns something unlike its stream {main!r} (an addition to it, not the stream)"
            return v
    streams = (main, *[s for s in names if s != main])
    v.io = BlockIO(streams, None if isinstance(calls[0].out, torch.Tensor) else tuple(names))
    v.units = _units(lst[0], calls)
    v.first, v.last = calls[0].order, calls[-1].order
    v.orders = tuple(c.order for c in calls)
    v.size = sum(p.numel() for p in lst.parameters())
    return v


def _unit_kind(attr: str, module: nn.Module) -> str | None:
    """"self_attn" / "cross_attn" / "ffn" by attribute and class name; None for anything else (norms,
    modulation, activations, projections without weights)."""
    cls = type(module).__name__
    if re.search(r"norm", cls, re.I) or re.search(r"norm|adaln|modulation|_ln$|^ln", attr, re.I):
        return None
    if not any(True for _ in module.parameters()):
        return None
    if _ATTN.search(attr) or _ATTN.search(cls):
        return "cross_attn" if re.search(r"2|cross", attr) else "self_attn"
    if _FFN.search(attr) or _FFN.search(cls):
        return "ffn"
    return None


def _units(block: nn.Module, calls: list[BlockCall]) -> BlockUnits | None:
    """Direct children called exactly once in every block call, named as attention / FFN, whose
    output is a tensor or a tuple of tensors."""
    counts = []
    for c in calls:
        cnt: dict[str, int] = {}
        for attr, _ in c.children:
            cnt[attr] = cnt.get(attr, 0) + 1
        counts.append(cnt)
    units: list[tuple[str, str]] = []
    taken: set[str] = set()
    for attr, _ in calls[0].children:
        if attr in {a for _, a in units} or any(cnt.get(attr) != 1 for cnt in counts):
            continue
        outs = [ch.out for c in calls for a, ch in c.children if a == attr]
        if not all(isinstance(o, torch.Tensor) or (isinstance(o, tuple) and o and all(
                isinstance(t, torch.Tensor) for t in o)) for o in outs):
            continue
        kind = _unit_kind(attr, getattr(block, attr))
        if kind is None:
            continue
        name = kind if kind not in taken else f"{kind}_{attr}"
        taken.add(name)
        units.append((name, attr))
    return BlockUnits(tuple(units)) if units else None


def layout_from_observation(obs: Observation) -> ModelLayout:
    verdicts = [_judge(p, lst, obs.calls[p]) for p, lst in obs.lists.items()]
    stacks = sorted((v for v in verdicts if v.io is not None), key=lambda v: v.first)
    # Transformer blocks hold attention: where some stacks do, chains of plain layers are left out.
    if any(_has_attention(obs.lists[v.path][0]) for v in stacks):
        for v in stacks:
            if not _has_attention(obs.lists[v.path][0]):
                v.io, v.why = None, "no attention module inside (not a transformer block)"
        stacks = [v for v in stacks if v.io is not None]
    # lists nested in a stack's blocks (experts, inner lists) are not stacks of their own
    stacks = [v for v in stacks if not any(v.path.startswith(o.path + ".") for o in stacks if o is not v)]
    what = "; ".join(f"{v.path} ({len(obs.lists[v.path])} x {type(obs.lists[v.path][0]).__name__}): "
                     f"{'stack' if v.io is not None else v.why}" for v in verdicts) or "no nn.ModuleList"
    name = type(obs.model).__name__
    if not stacks:
        raise UnsupportedModelError(
            f"cachekit could not find a block stack in {name} from one call ({what}); tell it with "
            f"cachekit.register_layout({name}, cachekit.ModelLayout(block_lists=(...), io=cachekit.BlockIO(...)))")
    # A one-block list that runs inside another stack's span is something added between its blocks
    # (a face adapter every 5 blocks), not a stack.
    stacks = [v for v in stacks if not (len(v.orders) == 1 and any(
        o is not v and len(o.orders) > 1 and o.first < v.first < o.last for o in stacks))]
    interleaved = next(((a, b) for a, b in zip(stacks, stacks[1:]) if b.first < a.last), None)
    if interleaved is not None:
        # No range of blocks carries one stream (Latte: spatial and temporal blocks alternate with a
        # reshape between them): unit-level methods only.
        a, b = interleaved
        units = tuple(v.units for v in stacks)
        if not all(u is not None for u in units):
            raise UnsupportedModelError(
                f"cachekit: the blocks of {a.path} and {b.path} in {name} run interleaved and hold no attention / FFN "
                f"modules to cache one by one ({what}); register a layout for it")
        return ModelLayout(tuple(v.path for v in stacks), tuple(v.io for v in stacks), obs.timestep_arg, units,
                           segment_lists=(), note=f"the blocks of {a.path} and {b.path} run interleaved")
    # The cached stack ends with the last stack to run and takes the stacks before it whose last
    # block hands its streams to the next stack's first block. Refiners that run on another stream
    # first (text or noise refiners before a joint stack) are left out: a segment spanning them would
    # pass the main stream's input through where its residual belongs.
    chain = [stacks[-1]]
    for prev in reversed(stacks[:-1]):
        if not _hands_on(obs, prev, chain[0]):
            break
        chain.insert(0, prev)
    units = tuple(v.units for v in stacks)
    segment_lists = tuple(v.path for v in chain)
    return ModelLayout(tuple(v.path for v in stacks), tuple(v.io for v in stacks), obs.timestep_arg,
                       units if any(u is not None for u in units) else None,
                       segment_lists=None if len(chain) == len(stacks) else segment_lists)


def _hands_on(obs: Observation, a: _Verdict, b: _Verdict) -> bool:
    """Stack ``a``'s last block hands its main stream to ``b``'s first block under the same name
    (Flux: double-stream to single-stream blocks), so one segment may span both."""
    last = obs.calls[a.path][-1][1]
    first = obs.calls[b.path][0][1]
    names = a.io.outputs or a.io.streams[:1]
    links = _links(last.out, first.args)
    return a.io.streams[0] == b.io.streams[0] and links.get(names.index(a.io.streams[0])) == a.io.streams[0]


def _io_source(io: BlockIO) -> str:
    return f"cachekit.BlockIO({io.streams!r}, {io.outputs!r})"


def layout_source(model_class: type | str, layout: ModelLayout) -> str:
    """The ``cachekit.register_layout`` call that registers ``layout`` for ``model_class``.

    Args:
        model_class: the model class, or its "module.ClassName" path.
        layout: the layout to register (e.g. what ``cachekit.propose_layout`` found).

    Example:
        >>> import torch, cachekit
        >>> layer = torch.nn.TransformerEncoderLayer(16, 2, batch_first=True)
        >>> model = torch.nn.TransformerEncoder(layer, num_layers=2)
        >>> layout = cachekit.propose_layout(model, torch.randn(1, 5, 16))
        >>> print(cachekit.layout_source(type(model), layout))
        cachekit.register_layout('torch.nn.modules.transformer.TransformerEncoder', cachekit.ModelLayout(
            block_lists=('layers',),
            io=(cachekit.BlockIO(('src',), None),),
            timestep_arg=None,
            units=None))
    """
    key = model_class if isinstance(model_class, str) else qualname(model_class)
    ios = ", ".join(_io_source(io) for io in layout.io)
    units = "None" if layout.units is None else "(" + ", ".join(
        "None" if u is None else f"cachekit.BlockUnits({u.units!r}"
        + ("" if u.additive is None else f", additive={u.additive!r}")
        + ("" if u.outputs is None else f", outputs={u.outputs!r}") + ")" for u in layout.units) + ",)"
    seg = "" if layout.segment_lists is None else f",\n    segment_lists={layout.segment_lists!r}"
    return (f"cachekit.register_layout({key!r}, cachekit.ModelLayout(\n    block_lists={layout.block_lists!r},\n"
            f"    io=({ios},),\n    timestep_arg={layout.timestep_arg!r},\n    units={units}{seg}))")
