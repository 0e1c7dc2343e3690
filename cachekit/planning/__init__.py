"""Offline plans: pure functions of recorded arrays (``cachekit.record``) or of measured edge
errors (``lemica_edges``), tested without a model. One file per planner."""

from .bac import BACPlan, plan_bac
from .ertacache import ERTAPlan, plan_erta
from .lemica import EdgeTable, LeMiCaPlan, choose_lemica, lemica_edges, plan_lemica

__all__ = ["BACPlan", "plan_bac", "ERTAPlan", "plan_erta", "EdgeTable", "LeMiCaPlan", "lemica_edges", "plan_lemica", "choose_lemica"]
