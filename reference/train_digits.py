"""Train the digits reference DiT on scikit-learn's 8x8 digits (CPU, offline).

    python reference/train_digits.py --out assets/digits_dit

Deterministic given ``--seed`` and the thread count: one seeded ``torch.Generator`` drives the epoch
permutations, timesteps, noise and the 10% class dropout (done here, not by diffusers' unseeded
``LabelEmbedding.token_drop``, which is why the model is kept in ``eval()`` mode during training --
it has no dropout or batch-norm layers, so the mode changes nothing else).

Objective: epsilon prediction with min-SNR-5 loss weighting, AdamW with linear warm-up and cosine
decay, EMA of the weights (the EMA weights are what is shipped). Denormals are flushed
(``torch.set_flush_denormal(True)``): without it a step is ~5x slower on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch

from cachekit.reference.digits import (
    CONFIG_NAME,
    DEFAULT_SAMPLING,
    DEFAULT_SCHEDULER_CONFIG,
    DEFAULT_TRANSFORMER_CONFIG,
    FORMAT,
    WEIGHTS_NAME,
    build_scheduler,
    build_transformer,
    sha256_file,
)


def load_digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) float32 in [-1, 1] and (N,) int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> -1..1
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def lr_at(step: int, progress: float, peak: float, warmup: int, floor: float, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` as ``progress`` -> 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, max(0.0, (progress - warmup_frac) / max(1e-9, 1 - warmup_frac)))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * p))


def save(out: pathlib.Path, ema_state: dict[str, torch.Tensor], training: dict, guidance_scale: float) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().float() for k, v in ema_state.items()}, str(tmp),
              metadata={"format": "pt", "model": "cachekit digits DiT (EMA weights)"})
    tmp.chmod(0o644)
    tmp.replace(weights)
    sampling = dict(DEFAULT_SAMPLING)
    sampling["guidance_scale"] = guidance_scale
    cfg = {
        "format": FORMAT,
        "transformer": {"_class_name": "DiTTransformer2DModel", **DEFAULT_TRANSFORMER_CONFIG},
        "scheduler": dict(DEFAULT_SCHEDULER_CONFIG),
        "sampling": sampling,
        "null_class_label": DEFAULT_TRANSFORMER_CONFIG["num_embeds_ada_norm"],
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(weights), "ema": True, "dtype": "float32"},
        "training": training,
    }
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/digits_dit")
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--class-dropout", type=float, default=0.1)
    ap.add_argument("--min-snr-gamma", type=float, default=5.0, help="0 disables min-SNR weighting")
    ap.add_argument("--guidance-scale", type=float, default=DEFAULT_SAMPLING["guidance_scale"],
                    help="default CFG scale written to config.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget-min", type=float, default=0.0,
                    help="if > 0, training progress (cosine schedule and stopping) is max(step/steps, "
                         "elapsed/budget): the run ends within the budget even on a contended CPU; "
                         "0 = pure step count (fully deterministic)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=500)
    args = ap.parse_args(argv)

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    out = pathlib.Path(args.out)

    x_all, y_all = load_digits_tensor()
    n = len(x_all)
    num_classes = DEFAULT_TRANSFORMER_CONFIG["num_embeds_ada_norm"]

    model = build_transformer()
    model.eval()  # see module docstring: no dropout/BN; keeps diffusers' own label dropout off
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    live = model.state_dict()  # references to the live tensors (all floating point here)
    assert all(v.is_floating_point() for v in live.values())
    ema_list = [ema[k] for k in live]
    live_list = [live[k] for k in live]
    n_params = sum(p.numel() for p in model.parameters())
    scheduler = build_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    if args.min_snr_gamma > 0:
        loss_w = torch.clamp(snr, max=args.min_snr_gamma) / snr
    else:
        loss_w = torch.ones_like(snr)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name or "pos_embed" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))

    cmd = "python reference/train_digits.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"params {n_params} ({n_params / 1e6:.2f}M), data {n} images, steps {args.steps} x batch {args.batch_size}, "
          f"threads {torch.get_num_threads()}", flush=True)

    perm = torch.randperm(n, generator=gen)
    pos = 0
    t0 = time.perf_counter()
    run_loss, run_mse, logged = 0.0, 0.0, 0
    loss_history = []
    step = 0
    stopped_early = False
    warmup_frac = args.warmup / args.steps
    for step in range(args.steps):
        if pos + args.batch_size > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        idx = perm[pos: pos + args.batch_size]
        pos += args.batch_size
        x0 = x_all[idx]
        y = y_all[idx].clone()
        drop = torch.rand(len(y), generator=gen) < args.class_dropout
        y[drop] = num_classes  # null label (CFG embedding)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(y),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise

        elapsed = time.perf_counter() - t0
        progress = step / args.steps
        if args.time_budget_min > 0:
            progress = max(progress, elapsed / (args.time_budget_min * 60))
        if progress >= 1.0:
            print(f"time budget {args.time_budget_min} min reached after {step} steps; stopping", flush=True)
            stopped_early = True
            step -= 1
            break
        if step == args.warmup:
            warmup_frac = progress
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, args.lr, args.warmup, args.min_lr, warmup_frac)
        pred = model(xt, timestep=t, class_labels=y).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (mse * loss_w[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_list, live_list, 1 - d)

        run_loss += loss.item()
        run_mse += mse.mean().item()
        logged += 1
        elapsed = time.perf_counter() - t0
        if (step + 1) % args.log_every == 0 or step == 0:
            print(f"step {step + 1:5d}  loss(w) {run_loss / logged:.4f}  mse {run_mse / logged:.4f}  "
                  f"lr {opt.param_groups[0]['lr']:.2e}  {elapsed / 60:5.1f} min  {elapsed / (step + 1):.3f} s/step",
                  flush=True)
            loss_history.append([step + 1, round(run_mse / logged, 5)])
            run_loss, run_mse, logged = 0.0, 0.0, 0
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(out, ema, {"partial": True, "steps_done": step + 1, "command": cmd}, args.guidance_scale)
    wall = time.perf_counter() - t0

    # Final loss of the shipped (EMA) weights: plain epsilon MSE over the whole data set, with a
    # fixed generator (same timesteps and noise for every run), 4 draws per image.
    ema_model = build_transformer()
    ema_model.load_state_dict(ema)
    ema_model.eval()
    eg = torch.Generator().manual_seed(1234)
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for _ in range(4):
            for i in range(0, n, 256):
                x0 = x_all[i: i + 256]
                y = y_all[i: i + 256]
                t = torch.randint(0, 1000, (len(y),), generator=eg)
                noise = torch.randn(x0.shape, generator=eg)
                a = alphas_cumprod[t].view(-1, 1, 1, 1)
                pred = ema_model(a.sqrt() * x0 + (1 - a).sqrt() * noise, timestep=t, class_labels=y).sample
                tot += (pred - noise).pow(2).sum().item()
                cnt += noise.numel()
    final_mse = tot / cnt
    training = {
        "command": cmd,
        "steps_done": step + 1,
        "stopped_early": stopped_early,
        "batch_size": args.batch_size,
        "lr": args.lr, "min_lr": args.min_lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
        "ema_decay": args.ema, "class_dropout": args.class_dropout, "min_snr_gamma": args.min_snr_gamma,
        "steps_requested": args.steps, "time_budget_min": args.time_budget_min,
        "seed": args.seed, "threads": torch.get_num_threads(),
        "wall_time_s": round(wall, 1),
        "final_train_mse_running": loss_history[-1][1] if loss_history else None,
        "final_ema_eps_mse_full_data": round(final_mse, 5),
        "loss_history_mse": loss_history,
        "data": "sklearn.datasets.load_digits, all 1797 images, 8x8, pixel/8-1 -> [-1,1], no augmentation",
        "torch": torch.__version__,
    }
    save(out, ema, training, args.guidance_scale)
    print(f"done: {step + 1} steps in {wall / 60:.1f} min; EMA eps-MSE on all data {final_mse:.4f}; saved to {out}",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
