"""The point-mass task of the reference diffusion policy, and its closed-loop evaluation.

Two tasks: ``pointmass`` (the shipped policy: :class:`PointMassEnv`, numpy only, 60 steps max) and
``pusht`` (gym-pusht with state observations, 300 steps max; needs ``pip install gym-pusht``). The task
is read from the policy's config.

From Python, with anything done to ``policy.model`` beforehand (e.g. ``cachekit.apply(policy.model, ...)``):

    from cachekit.evaluation.tasks.pointmass import evaluate
    res = evaluate(policy, episodes=50, seed=0, before_predict=lambda p: cachekit.reset(p.model))

Episodes are run in lock-step batches: one ``predict_action`` call serves every still-running episode of
the batch (same observation history of 2 steps, the first observation repeated at reset, as in Diffusion
Policy). PushT: at most 300 env steps; success = goal coverage > 0.95 (the env terminates); score = the
episode's maximum coverage. Point mass: see :class:`PointMassEnv`. Results depend on ``seed`` and on ``batch_size`` (the sampling
noise of a batch comes from one seeded generator).

The command-line evaluation (with timing and the random / no-op baselines) is the script
``reference/eval_policy.py``, outside the package.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

__all__ = ["PointMassEnv", "TASKS", "MAX_STEPS", "SUCCESS_THRESHOLD", "make_env", "make_task_env",
           "policy_task", "evaluate", "evaluate_baseline", "summarize"]

MAX_STEPS = 300
SUCCESS_THRESHOLD = 0.95


class PointMassEnv:
    """2-D point mass that must reach a goal on the far side of a round obstacle (numpy only).

    Arena [0, 1]^2; obstacle: disc at (0.5, 0.5), radius 0.15 (touching it, with the agent's radius
    0.02, ends the episode as a failure); start x ~ U(0.35, 0.65), y ~ U(0.05, 0.15); goal x ~ U(0.3, 0.7),
    y ~ U(0.85, 0.92). Observation ``[x, y, goal_x, goal_y]``; action: absolute target position, the agent
    moves straight toward it by at most 0.04 per step. Success: within 0.04 of the goal (episode ends).
    ``info["score"]``: progress, 1 - (closest distance to the goal so far) / (initial distance), clipped
    to [0, 1] (1 on success). Demonstrations go around the obstacle on the left or the right (multimodal).
    """

    OBST, R_OBST, R_AGENT, R_GOAL, MAX_SPEED = (0.5, 0.5), 0.15, 0.02, 0.04, 0.04

    def __init__(self):
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)

    def reset(self, seed=None):
        rng = np.random.default_rng(seed)
        self.pos = np.array([rng.uniform(0.35, 0.65), rng.uniform(0.05, 0.15)])
        self.goal = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.85, 0.92)])
        self.d0 = float(np.linalg.norm(self.goal - self.pos))
        self.best = self.d0
        return self._obs(), {}

    def _obs(self):
        return np.concatenate([self.pos, self.goal]).astype(np.float64)

    def initial_score(self):
        return 0.0

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64)[:2], 0.0, 1.0)
        d = a - self.pos
        n = float(np.linalg.norm(d))
        if n > self.MAX_SPEED:
            d *= self.MAX_SPEED / n
        # collision check along the move (a few sub-points)
        hit = False
        for f in (0.25, 0.5, 0.75, 1.0):
            if np.linalg.norm(self.pos + f * d - np.array(self.OBST)) < self.R_OBST + self.R_AGENT:
                hit = True
                self.pos = self.pos + (f - 0.25) * d
                break
        if not hit:
            self.pos = np.clip(self.pos + d, 0.0, 1.0)
        dist = float(np.linalg.norm(self.goal - self.pos))
        self.best = min(self.best, dist)
        success = (not hit) and dist < self.R_GOAL
        score = 1.0 if success else float(np.clip(1 - self.best / self.d0, 0.0, 1.0))
        info = {"is_success": success, "collision": hit, "score": score}
        return self._obs(), float(success), bool(success or hit), False, info

    def close(self):
        pass


class _PushTAdapter:
    """gym-pusht's PushTEnv with ``initial_score`` and ``info["score"]`` (= coverage)."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, k):
        return getattr(self.env, k)

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def initial_score(self):
        return float(self.env._get_coverage())

    def step(self, a):
        o, r, term, trunc, info = self.env.step(np.asarray(a, dtype=np.float64))
        info["score"] = float(info["coverage"])
        return o, r, term, trunc, info

    def close(self):
        self.env.close()


TASKS = {
    # name: (max episode steps, action range for the random baseline)
    "pointmass": (60, (0.0, 1.0)),
    "pusht": (MAX_STEPS, (0.0, 512.0)),
}


def make_env(task: str = "pusht"):
    """``"pusht"``: a headless gym-pusht env with state observations (the unwrapped ``PushTEnv``:
    episodes are capped by this module, not by a TimeLimit wrapper). ``"pointmass"``: :class:`PointMassEnv`."""
    if task == "pointmass":
        return PointMassEnv()
    if task != "pusht":
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import gym_pusht  # noqa: F401  (registers the env)

    return gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True).unwrapped


def make_task_env(task: str):
    env = make_env(task)
    return _PushTAdapter(env) if task == "pusht" else env


def policy_task(policy) -> str:
    return policy.cfg.extra.get("task_name", "pusht") if isinstance(policy.cfg.extra, dict) else "pusht"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a success rate (``(nan, nan)`` for no episodes)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def summarize(successes, scores) -> dict:
    """Success rate (Wilson 95% interval) and mean score (std, normal-approximation 95% interval)."""
    s = np.asarray(successes, dtype=float)
    c = np.asarray(scores, dtype=float)
    n = len(s)
    p = float(s.mean()) if n else float("nan")
    z = 1.96
    wil = list(wilson(float(s.sum()), n, z))
    m = float(c.mean()) if n else float("nan")
    sd = float(c.std(ddof=1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n else float("nan")
    return {
        "episodes": n,
        "success_rate": p,
        "success_rate_ci95": wil,
        "success_rate_std": float(s.std(ddof=1)) if n > 1 else 0.0,
        "mean_max_score": m,
        "max_score_std": sd,
        "mean_max_score_ci95": [m - z * se, m + z * se],
        "per_episode_max_score": [round(float(x), 4) for x in c],
        "per_episode_success": [bool(x) for x in s],
    }


def evaluate(policy, episodes: int = 50, seed: int = 0, max_steps: int | None = None,
             batch_size: int | None = None, num_inference_steps: int | None = None,
             before_predict=None, progress: bool = False) -> dict:
    """Run ``episodes`` closed-loop PushT episodes with env seeds ``seed .. seed+episodes-1``.

    ``policy`` is a :class:`~cachekit.reference.policy.DiffusionPolicy` (whatever was done to its
    ``.model`` is kept). ``before_predict(policy)``, if given, is called before every ``predict_action``
    call (e.g. to reset a cache). Returns :func:`summarize`'s dict plus timing fields.
    """
    cfg = policy.cfg
    task = policy_task(policy)
    max_steps = TASKS[task][0] if max_steps is None else int(max_steps)
    batch_size = episodes if batch_size is None else int(batch_size)
    successes, scores, lengths = [], [], []
    n_calls, t_pred = 0, 0.0
    t0 = time.perf_counter()
    for b0 in range(0, episodes, batch_size):
        seeds = list(range(seed + b0, seed + min(episodes, b0 + batch_size)))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b0)
        envs = [make_task_env(task) for _ in seeds]
        obs = [e.reset(seed=s)[0] for e, s in zip(envs, seeds)]
        hist = [[o] * cfg.n_obs_steps for o in obs]
        done = [False] * len(envs)
        succ = [False] * len(envs)
        maxcov = [e.initial_score() for e in envs]
        steps = [0] * len(envs)
        while not all(done):
            idx = [i for i, d in enumerate(done) if not d]
            oh = torch.as_tensor(np.stack([np.stack(hist[i][-cfg.n_obs_steps:]) for i in idx]), dtype=torch.float32)
            if before_predict is not None:
                before_predict(policy)
            tp = time.perf_counter()
            acts = policy.predict_action(oh, generator=gen, num_inference_steps=num_inference_steps).cpu().numpy()
            t_pred += time.perf_counter() - tp
            n_calls += 1
            for j, i in enumerate(idx):
                for a in acts[j]:
                    o, _, term, _, info = envs[i].step(a.astype(np.float64))
                    hist[i].append(o)
                    steps[i] += 1
                    maxcov[i] = max(maxcov[i], float(info["score"]))
                    if info["is_success"]:
                        succ[i] = True
                    if term or steps[i] >= max_steps:
                        done[i] = True
                        break
                hist[i] = hist[i][-cfg.n_obs_steps:]
            if progress:
                print(f"  batch {b0 // batch_size}: {sum(done)}/{len(done)} done, "
                      f"success so far {sum(succ)}", flush=True)
        for e in envs:
            e.close()
        successes += succ
        scores += maxcov
        lengths += steps
    out = summarize(successes, scores)
    out.update({
        "policy": "diffusion_policy", "task": task, "seed": seed, "max_steps": max_steps, "batch_size": batch_size,
        "num_inference_steps": num_inference_steps or cfg.num_inference_steps,
        "mean_episode_length": float(np.mean(lengths)),
        "predict_action_calls": n_calls, "predict_action_total_s": t_pred,
        "wall_s": time.perf_counter() - t0,
    })
    return out


def evaluate_baseline(kind: str, episodes: int = 50, seed: int = 0, max_steps: int | None = None,
                      task: str = "pusht") -> dict:
    """``kind="random"``: a uniformly random target in [0, 512]^2 every step (seeded);
    ``kind="noop"``: the target is the agent's current position (it stays put)."""
    max_steps = TASKS[task][0] if max_steps is None else int(max_steps)
    lo, hi = TASKS[task][1]
    rng = np.random.default_rng(seed)
    successes, scores = [], []
    for s in range(seed, seed + episodes):
        env = make_task_env(task)
        obs, _ = env.reset(seed=s)
        best, ok = env.initial_score(), False
        for _ in range(max_steps):
            if kind == "random":
                a = rng.uniform(lo, hi, size=2)
            elif kind == "noop":
                a = np.asarray(obs[:2], dtype=np.float64)
            else:
                raise ValueError(kind)
            obs, _, term, _, info = env.step(a)
            best = max(best, float(info["score"]))
            ok = ok or bool(info["is_success"])
            if term:
                break
        env.close()
        successes.append(ok)
        scores.append(best)
    out = summarize(successes, scores)
    out.update({"policy": kind, "task": task, "seed": seed, "max_steps": max_steps})
    return out
