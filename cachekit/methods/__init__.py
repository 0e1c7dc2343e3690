"""Cache methods, one file each; importing this package registers them by config class."""

from .base import CacheMethod, UnitContext
from .easycache import EasyCache, EasyCacheConfig
from .fixed_interval import FixedInterval, FixedIntervalConfig

__all__ = ["CacheMethod", "UnitContext", "EasyCache", "EasyCacheConfig", "FixedInterval",
           "FixedIntervalConfig"]
