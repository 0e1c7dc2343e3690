"""Cache methods, one file each; importing this package registers them by config class."""

from .bac import BAC, BACConfig
from .base import CacheMethod, UnitContext
from .easycache import EasyCache, EasyCacheConfig
from .fixed_interval import FixedInterval, FixedIntervalConfig

__all__ = ["BAC", "BACConfig", "CacheMethod", "UnitContext", "EasyCache", "EasyCacheConfig", "FixedInterval",
           "FixedIntervalConfig"]
