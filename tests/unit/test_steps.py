"""The one step source (runtime/steps.py), driven without a model: contexts, scheduler ticks, timesteps."""

import torch

from cachekit.runtime.steps import Context, StepSource, TimestepReader


def timestep_source():
    return StepSource(lambda args, kwargs: kwargs.get("t"))


def walk(src, calls):
    """calls: (t, context or None) per model call -> (step, branch, leader, new_generation)."""
    out = []
    for t, ctx in calls:
        p = src.locate((), {"t": t}, ctx)
        out.append((p.step, p.branch, p.leader, p.new_generation))
    return out


def test_timestep_values_count_steps_and_branches():
    src = timestep_source()
    got = walk(src, [(999.0, None), (999.0, None), (500.0, None), (500.0, None), (1.0, None)])
    assert got == [(0, 0, True, False), (0, 1, False, False), (1, 0, True, False), (1, 1, False, False),
                   (2, 0, True, False)]
    # the loop runs 999 -> 1; a timestep moving back up starts a new generation
    assert walk(src, [(999.0, None)]) == [(0, 0, True, True)]


def test_num_steps_ends_a_generation_and_ascending_loops_work():
    src = timestep_source()
    src.start(2)
    assert walk(src, [(0.0, None), (0.5, None), (0.7, None)]) == [
        (0, 0, True, False), (1, 0, True, False), (0, 0, True, True)]
    src = timestep_source()
    assert [s for s, *_ in walk(src, [(0.1, None), (0.2, None), (0.3, None)])] == [0, 1, 2]


def test_context_fields_come_first():
    """Wan's pipeline: cache_context("cond"/"uncond", step_index=i, num_inference_steps=n). The
    timestep is never read when the context tells the step."""
    reads = []
    src = StepSource(lambda a, k: reads.append(1) or 5.0)
    calls = [(None, Context(name, step_index=i, num_inference_steps=3)) for i in range(3) for name in ("cond", "uncond")]
    got = [(p.step, p.branch, p.leader, p.num_steps) for p in (src.locate((), {}, c) for _, c in calls)]
    assert got == [(0, "cond", True, 3), (0, "uncond", False, 3), (1, "cond", True, 3), (1, "uncond", False, 3),
                   (2, "cond", True, 3), (2, "uncond", False, 3)]
    assert not reads
    p = src.locate((), {}, Context("cond", step_index=0, num_inference_steps=3))
    assert p.new_generation and p.step == 0


def test_step_index_is_the_step_even_when_the_loop_starts_later():
    src = timestep_source()
    steps = [src.locate((), {}, Context("cond", step_index=i)).step for i in (4, 5, 6)]
    assert steps == [4, 5, 6]


def test_scheduler_ticks_key_a_clocked_generation():
    reads = []
    src = StepSource(lambda a, k: reads.append(1) or 7.0)
    src.scheduler_started(3, calls_before=0)
    steps = []
    for _ in range(3):
        for _branch in range(2):
            steps.append(src.locate((), {}, None).step)
        src.tick()
    assert steps == [0, 0, 1, 1, 2, 2] and not reads


def test_scheduler_without_step_calls_is_distrusted():
    import pytest

    src = timestep_source()
    src.scheduler_started(None, calls_before=0)
    for t in (3.0, 2.0):
        src.locate((), {"t": t}, None)          # keyed by the (never advancing) counter: one step
    with pytest.warns(RuntimeWarning, match="set_timesteps was called but its step never was"):
        src.scheduler_started(None, calls_before=2)
    assert [src.locate((), {"t": t}, None).step for t in (3.0, 2.0)] == [0, 1]   # timestep values now


def test_a_failed_forward_starts_afresh():
    src = timestep_source()
    walk(src, [(3.0, None), (2.0, None)])
    src.failed = True
    assert walk(src, [(1.0, None)]) == [(0, 0, True, True)]


def test_timestep_reader_positions_and_types():
    def forward(hidden_states, timestep, cond=None):
        pass

    r = TimestepReader(forward, "timestep")
    assert r((1, torch.tensor([7.0, 7.0])), {}) == 7.0 and r((1,), {"timestep": 3}) == 3.0
    assert r((1,), {}) is None and TimestepReader(forward, None)((1, 2), {}) is None
    assert Context.from_call(("cond",), {"step_index": torch.tensor(2)}).step_index == 2
