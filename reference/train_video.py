"""Train the moving-digits video reference model (a pixel-space WanTransformer3DModel).

    python reference/train_video.py --out assets/moving_digits_wan

(The defaults are the shipped model's settings: 8000 steps of batch 32, peak lr 1e-3, a 55-minute
budget that stops the run first, 2 threads; see the model card.)

Data (generated on the fly, seeded): a clip is 9 frames of 16x16x1 pixels in ``[-1, 1]``
(background -1). One 8x8 scikit-learn digit (content: 0, 1, 4 or 7, drawn from the first 80% of
each class after a seeded shuffle -- the rest is held out for the evaluator's classifier) moves one
pixel per frame in one of four directions: along the motion axis it goes from one edge of the
canvas (offset 0) to the other (offset 8); across it sits at a random offset in [3, 5].

Objective: rectified flow as Wan / diffusers' FlowMatchEulerDiscreteScheduler use it:
``x_s = (1 - s) x0 + s noise``, the transformer predicts ``noise - x0`` at ``timestep = 1000 s``;
``s`` is drawn as ``shift * u / (1 + (shift - 1) u)`` with ``u ~ U(0, 1)`` and the same shift as
the sampling scheduler. Conditions are dropped to the learned null condition with probability 0.1
(classifier-free guidance). AdamW, linear warm-up then cosine decay, gradient clipping, EMA (the
EMA weights are what is saved). The schedule's progress is ``max(step / steps, elapsed / budget)``,
so a run stops cleanly (at the end of its cosine) when either the step count or the wall-clock
budget is reached.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch

from cachekit.reference.video import (
    DEFAULT_SAMPLING,
    DEFAULT_SCHEDULER_CONFIG,
    DEFAULT_TRANSFORMER_CONFIG,
    FORMAT,
    build_transformer,
)
from cachekit.reference.video_conditions import (
    CONTENT_DIGITS,
    CONTENT_NAMES,
    DIRECTION_NAMES,
    DIRECTION_VECTORS,
    NUM_CONDITION_TOKENS,
    TEXT_DIM,
    ConditionEmbedding,
)
from cachekit.reference.weights import CONFIG_NAME, WEIGHTS_NAME, sha256_file

NUM_FRAMES = 9
CANVAS = 16
SPRITE = 8
CROSS_OFFSETS = (3, 5)  # inclusive range of the position across the motion axis
TRAIN_FRACTION = 0.8
DATA_SEED = 1234


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def digit_bank(split: str = "train") -> list[np.ndarray]:
    """Per content class, the 8x8 digits in [0, 1] of the ``"train"`` (80%) or ``"test"`` split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    rng = np.random.RandomState(DATA_SEED)
    bank = []
    for digit in CONTENT_DIGITS:
        idx = np.flatnonzero(d.target == digit)
        idx = idx[rng.permutation(len(idx))]
        cut = int(round(TRAIN_FRACTION * len(idx)))
        sel = idx[:cut] if split == "train" else idx[cut:] if split == "test" else idx
        bank.append(images[sel])
    return bank


def trajectory(direction: int, cross: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of the sprite in each frame."""
    dy, dx = DIRECTION_VECTORS[direction]
    travel = CANVAS - SPRITE  # 8 pixels in 8 steps -> 9 frames
    out = []
    for f in range(NUM_FRAMES):
        along = f * travel // (NUM_FRAMES - 1)
        if dy:
            row = along if dy > 0 else travel - along
            out.append((row, cross))
        else:
            col = along if dx > 0 else travel - along
            out.append((cross, col))
    return out


def render_clips(rng: np.random.Generator, bank: list[np.ndarray], contents: np.ndarray,
                 directions: np.ndarray) -> np.ndarray:
    """Clips ``(N, F, H, W)`` in [0, 1] for the given content and direction indices."""
    n = len(contents)
    clips = np.zeros((n, NUM_FRAMES, CANVAS, CANVAS), dtype=np.float32)
    for i in range(n):
        sprites = bank[int(contents[i])]
        sprite = sprites[rng.integers(len(sprites))]
        cross = int(rng.integers(CROSS_OFFSETS[0], CROSS_OFFSETS[1] + 1))
        for f, (r, c) in enumerate(trajectory(int(directions[i]), cross)):
            clips[i, f, r:r + SPRITE, c:c + SPRITE] = sprite
    return clips


def sample_batch(rng: np.random.Generator, bank, batch: int):
    contents = rng.integers(len(CONTENT_NAMES), size=batch)
    directions = rng.integers(len(DIRECTION_NAMES), size=batch)
    clips = render_clips(rng, bank, contents, directions)
    x0 = torch.from_numpy(clips).unsqueeze(1) * 2 - 1  # (B, 1, F, H, W) in [-1, 1]
    return x0, torch.from_numpy(contents), torch.from_numpy(directions)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def lr_at(progress: float, step: int, warmup: int, peak: float, final_frac: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save(out: pathlib.Path, ema_tr, ema_ce, meta: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {f"transformer.{k}": v.detach().contiguous().clone() for k, v in ema_tr.state_dict().items()}
    state.update({f"condition_embedding.{k}": v.detach().contiguous().clone() for k, v in ema_ce.state_dict().items()})
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, out / WEIGHTS_NAME)
    os.chmod(out / WEIGHTS_NAME, 0o644)
    cfg = {
        "format": FORMAT,
        "transformer": DEFAULT_TRANSFORMER_CONFIG,
        "scheduler": DEFAULT_SCHEDULER_CONFIG,
        "sampling": DEFAULT_SAMPLING,
        "condition": {
            "contents": CONTENT_NAMES, "content_digits": CONTENT_DIGITS,
            "directions": DIRECTION_NAMES, "direction_vectors": [list(v) for v in DIRECTION_VECTORS],
            "num_tokens": NUM_CONDITION_TOKENS, "text_dim": TEXT_DIM,
            "null_rows": "the last two rows of condition_embedding.weight",
        },
        "data": {
            "num_frames": NUM_FRAMES, "height": CANVAS, "width": CANVAS, "channels": 1, "sprite": SPRITE,
            "cross_offsets": list(CROSS_OFFSETS), "train_fraction": TRAIN_FRACTION, "data_seed": DATA_SEED,
            "pixel_range": [-1.0, 1.0],
        },
        "training": meta,
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(out / WEIGHTS_NAME),
                    "bytes": (out / WEIGHTS_NAME).stat().st_size, "ema": True},
    }
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/moving_digits_wan")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--final-lr-frac", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--time-budget-min", type=float, default=55.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=250)
    args = p.parse_args(argv)

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    shift = float(DEFAULT_SCHEDULER_CONFIG["shift"])

    bank = digit_bank("train")
    model = build_transformer()
    table = ConditionEmbedding()
    model.train()
    ema_tr = copy.deepcopy(model).eval().requires_grad_(False)
    ema_ce = copy.deepcopy(table).eval().requires_grad_(False)
    params = list(model.parameters()) + list(table.parameters())
    ema_params = list(ema_tr.parameters()) + list(ema_ce.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"transformer params {n_params:,}; table params {table.weight.numel():,}; threads {args.threads}", flush=True)
    decay_params = [p for n, p in list(model.named_parameters()) if p.ndim >= 2 and "table" not in n]
    other = [p for n, p in list(model.named_parameters()) if not (p.ndim >= 2 and "table" not in n)]
    opt = torch.optim.AdamW([
        {"params": decay_params, "weight_decay": args.weight_decay},
        {"params": other + list(table.parameters()), "weight_decay": 0.0},
    ], lr=args.lr, betas=(0.9, 0.99))

    out = pathlib.Path(args.out)
    budget = args.time_budget_min * 60.0
    t0 = time.time()
    loss_avg = None
    step = 0
    history = []
    while True:
        elapsed = time.time() - t0
        progress = max(step / args.steps, elapsed / budget)
        if progress >= 1.0:
            break
        lr = lr_at(progress, step, args.warmup, args.lr, args.final_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr

        x0, c, d = sample_batch(rng, bank, args.batch)
        u = torch.rand(args.batch)
        sigma = shift * u / (1 + (shift - 1) * u)
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        drop = torch.rand(args.batch) < args.cond_drop
        emb = table(c, d, drop)
        pred = model(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=emb, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)

        loss_v = float(loss.detach())
        loss_avg = loss_v if loss_avg is None else 0.98 * loss_avg + 0.02 * loss_v
        if step % args.log_every == 0 or step == 1:
            el = time.time() - t0
            print(f"step {step:5d} loss {loss_v:.4f} avg {loss_avg:.4f} gnorm {float(gnorm):.2f} lr {lr:.2e} "
                  f"elapsed {el / 60:.1f}m clips/s {step * args.batch / el:.1f}", flush=True)
            history.append([step, round(loss_avg, 5), round(el, 1)])
        if step % args.save_every == 0:
            save(out, ema_tr, ema_ce, _meta(args, step, loss_avg, t0, n_params, history, final=False))

    save(out, ema_tr, ema_ce, _meta(args, step, loss_avg, t0, n_params, history, final=True))
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min, final avg loss {loss_avg:.4f} -> {out}", flush=True)
    return 0


def _meta(args, step, loss_avg, t0, n_params, history, final) -> dict:
    return {
        "command": "python reference/train_video.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "steps_done": step,
        "final": final,
        "wall_seconds": round(time.time() - t0, 1),
        "final_loss_ema": None if loss_avg is None else round(loss_avg, 5),
        "transformer_params": n_params,
        "torch": torch.__version__,
        "objective": "flow matching: predict noise - x0 at x_s=(1-s)x0+s*noise, timestep=1000*s, "
                     "s=shift*u/(1+(shift-1)u), u~U(0,1)",
        "loss_history": history[-400:],
    }


if __name__ == "__main__":
    raise SystemExit(main())
