"""Where a forecast's older history entries live: ``HistoryStorage`` and the stored-history types.

Only the newest entry of a segment's / unit's history is read on every reuse step; a forecast's
older entries may be kept elsewhere (``HistoryStorage``: in host memory, in bf16 / fp16, or in int8 /
fp8 with one scale per channel). They
are moved when they stop being the newest (``BranchState.remember`` in ``state.py``) and the paths
read them back through ``BranchState.history.get``, which restores them for the one reuse step that
reads them (``StoredHistory``). Without a storage the history is a plain dict, as it always was.

Also here: the payload walkers every byte count uses (``payload_tensors``, ``unique_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = ["HistoryStorage", "DemotedEntry", "StoredHistory", "payload_tensors", "payload_bytes", "unique_bytes",
           "quantize_channels", "dequantize_channels", "scale_bytes", "is_scaled"]

_LOWER = {"bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8, "fp8": torch.float8_e4m3fn}
#: one-byte storage: values divided by a per-channel scale (the channel's largest magnitude over this
#: code's largest value) before the cast, multiplied back on restore
_SCALED = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}


@dataclass(frozen=True)
class HistoryStorage:
    """Where a forecast's older cached tensors are kept (``apply(..., history=...)``).

    Only the newest entry of a segment's / unit's history is read on every reuse step; the older
    ones (``forecast_order`` of them, 2 for FoCa, 1 for ERTACache's linear correction) are read
    only when a forecast combines them. They can live elsewhere:

    Args:
        where: "device" (default: beside the newest) or "host": CPU memory, pinned when the stream
            is on CUDA, copied out with ``non_blocking=True`` when an entry becomes second-newest and
            back (asynchronously, on the current stream) when a reuse step forecasts. On a CPU
            model the two are the same memory.
        dtype: None (the stream's dtype, default) or torch.bfloat16 / torch.float16: older entries
            of wider floating dtypes are stored in it and brought back to the stream's dtype when a
            forecast combines them (bf16 keeps fp32's range; fp16 overflows above 65504).
            torch.int8 / torch.float8_e4m3fn: one byte per element plus one fp32 scale per channel
            (the last dimension: DiT activations carry a few channels hundreds of times larger than
            the rest, so one scale per tensor would round the others away); int8 rounds to
            1/254 of each channel's range, e4m3 keeps 3 mantissa bits at any magnitude.

    ``HistoryStorage()`` is today's behaviour exactly; plain reuse (depth 1) never has an older
    entry, so it is unaffected (bit-exact) whatever this says.

    Example:
        >>> import torch, cachekit
        >>> s = cachekit.HistoryStorage.parse("host+int8")    # as apply(..., history="host+int8")
        >>> s.where, s.dtype
        ('host', torch.int8)
        >>> s.stored_bytes(torch.zeros(2, 16, 64))          # 2,048 one-byte values + 64 fp32 scales
        2304
    """

    where: str = "device"
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.where not in ("device", "host"):
            raise ValueError(f"cachekit: history where must be 'device' or 'host', got {self.where!r}")
        if self.dtype is not None and self.dtype not in _LOWER.values():
            raise ValueError(f"cachekit: history dtype must be None, torch.bfloat16, torch.float16, torch.int8 or "
                             f"torch.float8_e4m3fn, got {self.dtype!r}")

    @classmethod
    def parse(cls, value: "HistoryStorage | str | None") -> "HistoryStorage":
        """None / "device"; "host"; "bf16" / "fp16" / "int8" / "fp8"; "host+bf16" (any of them); or a
        HistoryStorage."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            parts = [p.strip() for p in value.split("+")]
            where = "host" if "host" in parts else "device"
            lower = [p for p in parts if p in _LOWER]
            rest = [p for p in parts if p not in _LOWER and p not in ("host", "device")]
            if not rest and len(lower) <= 1 and len(parts) == len(set(parts)):
                return cls(where, _LOWER[lower[0]] if lower else None)
        raise ValueError(f"cachekit: history must be None, 'device', 'host', 'bf16', 'fp16', 'int8', 'fp8', "
                         f"'host+bf16' (or 'host+' another) or a cachekit.HistoryStorage, got {value!r}")

    @property
    def is_default(self) -> bool:
        return self.where == "device" and self.dtype is None

    def lowers(self, t: torch.Tensor) -> bool:
        return self.dtype is not None and t.is_floating_point() and t.element_size() > self.dtype.itemsize

    def stored_bytes(self, t: torch.Tensor) -> int:
        """Bytes an older entry's tensor takes once stored here (with its scales when scaled)."""
        if not self.lowers(t):
            return t.numel() * t.element_size()
        assert self.dtype is not None
        return t.numel() * self.dtype.itemsize + (scale_bytes(t.shape) if self.dtype in _SCALED else 0)

    def demote(self, payload: Any) -> "DemotedEntry":
        return DemotedEntry(_map_tensors(payload, self._demote_tensor))

    def _demote_tensor(self, t: torch.Tensor) -> "_Stored":
        origin = (t.device, t.dtype)
        scale = None
        if self.lowers(t):
            assert self.dtype is not None
            if self.dtype in _SCALED:
                t, scale = quantize_channels(t, self.dtype)
            else:
                t = t.to(self.dtype)
        if self.where == "host" and t.device.type != "cpu":
            t = _to_host(t)
            scale = None if scale is None else _to_host(scale)
        return _Stored(t, *origin, scale)


def is_scaled(dtype: torch.dtype | None) -> bool:
    """True for the one-byte storage dtypes, which carry per-channel scales."""
    return dtype in _SCALED


def _to_host(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
    return host.copy_(t, non_blocking=True)


def scale_bytes(shape: Sequence[int]) -> int:
    """Bytes of the fp32 per-channel scales of a tensor of this shape stored in one byte."""
    return 4 * (int(shape[-1]) if len(shape) else 1)


def quantize_channels(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` in int8 / float8_e4m3fn with one fp32 scale per channel (last dimension): the
    channel's largest magnitude maps to the code's largest value. ``dequantize_channels`` inverts."""
    x = t.float()
    dims = tuple(range(x.dim() - 1))
    amax = x.abs().amax(dim=dims) if dims else x.abs()
    # an all-zero channel keeps scale 1 (0 / 1 = 0 exactly) instead of dividing by zero
    scale = torch.where(amax > 0, amax / _SCALED[dtype], torch.ones_like(amax))
    x = x / scale
    q = x.round_().clamp_(-127, 127).to(dtype) if dtype == torch.int8 else x.to(dtype)
    return q, scale


def dequantize_channels(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scale).to(dtype)


@dataclass(frozen=True)
class _Stored:
    """One tensor of an older history entry, as stored, and where / in which dtype it was made
    (with its per-channel scales when stored in one byte)."""

    tensor: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    scale: torch.Tensor | None = None

    def restore(self) -> torch.Tensor:
        t, scale = self.tensor, self.scale
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
            scale = None if scale is None else scale.to(self.device, non_blocking=True)
        if scale is not None:
            return dequantize_channels(t, scale, self.dtype)
        return t if t.dtype == self.dtype else t.to(self.dtype)


@dataclass(frozen=True)
class DemotedEntry:
    """An older history entry's payload with its tensors replaced by ``_Stored`` ones."""

    payload: Any

    def restore(self) -> Any:
        return _map_tensors(self.payload, _Stored.restore, leaf=_Stored)


def _map_tensors(payload: Any, fn: Callable, leaf: type = torch.Tensor) -> Any:
    if isinstance(payload, leaf):
        return fn(payload)
    if isinstance(payload, dict):
        return {k: _map_tensors(v, fn, leaf) for k, v in payload.items()}
    if isinstance(payload, tuple):
        return tuple(_map_tensors(v, fn, leaf) for v in payload)
    if isinstance(payload, list):
        return [_map_tensors(v, fn, leaf) for v in payload]
    return payload


class _RestoredEntries(Sequence):
    """A history list as the paths read it: older entries brought back (device, dtype) on first
    access, kept by this view only, so the copies live as long as the reuse step that reads them."""

    def __init__(self, entries: list) -> None:
        self._entries = entries
        self._restored: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self._restored:
            step, payload = self._entries[i]
            self._restored[i] = (step, payload.restore() if isinstance(payload, DemotedEntry) else payload)
        return self._restored[i]

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(len(self)))


class StoredHistory(dict):
    """``BranchState.history`` when older entries are stored elsewhere (``HistoryStorage``): the
    stored lists stay as they are; ``get`` hands the paths a view that restores on access."""

    def get(self, k: Any, default: Any = None) -> Any:
        entries = dict.get(self, k)
        if entries is None:
            return default
        return _RestoredEntries(entries) if any(isinstance(p, DemotedEntry) for _, p in entries) else entries


def payload_bytes(payload: Any) -> int:
    """Bytes of every tensor in a payload (as stored, for an older entry)."""
    return sum(t.numel() * t.element_size() for t in payload_tensors(payload))


def unique_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of these tensors, each counted once (a residual may also sit in a method's scratch)."""
    return sum({id(t): t.numel() * t.element_size() for t in tensors}.values())


def payload_tensors(payload: Any) -> list[torch.Tensor]:
    """Every tensor in a cached payload (tensors, dicts, tuples, lists; a stored older entry's as stored)."""
    if isinstance(payload, torch.Tensor):
        return [payload]
    if isinstance(payload, DemotedEntry):
        return payload_tensors(payload.payload)
    if isinstance(payload, _Stored):
        return [payload.tensor] + ([payload.scale] if payload.scale is not None else [])
    if isinstance(payload, dict):
        return [t for v in payload.values() for t in payload_tensors(v)]
    if isinstance(payload, (tuple, list)):
        return [t for v in payload for t in payload_tensors(v)]
    return []
