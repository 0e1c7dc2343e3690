"""Cache methods, one file each; importing this package registers them by config class."""

from .bac import BAC, BACConfig
from .base import CacheMethod, MemoryNeeds, ScratchTensors, SegmentContext, SegmentOutput, StepContext
from .block_drift import BlockDrift, BlockDriftConfig
from .cachequant import CacheQuant, CacheQuantConfig
from .easycache import EasyCache, EasyCacheConfig
from .ertacache import ERTACache, ERTACacheConfig
from .fixed_interval import FixedInterval, FixedIntervalConfig
from .schedule import Schedule, ScheduleConfig

__all__ = ["BAC", "BACConfig", "BlockDrift", "BlockDriftConfig", "CacheQuant", "CacheQuantConfig", "CacheMethod", "MemoryNeeds", "ScratchTensors", "SegmentContext", "SegmentOutput", "StepContext", "EasyCache", "EasyCacheConfig", "ERTACache", "ERTACacheConfig", "FixedInterval",
           "FixedIntervalConfig", "Schedule", "ScheduleConfig"]
