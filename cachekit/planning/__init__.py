"""Offline plans: pure functions of recorded arrays (``cachekit.record``) or of measured edge
errors (``cachekit.calibration.lemica_edges``), tested without a model. One file per planner.
Nothing here runs a model: ``cachekit.calibration`` measures, then calls these."""

from .bac import BACPlan, plan_bac
from .cachequant import CacheQuantPlan, plan_cachequant
from .ertacache import ERTAPlan, plan_erta
from .lemica import EdgeTable, LeMiCaPlan, candidate_paths, plan_for, plan_lemica

__all__ = ["BACPlan", "plan_bac", "CacheQuantPlan", "plan_cachequant", "ERTAPlan", "plan_erta", "EdgeTable", "LeMiCaPlan", "plan_lemica", "plan_for",
           "candidate_paths"]
