"""Where the blocks are and how hidden states flow through them.

An adapter answers *where*; methods answer *when*. A ``ModelLayout`` names the block lists of a model
class (dotted attribute paths, execution order) and, per list, a ``BlockIO`` telling which forward
arguments are the streams that flow from block to block and how the block returns them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from ..errors import UnsupportedModelError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = ["BlockIO", "BlockUnits", "ModelLayout", "BlockBinding", "qualname", "UnsupportedModelError"]


def qualname(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class BlockIO:
    """How the hidden-state streams enter and leave one kind of block.

    Args:
        streams: forward argument names of the streams carried from block to block; the first is
            the main (image / video / action token) stream, e.g. ("hidden_states",
            "encoder_hidden_states") for dual-stream blocks.
        outputs: the return layout: None when the block returns the main stream as one tensor,
            else the stream names in the order of the returned tuple, e.g.
            ("encoder_hidden_states", "hidden_states") for Flux. An element may be None at run time
            (SD3's last block returns no text stream); it then stays None on reuse.

    Example:
        >>> import cachekit
        >>> io = cachekit.BlockIO(("hidden_states", "encoder_hidden_states"),
        ...                       outputs=("encoder_hidden_states", "hidden_states"))   # Flux's blocks
        >>> io.streams[0]      # the main stream
        'hidden_states'
        >>> cachekit.BlockIO(("hidden_states",), outputs=("context",))
        Traceback (most recent call last):
        ...
        ValueError: BlockIO.outputs ('context',) names streams not in ('hidden_states',)
    """

    streams: tuple[str, ...] = ("hidden_states",)
    outputs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("BlockIO.streams must name at least one forward argument")
        if self.outputs is not None and set(self.outputs) - set(self.streams):
            raise ValueError(f"BlockIO.outputs {self.outputs} names streams not in {self.streams}")


@dataclass(frozen=True)
class BlockUnits:
    """The sub-block units of one kind of block, for unit-level methods (BAC, ``units=True``).

    Args:
        units: (kind, attribute) pairs in execution order. The attribute is a submodule (its
            ``forward`` is hooked; its output must be the branch output *before* any gate and the
            residual add, e.g. ``attn1``) or a method of the block returning the branch output
            (torch's layers: ``_sa_block``). An attribute that is None on a block is skipped (DiT has
            no ``attn2``). Kinds name what a unit is; "ffn" matters to BAC's Bubbling Union, which
            propagates errors through later FFNs; others: "self_attn", "cross_attn", or your own.
        additive: the name of a block attribute that, when True on an instance, makes the block's
            output exactly its main input plus its units' outputs added in order (torch's pre-norm
            ``TransformerDecoderLayer``: "norm_first"); the block is then skipped whole when all its
            units are reused. None: never.
        outputs: what each unit's output holds, for memory estimates only: one (tokens, width
            multiple) pair per unit, tokens "main", "text" or "main+text" (a joint sequence, or a
            tuple of both streams). None: every unit returns the main stream at the model's width.

    Example:
        >>> import cachekit
        >>> units = cachekit.BlockUnits((("self_attn", "attn1"), ("cross_attn", "attn2"), ("ffn", "ff")))
        >>> tuple(kind for kind, _ in units.units)
        ('self_attn', 'cross_attn', 'ffn')
        >>> layout = cachekit.ModelLayout(("transformer_blocks",), units=units)   # for all its block lists
        >>> layout.units_for(0) is units
        True
    """

    units: tuple[tuple[str, str], ...]
    additive: str | None = None
    outputs: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        units = tuple(tuple(u) for u in self.units)
        if not units or any(len(u) != 2 or not all(isinstance(v, str) and v for v in u) for u in units):
            raise ValueError(f"BlockUnits.units must be (kind, attribute) pairs of names, got {self.units!r}")
        if any(kind == "block" for kind, _ in units):
            raise ValueError("BlockUnits: 'block' is reserved for blocks cached as one unit")
        object.__setattr__(self, "units", units)
        if self.outputs is not None:
            outs = tuple(tuple(o) for o in self.outputs)
            if len(outs) != len(units) or any(len(o) != 2 or o[0] not in ("main", "text", "main+text")
                                              or not isinstance(o[1], (int, float)) or o[1] <= 0 for o in outs):
                raise ValueError(f"BlockUnits.outputs must be one (\"main\" | \"text\" | \"main+text\", width multiple > 0) "
                                 f"pair per unit, got {self.outputs!r}")
            object.__setattr__(self, "outputs", outs)


@dataclass(frozen=True)
class ModelLayout:
    """Where the blocks of one model class are.

    Args:
        block_lists: dotted attribute paths from the model to each ``nn.ModuleList`` of blocks, in
            execution order, e.g. ("transformer_blocks", "single_transformer_blocks").
        io: one ``BlockIO`` per block list (a single one is used for all lists).
        timestep_arg: name of the model forward's timestep argument, used to count denoising
            steps; None when the model takes no timestep (each call is then one step).
        units: the sub-block units of the blocks, one ``BlockUnits`` for all lists or one per list
            (None in a list's place: that list's blocks are found by class, else cached whole);
            None: by block class (torch's layers, diffusers' known blocks), else each block is one
            unit. An attribute may be dotted ("block.attn1") for blocks that wrap another.
        segment_lists: the block lists that block-range methods (segments) cache: a run of
            ``block_lists`` through which the main stream flows from one list to the next. Lists
            left out (a text or noise refiner that runs first on another stream, double-stream
            blocks whose streams are concatenated before the single-stream ones) are cached only by
            unit-level methods. None: all of ``block_lists``; () : segment methods are refused.
        note: why the layout is what it is, shown when a config cannot run on it.

    Example:
        >>> import torch, cachekit
        >>> layer = torch.nn.TransformerEncoderLayer(16, 2, batch_first=True)
        >>> model = torch.nn.TransformerEncoder(layer, num_layers=2)
        >>> layout = cachekit.ModelLayout(("layers",), cachekit.BlockIO(("src",)), timestep_arg=None)
        >>> model = cachekit.apply(model, cachekit.FixedIntervalConfig(), layout=layout)
        >>> cachekit.stats(model).block_names
        ('layers.0', 'layers.1')
        >>> model = cachekit.remove(model)
    """

    block_lists: tuple[str, ...]
    io: tuple[BlockIO, ...] = (BlockIO(),)
    timestep_arg: str | None = "timestep"
    units: tuple[BlockUnits | None, ...] | None = None
    segment_lists: tuple[str, ...] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.block_lists, str):
            object.__setattr__(self, "block_lists", (self.block_lists,))
        if isinstance(self.io, BlockIO):
            object.__setattr__(self, "io", (self.io,))
        if isinstance(self.units, BlockUnits):
            object.__setattr__(self, "units", (self.units,))
        if not self.block_lists:
            raise ValueError("ModelLayout.block_lists must name at least one nn.ModuleList")
        if len(self.io) not in (1, len(self.block_lists)):
            raise ValueError("ModelLayout.io needs one BlockIO, or one per block list")
        if self.units is not None and (len(self.units) not in (1, len(self.block_lists)) or not all(
                u is None or isinstance(u, BlockUnits) for u in self.units)):
            raise ValueError("ModelLayout.units needs one BlockUnits, or one (or None) per block list")
        if isinstance(self.segment_lists, str):
            object.__setattr__(self, "segment_lists", (self.segment_lists,))
        if self.segment_lists is not None:
            seg, lists = tuple(self.segment_lists), self.block_lists
            object.__setattr__(self, "segment_lists", seg)
            starts = [i for i in range(len(lists)) if lists[i:i + len(seg)] == seg]
            if seg and not starts:
                raise ValueError(f"ModelLayout.segment_lists {seg} must be a run of block_lists {lists}")

    @property
    def segment_paths(self) -> tuple[str, ...]:
        return self.block_lists if self.segment_lists is None else self.segment_lists

    def io_for(self, list_index: int) -> BlockIO:
        return self.io[0] if len(self.io) == 1 else self.io[list_index]

    def units_for(self, list_index: int) -> BlockUnits | None:
        if self.units is None:
            return None
        return self.units[0] if len(self.units) == 1 else self.units[list_index]


class BlockBinding:
    """Reads a block's stream arguments and builds its outputs, without ``inspect`` per call.

    Positions are taken once from the forward signature; a stream passed by keyword wins.
    """

    def __init__(self, forward: Callable, io: BlockIO, name: str) -> None:
        self.io, self.name = io, name
        params = list(inspect.signature(forward).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        missing = [s for s in io.streams if s not in names and s not in
                   {p.name for p in params if p.kind == p.KEYWORD_ONLY}]
        if missing:
            raise UnsupportedModelError(
                f"block {name} ({type(forward.__self__).__name__}) has no forward argument "
                f"{missing[0]!r}; its arguments are: {', '.join(p.name for p in params)}")
        self.position = {s: (names.index(s) if s in names else None) for s in io.streams}
        self.default = {p.name: (None if p.default is p.empty else p.default) for p in params}

    def streams(self, args: tuple, kwargs: dict) -> dict[str, torch.Tensor | None]:
        out = {}
        for s, pos in self.position.items():
            if s in kwargs:
                out[s] = kwargs[s]
            elif pos is not None and pos < len(args):
                out[s] = args[pos]
            else:
                out[s] = self.default.get(s)
        return out

    def parse_output(self, result: Any) -> dict[str, torch.Tensor | None]:
        if self.io.outputs is None:
            if not isinstance(result, torch.Tensor):
                raise UnsupportedModelError(
                    f"block {self.name} returned {type(result).__name__}, not a tensor; describe its "
                    f"outputs with cachekit.BlockIO(streams=..., outputs=...) in a ModelLayout")
            return {self.io.streams[0]: result}
        if not isinstance(result, (tuple, list)) or len(result) != len(self.io.outputs):
            raise UnsupportedModelError(
                f"block {self.name} returned {type(result).__name__}; its layout expects a tuple "
                f"{self.io.outputs}")
        return dict(zip(self.io.outputs, result))

    def build_output(self, streams: dict[str, torch.Tensor | None]) -> Any:
        if self.io.outputs is None:
            return streams[self.io.streams[0]]
        return tuple(streams[s] for s in self.io.outputs)


def get_path(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
