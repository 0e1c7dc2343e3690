"""Numeric primitives of the hot path: residual reuse and drift statistics.

Each function is the eager torch reference, which is also the CPU path. Fused Triton versions will
sit beside their reference (``<name>_reference`` stays the test oracle) and be chosen at dispatch.
"""

from .reference import add_residual, mean_abs, mean_abs_diff, residual

__all__ = ["add_residual", "mean_abs", "mean_abs_diff", "residual"]
