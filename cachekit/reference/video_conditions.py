"""Condition vocabulary of the moving-digits video reference model, and its embedding table.

A clip is conditioned on a *content* (which digit moves: zero, one, four, seven) and a *direction*
(up, down, left, right). The model has no text encoder: :class:`ConditionEmbedding`, a learned
table shipped with the weights, turns a (content, direction) pair into 2 tokens of width
:data:`TEXT_DIM`, and :func:`video_prompt_embeds` builds the pipeline's ``prompt_embeds`` /
``negative_prompt_embeds`` from names or indices.

This module needs torch only (no diffusers) and does not import :mod:`cachekit.reference.video`,
which imports it; every name here is also importable from there.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

__all__ = [
    "CONTENT_NAMES",
    "CONTENT_DIGITS",
    "DIRECTION_NAMES",
    "DIRECTION_VECTORS",
    "DEFAULT_CONDITIONS",
    "TEXT_DIM",
    "NUM_CONDITION_TOKENS",
    "ConditionEmbedding",
    "video_prompt_embeds",
]

#: What moves: names of the content classes, and the scikit-learn digit each one is.
CONTENT_NAMES: list[str] = ["zero", "one", "four", "seven"]
CONTENT_DIGITS: list[int] = [0, 1, 4, 7]
#: Which way it moves, and the per-frame displacement (dy, dx) in pixels (rows grow downwards).
DIRECTION_NAMES: list[str] = ["up", "down", "left", "right"]
DIRECTION_VECTORS: list[tuple[int, int]] = [(-1, 0), (1, 0), (0, -1), (0, 1)]

#: Default batch: 8 clips, every content twice and every direction twice (16 transformer rows per
#: denoising step with CFG, as two separate forwards of 8).
DEFAULT_CONDITIONS: list[tuple[str, str]] = [
    ("zero", "up"), ("one", "down"), ("four", "left"), ("seven", "right"),
    ("zero", "left"), ("one", "right"), ("four", "up"), ("seven", "down"),
]

#: Condition embedding: 2 tokens per clip ([content, direction]) of this width.
TEXT_DIM = 32
NUM_CONDITION_TOKENS = 2


class ConditionEmbedding(nn.Module):
    """Learned "text encoder": (content, direction) -> 2 tokens of width ``text_dim``.

    Rows ``0..C-1`` are the contents, ``C..C+D-1`` the directions, ``C+D`` and ``C+D+1`` the two
    tokens of the null (unconditional) condition used as ``negative_prompt_embeds``.
    """

    def __init__(self, num_contents: int = len(CONTENT_NAMES), num_directions: int = len(DIRECTION_NAMES),
                 text_dim: int = TEXT_DIM):
        super().__init__()
        self.num_contents = num_contents
        self.num_directions = num_directions
        self.weight = nn.Parameter(torch.randn(num_contents + num_directions + 2, text_dim))

    def forward(self, contents: torch.Tensor, directions: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` content and direction indices -> ``(B, 2, text_dim)``; ``drop`` (bool ``(B,)``)
        replaces a row's condition by the null condition."""
        c_idx = contents.long()
        d_idx = directions.long() + self.num_contents
        if drop is not None:
            null = self.num_contents + self.num_directions
            c_idx = torch.where(drop, torch.full_like(c_idx, null), c_idx)
            d_idx = torch.where(drop, torch.full_like(d_idx, null + 1), d_idx)
        return torch.stack([self.weight[c_idx], self.weight[d_idx]], dim=1)

    def null(self, batch_size: int) -> torch.Tensor:
        """``(B, 2, text_dim)`` null condition (the negative prompt embedding for CFG)."""
        null = self.num_contents + self.num_directions
        return self.weight[null:null + 2].unsqueeze(0).expand(batch_size, -1, -1).clone()


def _index(value, names: Sequence[str], what: str) -> int:
    if isinstance(value, str):
        key = value.strip().lower()
        if key in names:
            return names.index(key)
        if what == "content" and key.isdigit() and int(key) in CONTENT_DIGITS:
            return CONTENT_DIGITS.index(int(key))
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(names)}")
    i = int(value)
    if not 0 <= i < len(names):
        raise ValueError(f"{what} index {i} out of range [0, {len(names) - 1}]")
    return i


def video_prompt_embeds(
    pipe: Any,
    contents: Sequence[str | int],
    directions: Sequence[str | int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)``, each ``(N, 2, 32)``, for the pipeline.

    ``pipe``: a :class:`~cachekit.reference.video.MovingDigitsWanPipeline` (its
    ``condition_embedding`` table is used) or a :class:`ConditionEmbedding` itself.
    ``contents``: names from :data:`CONTENT_NAMES` (``"zero"``, ``"one"``, ``"four"``, ``"seven"``;
    the digit strings ``"0"``, ``"1"``, ``"4"``, ``"7"`` work too) or indices into it.
    ``directions``: names from :data:`DIRECTION_NAMES` (``"up"``, ``"down"``, ``"left"``,
    ``"right"``) or indices. A single string is broadcast to the other list's length.
    The negative embedding is the learned null condition, repeated N times.
    """
    if isinstance(contents, (str, int)):
        contents = [contents] * (1 if isinstance(directions, (str, int)) else len(directions))
    if isinstance(directions, (str, int)):
        directions = [directions] * len(contents)
    if len(contents) != len(directions):
        raise ValueError(f"got {len(contents)} contents but {len(directions)} directions")
    # Duck-typed (this module must not import video.py): a pipeline carries the table as an attribute.
    table = pipe if isinstance(pipe, ConditionEmbedding) else getattr(pipe, "condition_embedding", pipe)
    if table is None:
        raise ValueError("the pipeline has no condition embedding table attached")
    c = torch.tensor([_index(v, CONTENT_NAMES, "content") for v in contents], dtype=torch.long)
    d = torch.tensor([_index(v, DIRECTION_NAMES, "direction") for v in directions], dtype=torch.long)
    with torch.no_grad():
        device = table.weight.device
        pe = table(c.to(device), d.to(device))
        npe = table.null(len(c))
    return pe, npe
