"""Every error cachekit raises, in one place.

Each derives from ``CachekitError`` (catch it to catch anything cachekit refused) and from the builtin
a caller would expect for the same mistake (``ValueError`` for a bad value, ``TypeError`` for a model
cachekit cannot read, ``RuntimeError`` for a state that forbids the call), so code written against the
builtins keeps working. Messages are one line naming the problem; the target is left untouched.
"""

from __future__ import annotations

__all__ = ["CachekitError", "ConfigError", "RecipeError", "UnsupportedModelError", "AlreadyAppliedError",
           "NotAppliedError", "CompositionError", "ConcurrencyError", "CacheBudgetError", "RankMismatchError",
           "WorkloadError", "ReferenceWeightsError", "PolicyLoadError", "CLIError"]


class CachekitError(Exception):
    """Base of every cachekit error; each also derives from the built-in a user may already catch
    (ValueError, TypeError or RuntimeError).

    Example:
        >>> import torch, cachekit
        >>> try:
        ...     cachekit.remove(torch.nn.Linear(2, 2))     # nothing applied
        ... except cachekit.CachekitError as e:
        ...     print(type(e).__name__, isinstance(e, RuntimeError))
        NotAppliedError True
    """


class ConfigError(CachekitError, ValueError):
    """A config or recipe value is wrong. The message is one line naming the key and what is allowed."""


class RecipeError(ConfigError):
    """A recipe file is unreadable or invalid; the message names the file and the key."""


class UnsupportedModelError(CachekitError, TypeError):
    """cachekit cannot tell where the transformer blocks of this model are."""


class AlreadyAppliedError(CachekitError, RuntimeError):
    """The target (or the model inside it) already carries cachekit hooks."""


class NotAppliedError(CachekitError, RuntimeError):
    """The target carries no cachekit hooks."""


class CompositionError(CachekitError, RuntimeError):
    """Something changed the model after ``cachekit.apply`` in a way that would turn caching off."""


class ConcurrencyError(CachekitError, RuntimeError):
    """Two generations at once on one model with cachekit applied."""


class CacheBudgetError(CachekitError, RuntimeError):
    """The cache would hold more than ``max_cache_bytes``."""


class RankMismatchError(CachekitError, RuntimeError):
    """``check_ranks``: two ranks took different decisions (they would hang in the model's collectives)."""


class WorkloadError(CachekitError, ValueError):
    """The model or the inputs cannot be loaded; one line saying which and why."""


class ReferenceWeightsError(CachekitError, ValueError):
    """A shipped reference model's weight or config file is missing, corrupted or does not match."""


class PolicyLoadError(CachekitError, RuntimeError):
    """The policy's weight or config file is missing, unreadable or does not match the model."""


class CLIError(CachekitError):
    """Bad input on the command line: printed as one line, exit status 2."""
