"""Offline plans made from recordings (``cachekit.record``): pure functions of recorded arrays,
tested without a model. One file per planner."""

from .bac import BACPlan, plan_bac
from .ertacache import ERTAPlan, plan_erta

__all__ = ["BACPlan", "plan_bac", "ERTAPlan", "plan_erta"]
