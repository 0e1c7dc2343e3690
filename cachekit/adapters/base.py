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

__all__ = ["BlockIO", "ModelLayout", "BlockBinding", "qualname", "UnsupportedModelError"]


class UnsupportedModelError(TypeError):
    """cachekit cannot tell where the transformer blocks of this model are."""


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
    """

    streams: tuple[str, ...] = ("hidden_states",)
    outputs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("BlockIO.streams must name at least one forward argument")
        if self.outputs is not None and set(self.outputs) - set(self.streams):
            raise ValueError(f"BlockIO.outputs {self.outputs} names streams not in {self.streams}")


@dataclass(frozen=True)
class ModelLayout:
    """Where the blocks of one model class are.

    Args:
        block_lists: dotted attribute paths from the model to each ``nn.ModuleList`` of blocks, in
            execution order, e.g. ("transformer_blocks", "single_transformer_blocks").
        io: one ``BlockIO`` per block list (a single one is used for all lists).
        timestep_arg: name of the model forward's timestep argument, used to count denoising
            steps; None when the model takes no timestep (each call is then one step).
    """

    block_lists: tuple[str, ...]
    io: tuple[BlockIO, ...] = (BlockIO(),)
    timestep_arg: str | None = "timestep"

    def __post_init__(self) -> None:
        if isinstance(self.block_lists, str):
            object.__setattr__(self, "block_lists", (self.block_lists,))
        if isinstance(self.io, BlockIO):
            object.__setattr__(self, "io", (self.io,))
        if not self.block_lists:
            raise ValueError("ModelLayout.block_lists must name at least one nn.ModuleList")
        if len(self.io) not in (1, len(self.block_lists)):
            raise ValueError("ModelLayout.io needs one BlockIO, or one per block list")

    def io_for(self, list_index: int) -> BlockIO:
        return self.io[0] if len(self.io) == 1 else self.io[list_index]


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
