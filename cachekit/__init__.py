"""cachekit: training-free caching for diffusion transformers.

    import cachekit
    cachekit.apply(pipe)     # the recipe for this model family
    cachekit.remove(pipe)    # exactly undone

Calibrated plans: ``cal = cachekit.calibrate(pipe, runs, "lemica", fraction=0.4)`` then
``cachekit.apply(pipe, cal.config)`` (``cachekit.calibration``: record or measure, then plan).
"""

from .adapters import BlockIO, BlockUnits, ModelLayout, UnsupportedModelError, layout_source, register_layout, unregister_layout
from .api import AlreadyAppliedError, NotAppliedError, apply, record, remove, reset, stats
from .calibration import Calibration, calibrate
from .config import CacheConfig, ConfigError
from .errors import CachekitError
from .methods import (BACConfig, BlockDriftConfig, CacheQuantConfig, EasyCacheConfig, ERTACacheConfig, FixedIntervalConfig,
                      ScheduleConfig)
from .recipe import Recipe, RecipeError, load_recipe, packaged_recipes, save_recipe
from .memory import CacheEstimate, estimate_cache_bytes
from .recording import Recording
from .runtime.observe import propose_layout
from .runtime.guards import CacheBudgetError, CompositionError, ConcurrencyError
from .runtime.parallel import RankMismatchError
from .runtime.history import HistoryStorage
from .runtime.stats import CacheStats

__version__ = "0.1.0"

__all__ = [
    "propose_layout", "layout_source",
    "apply", "remove", "stats", "reset", "record", "calibrate", "Calibration", "register_layout", "unregister_layout",
    "CacheConfig", "EasyCacheConfig", "FixedIntervalConfig", "BACConfig", "BlockDriftConfig", "ERTACacheConfig", "ScheduleConfig", "CacheQuantConfig",
    "ModelLayout", "BlockIO", "BlockUnits", "CacheStats", "Recording", "Recipe",
    "load_recipe", "save_recipe", "packaged_recipes",
    "CachekitError", "ConfigError", "RecipeError", "UnsupportedModelError", "AlreadyAppliedError", "NotAppliedError",
    "CompositionError", "ConcurrencyError", "CacheBudgetError", "RankMismatchError",
    "estimate_cache_bytes", "CacheEstimate", "HistoryStorage",
]
