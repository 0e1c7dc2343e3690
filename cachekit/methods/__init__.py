"""Cache methods, one file each; importing this package registers them by config class."""

from .bac import BAC, BACConfig
from .base import CacheMethod, UnitContext
from .block_drift import BlockDrift, BlockDriftConfig
from .easycache import EasyCache, EasyCacheConfig
from .ertacache import ERTACache, ERTACacheConfig
from .fixed_interval import FixedInterval, FixedIntervalConfig

__all__ = ["BAC", "BACConfig", "BlockDrift", "BlockDriftConfig", "CacheMethod", "UnitContext", "EasyCache", "EasyCacheConfig", "ERTACache", "ERTACacheConfig", "FixedInterval",
           "FixedIntervalConfig"]
