"""cachekit: training-free caching for diffusion transformers.

    import cachekit
    cachekit.apply(pipe)     # the recipe for this model family
    cachekit.remove(pipe)    # exactly undone
"""

from .adapters import BlockIO, ModelLayout, UnsupportedModelError
from .api import AlreadyAppliedError, NotAppliedError, apply, remove, reset, stats
from .config import CacheConfig, ConfigError
from .methods import BACConfig, BlockDriftConfig, EasyCacheConfig, ERTACacheConfig, FixedIntervalConfig
from .recipe import Recipe, RecipeError, load_recipe, packaged_recipes, save_recipe
from .runtime.state import CacheStats

__version__ = "0.1.0"

__all__ = [
    "apply", "remove", "stats", "reset",
    "CacheConfig", "EasyCacheConfig", "FixedIntervalConfig", "BACConfig", "BlockDriftConfig", "ERTACacheConfig",
    "ModelLayout", "BlockIO", "CacheStats", "Recipe",
    "load_recipe", "save_recipe", "packaged_recipes",
    "ConfigError", "RecipeError", "UnsupportedModelError", "AlreadyAppliedError", "NotAppliedError",
]
