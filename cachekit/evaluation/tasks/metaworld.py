"""Meta-World tasks for the reference diffusion policy: seeded environments, a batch of them stepped
together, scripted-expert demonstrations and batched closed-loop evaluation.

Needs ``pip install metaworld packaging`` (the ``[metaworld]`` extra); imported lazily, so the rest of
cachekit never needs it.

    from cachekit.evaluation.tasks.metaworld import evaluate
    res = evaluate(policy, "push-v3", episodes=200, seed=0)     # one batched predict_action per control step

Environments: Meta-World's goal-observable single-task classes (39-d observation: hand xyz, gripper,
two object poses, the same 18 values one frame earlier, goal xyz; 4-d action: hand delta xyz and
gripper effort in [-1, 1]). Meta-World's own ``MT1`` benchmark draws each reset from 50 fixed
object/goal positions; here every episode seed draws its own positions (``env.seed(s)`` then reset,
Meta-World's ``seeded_rand_vec``), so 200 episodes are 200 different scenes, and episode ``s`` is the
same scene in every row of a benchmark.

Sampling noise is one ``torch.Generator`` per episode (seeded from the episode seed), so an
episode's actions do not depend on which other episodes share its batch, or when they end.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .pointmass import wilson  # noqa: F401  (re-exported: the interval every policy table uses)

__all__ = ["TASK_PREFIX", "MetaWorldTask", "task_spec", "is_metaworld", "make_env", "VectorEnv", "collect_demos",
           "evaluate", "rollout_observations", "expert_policy"]

TASK_PREFIX = "metaworld:"
OBS_DIM, ACTION_DIM = 39, 4

# Scripted experts solve these in 50-100 steps (10 seeded episodes each, env seeds 1000-1009: push
# 64 median / 71 max, pick-place 54 / 60, door-open 77 / 86, drawer-open 88 / 93); Meta-World's own
# cap is 500. A policy episode stops at 200 steps (more than twice the slowest expert episode):
# failures cost the most environment and model time, and few late successes are lost.
DEFAULT_MAX_STEPS = 200


@dataclass(frozen=True)
class MetaWorldTask:
    """One Meta-World task as the policy benchmark runs it.

    Args:
        name: Meta-World v3 task name, e.g. ``"push-v3"``.
        max_steps: environment steps per policy episode before it counts as a failure.
    """

    name: str
    max_steps: int = DEFAULT_MAX_STEPS

    def __post_init__(self) -> None:
        if not self.name.endswith("-v3"):
            raise ValueError(f"Meta-World task must be a v3 task name such as 'push-v3', got {self.name!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    @property
    def expert_class(self) -> str:
        """``push-v3`` -> ``SawyerPushV3Policy`` (metaworld.policies)."""
        return "Sawyer" + "".join(p.capitalize() for p in self.name.split("-")) + "Policy"


def is_metaworld(task: str) -> bool:
    return isinstance(task, str) and task.startswith(TASK_PREFIX)


def task_spec(task: str | MetaWorldTask) -> MetaWorldTask:
    """``"metaworld:push-v3"`` or ``"push-v3"`` -> :class:`MetaWorldTask`."""
    if isinstance(task, MetaWorldTask):
        return task
    name = task[len(TASK_PREFIX):] if is_metaworld(task) else task
    return MetaWorldTask(name)


def _import_metaworld():
    try:
        import metaworld  # noqa: F401
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    except ImportError as e:   # one line, with the fix
        raise ImportError(f"Meta-World tasks need `pip install metaworld packaging` ({e})") from None
    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE


def make_env(task: str | MetaWorldTask):
    """A goal-observable Meta-World env whose scene comes from the seed given to :meth:`VectorEnv.reset`."""
    spec = task_spec(task)
    classes = _import_metaworld()
    key = f"{spec.name}-goal-observable"
    if key not in classes:
        raise ValueError(f"unknown Meta-World task {spec.name!r}")
    env = classes[key](seed=0)
    env._freeze_rand_vec = False      # a new scene at every reset ...
    env.seeded_rand_vec = True        # ... drawn from env.np_random, i.e. from env.seed(s)
    env.max_path_length = max(env.max_path_length, spec.max_steps)
    return env


def expert_policy(task: str | MetaWorldTask):
    """Meta-World's scripted expert for the task (``metaworld.policies.Sawyer...V3Policy()``)."""
    spec = task_spec(task)
    _import_metaworld()
    import metaworld.policies as policies

    cls = getattr(policies, spec.expert_class, None)
    if cls is None:
        raise ValueError(f"Meta-World has no scripted expert {spec.expert_class} for {spec.name!r}")
    return cls()


class VectorEnv:
    """``n`` environments of one task stepped together (a plain loop: MuJoCo steps take ~1 ms here).

    ``reset(seeds)`` starts one episode per seed on the first ``len(seeds)`` envs; ``step(actions)``
    steps every running episode and returns ``(obs, success, done)`` for all of them. An episode is done
    at its first success or at ``max_steps``; a done episode is not stepped again.
    """

    def __init__(self, task: str | MetaWorldTask, n: int):
        if n < 1:
            raise ValueError(f"VectorEnv needs n >= 1 environments, got {n}")
        self.task = task_spec(task)
        self.envs = [make_env(self.task) for _ in range(n)]
        self.active = 0
        self.steps = np.zeros(0, dtype=np.int64)

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) > len(self.envs):
            raise ValueError(f"{len(seeds)} seeds for {len(self.envs)} environments")
        obs = []
        for env, s in zip(self.envs, seeds):
            env.seed(int(s))
            obs.append(env.reset()[0])
        self.active = len(seeds)
        self.steps = np.zeros(self.active, dtype=np.int64)
        self.success = np.zeros(self.active, dtype=bool)
        self.done = np.zeros(self.active, dtype=bool)
        return np.stack(obs)

    def step(self, actions: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``actions`` (active, 4); ``obs`` is the previous observation array, updated in place for the
        episodes still running (done episodes keep their last observation)."""
        actions = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)   # the env's own action box
        for i in np.flatnonzero(~self.done):
            o, _, _, _, info = self.envs[i].step(actions[i])
            obs[i] = o
            self.steps[i] += 1
            if info["success"]:
                self.success[i] = True
            if self.success[i] or self.steps[i] >= self.task.max_steps:
                self.done[i] = True
        return obs, self.success.copy(), self.done.copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def collect_demos(task: str | MetaWorldTask, episodes: int, seed: int, log: Callable[[str], None] = print):
    """Run the scripted expert on env seeds ``seed .. seed+episodes-1`` (one env, reset per seed) and
    keep its successful episodes, up to and including the success step. Actions are clipped to the
    env's [-1, 1] box (the experts' proportional controllers ask for more; the env clips anyway).
    Returns ``(demos, stats)``: a list of (obs (T, 39) float32, actions (T, 4) float32)."""
    spec = task_spec(task)
    env = make_env(spec)
    expert = expert_policy(spec)
    demos, succ, lens = [], [], []
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # metaworld warns on every action that its gains are high
        for k in range(episodes):
            env.seed(seed + k)
            obs, _ = env.reset()
            o_l, a_l, ok = [], [], False
            for _ in range(spec.max_steps):
                a = np.clip(expert.get_action(obs), -1.0, 1.0).astype(np.float32)
                o_l.append(np.asarray(obs, dtype=np.float32))
                a_l.append(a)
                obs, _, _, _, info = env.step(a)
                if info["success"]:
                    ok = True
                    break
            succ.append(ok)
            lens.append(len(a_l))
            if ok:
                demos.append((np.stack(o_l), np.stack(a_l)))
            if (k + 1) % 50 == 0:
                log(f"[collect] {k + 1}/{episodes} expert episodes, success {np.mean(succ):.3f}, {time.time() - t0:.0f} s")
    env.close()
    stats = {"task": spec.name, "episodes": episodes, "seeds": [seed, seed + episodes - 1],
             "success_rate": float(np.mean(succ)), "kept_demos": len(demos),
             "kept_steps": int(sum(len(a) for _, a in demos)), "mean_episode_length_kept": float(np.mean([len(a) for _, a in demos])) if demos else 0.0,
             "max_steps": spec.max_steps, "collect_wall_s": time.time() - t0}
    return demos, stats


def episode_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One noise stream per episode, seeded from its env seed (a fixed odd multiplier keeps the
    streams of neighbouring seeds apart from torch's seed(s) and seed(s+1))."""
    return [torch.Generator().manual_seed(int(s) * 1_000_003 + 17) for s in seeds]


def evaluate(policy: Any, task: str | MetaWorldTask | None = None, episodes: int = 200, seed: int = 0, *,
             envs: VectorEnv | None = None, before_predict: Callable[[Any], None] | None = None,
             after_predict: Callable[[Any, int], None] | None = None, on_observations: Callable[[torch.Tensor], None] | None = None,
             num_inference_steps: int | None = None) -> dict:
    """Closed-loop episodes with env seeds ``seed .. seed+episodes-1``, all in one batch: every control
    step is one ``predict_action`` call over the episodes still running, whose first
    ``n_action_steps`` actions are then executed (observation history of ``n_obs_steps``, the first
    observation repeated at reset, as in Diffusion Policy).

    ``before_predict(policy)`` runs before every call (outside the timed region), ``after_predict(policy,
    batch)`` after it (e.g. to read ``cachekit.stats``); ``on_observations(obs_history)`` sees each
    call's input. ``envs``: a :class:`VectorEnv` of at least ``episodes`` envs to reuse (making 200
    takes ~40 s). Returns :func:`pointmass.summarize`'s dict plus the time spent inside
    ``predict_action`` (``predict_s``), calls, and episode-predictions (``predicted_rows``)."""
    from .pointmass import summarize

    cfg = policy.cfg
    spec = task_spec(task if task is not None else cfg.extra.get("task_name", ""))
    own = envs is None
    envs = VectorEnv(spec, episodes) if own else envs
    if envs.task.name != spec.name:
        raise ValueError(f"envs are {envs.task.name!r}, the task is {spec.name!r}")
    seeds = list(range(seed, seed + episodes))
    gens = episode_generators(seeds)
    t0 = time.perf_counter()
    obs = envs.reset(seeds)
    hist = [obs.copy() for _ in range(cfg.n_obs_steps)]     # oldest first
    done = np.zeros(episodes, dtype=bool)
    success = np.zeros(episodes, dtype=bool)
    t_pred, calls, rows = 0.0, 0, 0
    while not done.all():
        idx = np.flatnonzero(~done)
        oh = torch.as_tensor(np.stack([h[idx] for h in hist], axis=1), dtype=torch.float32)
        if on_observations is not None:
            on_observations(oh)
        if before_predict is not None:
            before_predict(policy)
        tp = time.perf_counter()
        acts = policy.predict_action(oh, generator=[gens[i] for i in idx],
                                     num_inference_steps=num_inference_steps).numpy()
        t_pred += time.perf_counter() - tp
        if after_predict is not None:
            after_predict(policy, len(idx))
        calls += 1
        rows += len(idx)
        full = np.zeros((episodes, ACTION_DIM))
        for k in range(acts.shape[1]):
            full[idx] = acts[:, k]
            obs, success, done_now = envs.step(full, obs)
            hist = hist[1:] + [obs.copy()]
            if done_now[idx].all():
                break
        done = done_now
    steps = envs.steps.copy()
    if own:
        envs.close()
    out = summarize(success.tolist(), success.astype(float).tolist())
    out.update({"policy": "diffusion_policy", "task": TASK_PREFIX + spec.name, "seed": seed, "max_steps": spec.max_steps,
                "mean_episode_length": float(steps.mean()), "predict_calls": calls, "predicted_rows": rows,
                "predict_s": t_pred, "wall_s": time.perf_counter() - t0,
                "num_inference_steps": num_inference_steps or cfg.num_inference_steps})
    return out


def rollout_observations(policy: Any, task: str | MetaWorldTask | None, episodes: int, seed: int,
                         envs: VectorEnv | None = None) -> torch.Tensor:
    """Every observation history the uncached policy met in closed loop on ``episodes`` episodes
    (seeds ``seed..``): calibration inputs that cover whole trajectories, not only first scenes.
    Returns (N, n_obs_steps, 39)."""
    seen: list[torch.Tensor] = []
    evaluate(policy, task, episodes, seed, envs=envs, on_observations=lambda oh: seen.append(oh.clone()))
    return torch.cat(seen)
