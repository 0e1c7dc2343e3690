"""Numeric primitives of the hot path: residual reuse and drift statistics.

``reuse``, ``drift_stats`` and ``residual_with_stats`` pick the fused Triton kernel
(``triton_kernels.py``, imported lazily) or the eager reference (``reference.py``: the CPU path and
the test oracle) per call; the rule and ``CACHEKIT_KERNELS`` are described in ``dispatch.py``.
"""

from .dispatch import BACKENDS, drift_stats, residual_with_stats, resolve_backend, reuse
from .reference import add_residual, drift_stats_reference, residual, residual_with_stats_reference, reuse_reference

__all__ = ["add_residual", "drift_stats", "residual", "residual_with_stats", "reuse",
           "drift_stats_reference", "residual_with_stats_reference", "reuse_reference", "BACKENDS", "resolve_backend"]
