"""The ``Example:`` sections of the modules listed here run as written (doctest)."""

import doctest
import importlib

import pytest

#: modules whose every example is runnable without a downloaded model
RUNNABLE = ["cachekit.api", "cachekit.recipe", "cachekit.methods.fixed_interval", "cachekit.methods.easycache",
            "cachekit.methods.block_drift", "cachekit.methods.schedule", "cachekit.calibration", "cachekit.runtime.observe",
            "cachekit.memory", "cachekit.runtime.history", "cachekit.methods.cachequant", "cachekit.planning.cachequant",
            "cachekit.errors",
            "cachekit.config", "cachekit.methods.bac", "cachekit.methods.ertacache", "cachekit.adapters.base",
            "cachekit.adapters.registry", "cachekit.adapters.discover", "cachekit.runtime.stats", "cachekit.recording",
            "cachekit.planning.bac", "cachekit.planning.ertacache", "cachekit.planning.lemica"]


@pytest.mark.parametrize("name", RUNNABLE)
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
