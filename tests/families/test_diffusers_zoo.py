"""Every diffusers 0.42.1 transformer class with a test configuration, on that configuration
(tests/helpers/diffusers_zoo.py; harvested by eval/harvest_diffusers_tests.py) and with every one-layer
list made two layers: through its registered layout, and through discovery alone (a subclass no
layout is registered for, as a class released after this table would be).

Per model: interval 1 bit-exact; interval 2 reuses (fraction < 1) and the output differs from the
uncached one (reuse that really happened); remove exact; a second generation identical to the
first; the default (units + Taylor) runs and reuses. Random weights: plumbing, never quality.
"""

from __future__ import annotations

import pytest
import torch

import cachekit
from cachekit import FixedIntervalConfig
from cachekit import propose_layout
from cachekit.adapters.registry import LAYOUTS

import diffusers_zoo as Z

pytest.importorskip("diffusers")

EXACT = FixedIntervalConfig(interval=1, warmup=0, final_steps=0)
REUSE = FixedIntervalConfig(interval=2, warmup=1)
N = 6   # calls per generation, the timestep falling from call to call

#: (class name, reason) of the classes whose block-range methods are refused by design, with the
#: line docs/families.md gives; unit-level methods (the default, BAC) run on them.
SEGMENTS_REFUSED = {"LatteTransformer3DModel": "spatial and temporal blocks alternate"}


def _cases():
    out = []
    for name in Z.names():
        for deep in (False, True):
            out.append(pytest.param(name, deep, id=f"{name}{'-2layers' if deep else ''}"))
    return out


def _build(name, deep, cls=None):
    try:
        if cls is None:
            model = Z.build(name, deep=deep)
        else:
            torch.manual_seed(0)
            model = Z.build(name, deep=deep)
            model.__class__ = cls   # same weights, a class no layout is registered for
        calls = Z.calls(name, N)
        ref = Z.run(model, calls)
    except (ImportError, NameError, IndexError, RuntimeError, ValueError, TypeError) as e:
        # the configuration itself does not build or run with the installed diffusers (e.g. Cosmos 2
        # needs torchvision; HiDream's and Bria-Fibo's inputs hold one entry per layer)
        pytest.skip(f"{name}{' (2 layers)' if deep else ''} does not run uncached: {type(e).__name__}: {e}"[:200])
    return model, calls, ref


def _one_generation(model, config, calls):
    cachekit.apply(model, config)
    try:
        out = Z.run(model, calls)
        stats = cachekit.stats(model)
        again = Z.run(model, calls)   # the timestep climbs back: a new generation
    finally:
        cachekit.remove(model)
    return out, stats, again


def _checks(name, model, calls, ref, segments=True):
    if segments:
        out, _, _ = _one_generation(model, EXACT, calls)
        assert Z.same(out, ref), f"{name}: interval 1 is not bit-exact"
        out, stats, again = _one_generation(model, REUSE, calls)
        assert stats.computed_fraction < 1, f"{name}: interval 2 reused nothing"
        assert not Z.same(out, ref), f"{name}: interval 2 reported reuse but the output is the uncached one"
        assert Z.same(out, again), f"{name}: a second generation differs from the first"
        assert Z.same(Z.run(model, calls), ref), f"{name}: remove is not exact"
    out, stats, again = _one_generation(model, None, calls)
    assert stats.computed_fraction < 1 and not Z.same(out, ref), f"{name}: the default reused nothing"
    assert Z.same(out, again), f"{name}: the default's second generation differs"
    assert Z.same(Z.run(model, calls), ref), f"{name}: remove after the default is not exact"


@pytest.mark.parametrize("name,deep", _cases())
def test_registered_layout(name, deep):
    model, calls, ref = _build(name, deep)
    assert Z.entry(name)["class"] in LAYOUTS, f"{name} has no registered layout"
    cls = type(model).__name__
    if cls in SEGMENTS_REFUSED:
        with pytest.raises(cachekit.UnsupportedModelError, match="block-range reuse cannot run"):
            cachekit.apply(model, REUSE)
        assert "forward" not in vars(model)
    _checks(name, model, calls, ref, segments=cls not in SEGMENTS_REFUSED)


@pytest.mark.parametrize("name,deep", _cases())
def test_discovery_alone(name, deep):
    """The same checks on a subclass nobody registered: its layout comes from its first call."""
    base = Z.model_class(name)
    unseen = type(f"Unseen{base.__name__}", (base,), {"__module__": __name__})
    model, calls, ref = _build(name, deep, unseen)
    found = propose_layout(model, **calls[0])
    registered = LAYOUTS.get(Z.entry(name)["class"])
    if registered is not None and registered.segment_lists != () and found.segment_lists != ():
        # discovery finds what is registered for block-range methods (the overrides in
        # diffusers_layouts.py correct names and units, never which blocks are cached)
        assert found.segment_paths == registered.segment_paths, f"{name}: discovered {found.segment_paths}"
    _checks(name, model, calls, ref, segments=found.segment_paths != ())
