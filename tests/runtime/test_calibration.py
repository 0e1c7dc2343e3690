"""The calibration layer (cachekit.calibration): one route record/measure -> plan -> recipe for every
planner, the runtime's ForwardTap behind LeMiCa's shared prefixes, and the layering rules it keeps
(planning/ is pure; nothing outside runtime/ assigns ``forward``)."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import cachekit
from cachekit import ConfigError, FixedIntervalConfig
from cachekit.calibration import Measured, calibrate, lemica_edges, measure, plan, save
from cachekit.planning import plan_bac, plan_erta
from cachekit.runtime.tap import ForwardTap
from tiny_pipelines import build, generate

PACKAGE = Path(cachekit.__file__).resolve().parent


def gen(pipe, steps=6, seed=0):
    return generate("dit", pipe, steps=steps, seed=seed)


@pytest.fixture(scope="module")
def dit():
    return build("dit")


@pytest.fixture(scope="module")
def runs(dit):
    return [lambda s=s: gen(dit, steps=6, seed=s) for s in (0, 1)]


# ---- the tap ------------------------------------------------------------------------------------
def test_tap_records_counts_and_replays_the_model_calls(dit, runs):
    rec = ForwardTap(record=True)
    cachekit.apply(dit, FixedIntervalConfig(interval=1), tap=rec)
    try:
        ref = runs[0]()
    finally:
        cachekit.remove(dit)
    assert rec.calls == rec.ran == len(rec.outputs) > 0
    # replaying every call: the model never runs, the output is the recorded trajectory's
    rep = ForwardTap(replay=rec.outputs)
    cachekit.apply(dit, FixedIntervalConfig(interval=1), tap=rep)
    try:
        got = runs[0]()
    finally:
        cachekit.remove(dit)
    assert rep.calls == rec.calls and rep.ran == 0
    assert torch.equal(got, ref)
    assert "forward" not in vars(dit.transformer)   # removed exactly


def test_tap_is_refused_where_it_cannot_follow_one_model(dit):
    with pytest.raises(TypeError, match="tap must be a cachekit.runtime.tap.ForwardTap"):
        cachekit.apply(dit, FixedIntervalConfig(interval=1), tap=object())
    assert "forward" not in vars(dit.transformer)


# ---- one route for every planner ----------------------------------------------------------------
def test_calibrate_bac_and_ertacache_equal_the_planners_on_a_recording(dit, runs):
    bac = calibrate(dit, runs, "bac", updates=3, top_n=1)
    rec = cachekit.record(dit, runs)
    assert bac.config == plan_bac(rec, updates=3, top_n=1).config
    erta = calibrate(dit, runs, "ertacache", fraction=0.5)
    stack = cachekit.record(dit, runs, level="stack")
    assert erta.config == plan_erta(stack, fraction=0.5).config
    assert erta.config == plan_erta(stack.arrays(), stack.fingerprint, fraction=0.5, groups=stack.run_ids()).config
    assert erta.details["recordings"] == 2 and "validation" in erta.details


def test_one_measurement_plans_several_budgets(dit, runs):
    measured = measure(dit, runs, "lemica", max_skip=3)
    assert measured.data.runs == 2 and measured.data.model_calls < measured.data.full_calls
    small, large = (plan(measured, fraction=f) for f in (0.5, 0.67))
    assert len(small.config.compute_steps) < len(large.config.compute_steps)
    assert small.details["model_calls"] == measured.data.model_calls
    # the candidates were measured on the calibration runs, one generation each
    assert small.plan.refine_calls > 0 and set(small.plan.checked) >= {"minimax", "sum"}


def test_lemica_weights_do_not_depend_on_the_replayed_prefixes(dit, runs):
    a = lemica_edges(dit, runs, max_skip=3)
    b = lemica_edges(dit, runs, max_skip=3, replay=False)
    assert np.array_equal(a.weights, b.weights) and a.model_calls < b.model_calls == b.full_calls


def test_bad_calibration_requests_are_one_line_errors(dit, runs):
    with pytest.raises(ConfigError, match="method must be one of bac, ertacache, lemica"):
        calibrate(dit, runs, "sgd")
    with pytest.raises(ConfigError, match="exactly one of fraction and max_error for ertacache"):
        calibrate(dit, runs, "ertacache")
    with pytest.raises(ConfigError, match="bac needs updates="):
        plan(Measured("bac", None))
    assert "forward" not in vars(dit.transformer)


def test_save_writes_a_recipe_that_loads_back(dit, runs, tmp_path):
    cal = calibrate(dit, runs, "ertacache", fraction=0.5)
    path = save(cal, tmp_path / "erta.yaml", model_class="DiTTransformer2DModel", steps=6,
                calibration={"seeds": [0, 1]})
    recipe = cachekit.load_recipe(path)
    assert recipe.config == cal.config
    assert recipe.measured["calibration"]["seeds"] == [0, 1]
    assert recipe.measured["calibration"]["computed_steps"] == cal.details["computed_steps"]


# ---- layering rules (issue 29) ------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Modules imported by a file, relative ones resolved against the package."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(rel[:len(rel) - node.level]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_planning_imports_neither_api_nor_adapters():
    for path in (PACKAGE / "planning").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("cachekit.api", "cachekit.adapters", "cachekit.calibration"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_nothing_outside_runtime_assigns_forward():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if (PACKAGE / "runtime") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            if any(isinstance(t, ast.Attribute) and t.attr == "forward" for t in targets):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
                    ("setattr", "__setattr__") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value == "forward"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"forward assigned outside cachekit/runtime: {offenders}"


def test_no_session_is_touched_outside_runtime_and_api():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "runtime" or rel.name == "api.py":
            continue
        assert "_cachekit_session" not in path.read_text(), f"{rel} reaches into a session"


def test_record_then_plan_replays_a_calibration_exactly(dit, runs):
    # the plan from the calibration layer runs as a normal config and is removed exactly
    cal = calibrate(dit, runs, "lemica", fraction=0.5, max_skip=3)
    ref = runs[0]()
    cachekit.apply(dit, dataclasses.replace(cal.config))
    try:
        out = runs[0]()
        frac = cachekit.stats(dit).computed_fraction
    finally:
        cachekit.remove(dit)
    assert frac < 1 and not torch.equal(out, ref)
    assert torch.equal(runs[0](), ref)
