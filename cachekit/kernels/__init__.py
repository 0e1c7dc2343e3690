"""Numeric primitives of the hot path: residual reuse and drift statistics.

Each function is the eager torch reference, which is also the CPU path. Fused Triton versions will
sit beside their reference (``<name>_reference`` stays the test oracle) and be chosen at dispatch.
"""

from .reference import (add_residual, drift_stats_reference, mean_abs, mean_abs_diff, residual,
                        residual_with_stats_reference, reuse_reference)

# Dispatch (triton on CUDA, else the reference) lands with the kernels; until then the references serve.
reuse = reuse_reference
drift_stats = drift_stats_reference
residual_with_stats = residual_with_stats_reference

__all__ = ["add_residual", "drift_stats", "mean_abs", "mean_abs_diff", "residual", "residual_with_stats", "reuse",
           "drift_stats_reference", "residual_with_stats_reference", "reuse_reference"]
