"""Seeded data collection (scripted expert) + training of the reference diffusion policy.

    python reference/train_policy.py --task pointmass --out assets/pointmass_policy   # shipped
    SDL_VIDEODRIVER=dummy python reference/train_policy.py --task pusht --out OUT      # see card
    python reference/train_policy.py --task metaworld:push-v3 --n-layer 4 --out reference_weights/metaworld_push_policy

Meta-World (``metaworld:TASK``, needs the ``[metaworld]`` extra): the task's scripted expert from
``metaworld.policies`` on seeded scenes (:mod:`cachekit.evaluation.tasks.metaworld`); successful episodes are
kept up to their success step.

Point mass (:class:`PointMassExpert`): go around the obstacle on a randomly drawn side, then to the goal.

PushT (:class:`PushTExpert`): the expert is a push-primitive planner with a simulator in the loop. Each time it has no plan it samples
contact points on the T's outline, three push directions around the inward normal and a few push lengths,
simulates every push from the current state (restoring the pymunk bodies afterwards), and keeps the one
that brings the T's 8 outline corners closest to the goal pose (plus a small travel-distance penalty).
It then drives the agent to the pre-push point (straight, or around the T along a clearance ring when the
straight path would touch it) and executes the push. Push lengths shrink as the error shrinks.
Only successful episodes (coverage > 0.95 within 300 steps) are kept as demonstrations.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch

from cachekit.evaluation.tasks import metaworld as mw
from cachekit.evaluation.tasks.pointmass import MAX_STEPS, TASKS, PointMassEnv, make_env
from cachekit.reference.policy import DiffusionPolicy, PolicyConfig

# T outline in the block's local frame (union of the two boxes of gym-pusht's add_tee, scale 30).
OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)
R_AGENT = 15.0


def _rot(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


class PushTExpert:
    """Scripted PushT expert (see module docstring). ``act()`` returns the next agent target."""

    def __init__(self, env, rng: np.random.Generator, push_step=8.0, nav_step=20.0, lam=0.03):
        import shapely.geometry as sg

        self.sg = sg
        self.env, self.rng = env, rng
        self.push_step, self.nav_step, self.lam = push_step, nav_step, lam
        self.queue: list[np.ndarray] = []
        gb = env.get_goal_pose_body(env.goal_pose)
        self.goal_kp = np.array([tuple(gb.local_to_world(tuple(v))) for v in OUTLINE])
        n = len(OUTLINE)
        area = 0.5 * sum(OUTLINE[i, 0] * OUTLINE[(i + 1) % n, 1] - OUTLINE[(i + 1) % n, 0] * OUTLINE[i, 1]
                         for i in range(n))
        self.edges = []
        for i in range(n):
            a, b = OUTLINE[i], OUTLINE[(i + 1) % n]
            t = b - a
            L = float(np.linalg.norm(t))
            t = t / L
            nrm = np.array([t[1], -t[0]]) if area > 0 else np.array([-t[1], t[0]])
            self.edges.append((a, t, L, nrm))

    def _kp(self):
        b = self.env.block
        return np.array([tuple(b.local_to_world(tuple(v))) for v in OUTLINE])

    def error(self) -> float:
        """Mean distance (px) between the T's outline corners and the goal's."""
        return float(np.mean(np.linalg.norm(self._kp() - self.goal_kp, axis=1)))

    def _save(self):
        e = self.env
        return (tuple(e.agent.position), tuple(e.agent.velocity), tuple(e.block.position), e.block.angle,
                tuple(e.block.velocity), e.block.angular_velocity)

    def _restore(self, s):
        e = self.env
        (e.agent.position, e.agent.velocity, e.block.position, e.block.angle,
         e.block.velocity, e.block.angular_velocity) = s

    def _simulate(self, targets):
        from pymunk.vec2d import Vec2d

        e = self.env
        for act in targets:
            act = Vec2d(*act)
            for _ in range(10):  # the env's PD control loop, 10 physics steps per env step
                acc = e.k_p * (act - e.agent.position) + e.k_v * (Vec2d(0, 0) - e.agent.velocity)
                e.agent.velocity += acc * e.dt
                e.space.step(e.dt)

    def _nav_path(self, start, goal, poly):
        sg = self.sg
        if sg.LineString([start, goal]).distance(poly) >= R_AGENT + 3:
            pts = [np.asarray(start), np.asarray(goal)]
        else:
            ring = poly.buffer(R_AGENT + 12, quad_segs=4).exterior
            L = ring.length
            s0, s1 = ring.project(sg.Point(start)), ring.project(sg.Point(goal))
            d = (s1 - s0) % L
            if d <= L / 2:
                ss = np.linspace(s0, s0 + d, max(2, int(d / 10) + 1))
            else:
                ss = np.linspace(s0, s0 - (L - d), max(2, int((L - d) / 10) + 1))
            pts = ([np.asarray(start)] + [np.array(ring.interpolate(s % L).coords[0]) for s in ss]
                   + [np.asarray(goal)])
        pts = [np.clip(p, 20, 492) for p in pts]
        out = []
        for a, b in zip(pts[:-1], pts[1:]):
            k = max(1, int(math.ceil(np.linalg.norm(b - a) / self.nav_step)))
            out += [a + (b - a) * j / k for j in range(1, k + 1)]
        return out

    def _plan(self) -> bool:
        e = self.env
        state = self._save()
        e0 = self.error()
        b = e.block
        R = _rot(b.angle)
        poly = self.sg.Polygon([tuple(b.local_to_world(tuple(v))) for v in OUTLINE])
        agent = np.array(tuple(e.agent.position))
        fine = e0 <= 6
        lengths = [15, 40, 80] if e0 > 20 else ([4, 10, 25] if not fine else [1, 2, 4, 8])
        dirs = (-0.6, -0.3, 0.0, 0.3, 0.6) if fine else (-0.45, 0.0, 0.45)
        best_cost, best = e0 - (0.05 if fine else 0.3), None
        for (a, t, L, nrm) in self.edges:
            for _ in range(max(1, int(L / (10 if fine else 20)))):
                p = a + t * self.rng.uniform(0.05, 0.95) * L
                pw = np.array(tuple(b.local_to_world(tuple(p))))
                nw = R @ nrm
                pre = pw + nw * (R_AGENT + 4)
                if np.any(pre < 20) or np.any(pre > 492):
                    continue
                for dth in dirs:
                    d = _rot(dth) @ (-nw)
                    for Lp in lengths:
                        n = max(1, int(math.ceil((Lp + 4) / self.push_step)))
                        tg = [pre + d * (Lp + 4) * (j / n) for j in range(1, n + 1)]
                        self._restore(state)
                        e.agent.position, e.agent.velocity = tuple(pre), (0, 0)
                        self._simulate(tg)
                        cost = self.error() + self.lam * 0.5 * float(np.linalg.norm(pre - agent))
                        if cost < best_cost:
                            best_cost, best = cost, (pre, tg)
        self._restore(state)
        if best is None:
            return False
        pre, tg = best
        self.queue = [np.asarray(x) for x in self._nav_path(agent, pre, poly)] + [np.asarray(x) for x in tg]
        return True

    def act(self) -> np.ndarray:
        if not self.queue and not self._plan():
            jiggle = np.array(tuple(self.env.agent.position)) + self.rng.normal(0, 20, 2)
            self.queue = [np.clip(jiggle, 20, 492)]
        return self.queue.pop(0)


def run_expert_episode(seed: int, max_steps: int = MAX_STEPS):
    """One expert episode; returns (obs (T, 5), actions (T, 2), success, max coverage)."""
    env = make_env()
    obs, _ = env.reset(seed=seed)
    ex = PushTExpert(env, np.random.default_rng(seed))
    obs_l, act_l = [], []
    maxcov, ok = float(env._get_coverage()), False
    for _ in range(max_steps):
        a = ex.act()
        obs_l.append(np.asarray(obs, dtype=np.float32))
        act_l.append(np.asarray(a, dtype=np.float32))
        obs, _, term, _, info = env.step(np.asarray(a, dtype=np.float64))
        maxcov = max(maxcov, float(info["coverage"]))
        if term:
            ok = True
            break
    env.close()
    return np.stack(obs_l), np.stack(act_l), ok, maxcov


class PointMassExpert:
    """Goes around the obstacle on a side drawn at random (50/50), through a jittered side waypoint,
    then to the goal; each action is the next position (a step of at most 0.04 toward the waypoint)."""

    def __init__(self, env: PointMassEnv, rng: np.random.Generator):
        self.env = env
        side = rng.choice([-1.0, 1.0])
        self.waypoints = [np.array([0.5 + side * rng.uniform(0.28, 0.33), rng.uniform(0.45, 0.55)]), env.goal.copy()]

    def act(self) -> np.ndarray:
        pos = self.env.pos
        if len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - pos) < 0.03:
            self.waypoints.pop(0)
        d = self.waypoints[0] - pos
        n = float(np.linalg.norm(d))
        step = d if n <= PointMassEnv.MAX_SPEED else d * PointMassEnv.MAX_SPEED / n
        return pos + step


def run_pointmass_episode(seed: int, max_steps: int | None = None):
    max_steps = TASKS["pointmass"][0] if max_steps is None else max_steps
    env = PointMassEnv()
    obs, _ = env.reset(seed=seed)
    ex = PointMassExpert(env, np.random.default_rng(seed + 7_777_777))
    obs_l, act_l, best, ok = [], [], 0.0, False
    for _ in range(max_steps):
        a = ex.act()
        obs_l.append(np.asarray(obs, dtype=np.float32))
        act_l.append(np.asarray(a, dtype=np.float32))
        obs, _, term, _, info = env.step(a)
        best = max(best, info["score"])
        ok = ok or info["is_success"]
        if term:
            break
    return np.stack(obs_l), np.stack(act_l), ok, best


def collect(n_episodes: int, seed: int, log=print, task: str = "pusht"):
    """Run the task's expert on env seeds ``seed .. seed+n-1``; keep successful episodes."""
    if mw.is_metaworld(task):
        return mw.collect_demos(task, n_episodes, seed, log)
    demos, succ, covs, lens = [], [], [], []
    t0 = time.time()
    run = run_pointmass_episode if task == "pointmass" else run_expert_episode
    for i in range(n_episodes):
        o, a, ok, c = run(seed + i)
        succ.append(ok)
        covs.append(c)
        lens.append(len(a))
        if ok:
            demos.append((o, a))
        if (i + 1) % 10 == 0:
            log(f"[collect] {i + 1}/{n_episodes} episodes, expert success {np.mean(succ):.3f}, "
                f"mean max score {np.mean(covs):.3f}, {time.time() - t0:.0f} s")
    stats = {"episodes": n_episodes, "seeds": [seed, seed + n_episodes - 1],
             "success_rate": float(np.mean(succ)), "mean_max_score": float(np.mean(covs)),
             "max_score_std": float(np.std(covs, ddof=1)) if n_episodes > 1 else 0.0,
             "kept_demos": len(demos), "kept_steps": int(sum(len(a) for _, a in demos)),
             "mean_episode_length_all": float(np.mean(lens)), "collect_wall_s": time.time() - t0}
    return demos, stats


def make_windows(demos, horizon: int, n_obs_steps: int, n_action_steps: int):
    """Index windows (demo, start) with Diffusion Policy's padding: start from -(n_obs_steps-1) to
    T - n_action_steps; out-of-range indices are clamped to the episode's first/last step."""
    idx = []
    for d, (_, a) in enumerate(demos):
        T = len(a)
        for s in range(-(n_obs_steps - 1), T - n_action_steps + 1):
            idx.append((d, s))
    return idx


def build_tensors(demos, cfg: PolicyConfig):
    idx = make_windows(demos, cfg.horizon, cfg.n_obs_steps, cfg.n_action_steps)
    obs_w, act_w = [], []
    for d, s in idx:
        o, a = demos[d]
        T = len(a)
        ii = np.clip(np.arange(s, s + cfg.horizon), 0, T - 1)
        obs_w.append(o[ii[: cfg.n_obs_steps]])
        act_w.append(a[ii])
    return torch.as_tensor(np.stack(obs_w)), torch.as_tensor(np.stack(act_w))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="pointmass", help=f"{', '.join(sorted(TASKS))} or metaworld:TASK (e.g. metaworld:push-v3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-episodes", type=int, default=200, help="expert episodes to run (successes kept)")
    ap.add_argument("--demo-seed", type=int, default=100_000, help="env seeds of the expert episodes start here")
    ap.add_argument("--demos-cache", default=None, help="npz to load/save the demonstrations")
    ap.add_argument("--n-emb", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-train-minutes", type=float, default=24.0,
                    help="stop training early (and say so) if it runs past this")
    ap.add_argument("--save-every", type=int, default=500)
    args = ap.parse_args(argv)
    if args.task not in TASKS and not mw.is_metaworld(args.task):
        ap.error(f"--task must be one of {', '.join(sorted(TASKS))} or metaworld:TASK, got {args.task!r}")
    if mw.is_metaworld(args.task):
        mw.task_spec(args.task)   # a bad name fails here, before any work

    t_start = time.time()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    command = "python reference/train_policy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log(command)

    if args.demos_cache and os.path.exists(args.demos_cache):
        z = np.load(args.demos_cache, allow_pickle=False)
        demos = [(z[f"obs_{i}"], z[f"act_{i}"]) for i in range(int(z["n"]))]
        expert_stats = json.loads(str(z["stats"]))
        log(f"[collect] loaded {len(demos)} demos from {args.demos_cache}")
    else:
        demos, expert_stats = collect(args.demo_episodes, args.demo_seed, log, args.task)
        if args.demos_cache:
            arrs = {f"obs_{i}": o for i, (o, _) in enumerate(demos)}
            arrs.update({f"act_{i}": a for i, (_, a) in enumerate(demos)})
            np.savez_compressed(args.demos_cache, n=len(demos), stats=json.dumps(expert_stats), **arrs)
    log(f"[collect] expert: {json.dumps(expert_stats)}")
    if not demos:
        raise SystemExit("no successful expert demonstrations")

    if args.task == "pointmass":
        cfg = PolicyConfig(obs_dim=4, cond_dim=4, obs_transform="identity", n_emb=args.n_emb, p_drop_attn=args.dropout,
                           n_layer=args.n_layer)
    elif mw.is_metaworld(args.task):
        cfg = PolicyConfig(obs_dim=mw.OBS_DIM, cond_dim=mw.OBS_DIM, obs_transform="identity", action_dim=mw.ACTION_DIM,
                           n_emb=args.n_emb, n_layer=args.n_layer, p_drop_attn=args.dropout)
    else:
        cfg = PolicyConfig(n_emb=args.n_emb, p_drop_attn=args.dropout, n_layer=args.n_layer)
    obs_w, act_w = build_tensors(demos, cfg)
    all_obs = torch.as_tensor(np.concatenate([o for o, _ in demos]))
    all_act = torch.as_tensor(np.concatenate([a for _, a in demos]))
    feats = DiffusionPolicy.obs_features(all_obs, cfg.obs_transform)
    stats = {"obs_min": feats.min(0).values, "obs_max": feats.max(0).values,
             "act_min": all_act.min(0).values, "act_max": all_act.max(0).values}
    if mw.is_metaworld(args.task):
        # Meta-World's 39-d observation has dims that are constant in a task's demos (the absent
        # second object: zeros; a fixed quaternion). Min-max over a span of ~0 would turn a 1e-4
        # wobble at evaluation into a feature of ~100; those dims get a span of 2 (centred) instead.
        small = (stats["obs_max"] - stats["obs_min"]) < 1e-2
        stats["obs_min"] = torch.where(small, stats["obs_min"] - 1.0, stats["obs_min"])
        stats["obs_max"] = torch.where(small, stats["obs_max"] + 1.0, stats["obs_max"])
    policy = DiffusionPolicy(cfg, stats)
    cond_all = policy.normalize_obs(obs_w)
    x0_all = policy.normalize_action(act_w)
    model = policy.model
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[train] {len(obs_w)} windows from {len(demos)} demos; model {n_params / 1e6:.3f} M params")

    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay_params = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos_emb" not in n]
    other_params = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos_emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay_params, "weight_decay": args.weight_decay},
                             {"params": other_params, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = policy.scheduler
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    t_train = time.time()
    losses = []
    stopped_early = False
    step = 0
    extra = {}

    def save(tag):
        out_policy = DiffusionPolicy(cfg, stats)
        out_policy.model.load_state_dict(ema.state_dict())
        if mw.is_metaworld(args.task):
            spec = mw.task_spec(args.task)
            extra.update({
                "task_name": mw.TASK_PREFIX + spec.name, "env": f"metaworld {spec.name}-goal-observable, scene from env.seed(s)",
                "max_episode_steps": spec.max_steps, "obs": "39-d Meta-World state (goal observable)",
                "action": "hand delta xyz and gripper effort in [-1, 1]", "success": "info['success'] at any step",
                "expert_policy": spec.expert_class})
        elif args.task == "pusht":
            extra.update({
                "task_name": "pusht", "env_id": "gym_pusht/PushT-v0", "obs_type": "state",
                "max_episode_steps": MAX_STEPS, "success_threshold_coverage": 0.95,
                "goal_pose": [256.0, 256.0, math.pi / 4], "action": "absolute agent target (x, y) in [0, 512]"})
        else:
            extra.update({
                "task_name": "pointmass", "env": "cachekit.evaluation.tasks.pointmass.PointMassEnv",
                "max_episode_steps": TASKS["pointmass"][0], "obs": "[x, y, goal_x, goal_y]",
                "action": "absolute target (x, y) in [0, 1]; moves at most 0.04 per step",
                "success": "within 0.04 of the goal without touching the obstacle"})
        extra.update({
            "expert": expert_stats, "train": {
                "command": command, "steps_done": step, "steps_planned": args.steps,
                "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                "ema_decay": args.ema, "threads": args.threads, "seed": args.seed, "n_layer": args.n_layer,
                "windows": len(obs_w), "n_params": n_params, "stopped_early": stopped_early,
                "final_loss_avg100": float(np.mean(losses[-100:])) if losses else None,
                "train_wall_s": time.time() - t_train, "total_wall_s": time.time() - t_start,
                "checkpoint": tag,
            }})
        out_policy.save(args.out, extra=extra)

    for step in range(args.steps):
        ix = torch.randint(0, len(obs_w), (args.batch_size,), generator=gen)
        x0, cond = x0_all[ix], cond_all[ix]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (args.batch_size,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(model(xt, t, cond), noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            el = time.time() - t_train
            log(f"[train] step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f} "
                f"lr {lr_at(step):.2e} {el:.0f} s ({el / (step + 1):.3f} s/step)")
        if args.save_every and (step + 1) % args.save_every == 0:
            step += 1
            save(f"step {step}")
            step -= 1
        if (time.time() - t_train) / 60 > args.max_train_minutes:
            stopped_early = True
            log(f"[train] stopping early at step {step + 1}: past --max-train-minutes {args.max_train_minutes}")
            break
    step += 1
    save("final")
    log(f"[done] saved {args.out}; training {time.time() - t_train:.0f} s, total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
