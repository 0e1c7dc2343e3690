"""A tap on the model's own forward hook, for calibration: counts the model calls of a run, records
their outputs, or hands back recorded outputs for the first calls instead of running the model.

LeMiCa's edge measurements (``cachekit.calibration``) share prefixes this way: the steps before a
measured edge are the uncached trajectory, so their model outputs are recorded once (in an uncached
run) and replayed, and the pipeline's scheduler sees exactly the uncached state. On the digits DiT
at 50 steps and edges up to 6 steps long, that cuts the model calls of a table by about half.

The tap is an option of the runtime's install (``cachekit.apply(..., tap=ForwardTap(...))``):
the session's hook on the model's ``forward`` consults it before anything else, so replayed calls
never reach the caching logic (the session is told: its first step then has no call to check).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["ForwardTap", "clone_output"]


def clone_output(obj: Any) -> Any:
    """A model output with every tensor copied (BaseOutput, tuples, dicts, tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):   # diffusers' BaseOutput is an OrderedDict dataclass
        values = {k: clone_output(v) for k, v in obj.items()}
        try:
            return type(obj)(**values)
        except TypeError:
            return values
    if isinstance(obj, (tuple, list)):
        return type(obj)(clone_output(v) for v in obj)
    return obj


class ForwardTap:
    """Counts, records or replays the model calls of one run.

    Args:
        record: keep a copy of every output the model computed (``outputs``).
        replay: outputs to hand back, in order, for the first ``len(replay)`` calls.

    Attributes:
        calls: model calls seen (replayed ones included).
        ran: calls the model really ran.
        outputs: the recorded outputs (``record=True``).

    Example:
        >>> tap = ForwardTap(record=True)
        >>> tap.calls, tap.ran, tap.outputs
        (0, 0, [])
    """

    def __init__(self, record: bool = False, replay: Sequence[Any] = ()) -> None:
        self.record, self.replay = bool(record), list(replay)
        self.outputs: list[Any] = []
        self.calls = self.ran = 0
        self._inside = False   # a call re-entering through another session (the default's refit)

    @property
    def replays(self) -> bool:
        return bool(self.replay)

    def take_replayed(self) -> tuple[bool, Any]:
        """(True, a copy of the next recorded output) while replaying, else (False, None)."""
        if self._inside or self.calls >= len(self.replay):
            return False, None
        out = clone_output(self.replay[self.calls])
        self.calls += 1
        return True, out

    def run(self, call: Callable[[], Any]) -> Any:
        """Run one model call, counted (and recorded) once however many sessions it passes through."""
        if self._inside:
            return call()
        self._inside = True
        try:
            self.calls += 1
            self.ran += 1
            out = call()
        finally:
            self._inside = False
        if self.record:
            self.outputs.append(clone_output(out))
        return out
