"""Train (or evaluate) the digits Flux.2 reference model on scikit-learn's 8x8 digits (CPU, offline).

    python reference/train_digits_flux2.py --out reference_weights/digits_flux2            # train
    python reference/train_digits_flux2.py --eval --out reference_weights/digits_flux2     # recognition rate

Model: a stock ``diffusers.Flux2Transformer2DModel`` (2 double-stream + 6 single-stream blocks,
width 128) on 16 tokens of 2x2 packed pixels, conditioned on the class through
``cachekit.reference.digits_flux2.DigitsClassEmbedder`` (4 learned "text" tokens per class, plus a
null class for classifier-free guidance); see that module and ``reference_weights/digits_flux2/MODEL_CARD.md``.

Objective: rectified flow / flow matching in diffusers' convention: ``x_s = (1 - s) x0 + s noise``,
target velocity ``noise - x0``, plain MSE, ``s`` drawn logit-normal (mean 0, std 1; SD3's choice),
10% of the labels replaced by the null class. AdamW with linear warm-up and cosine decay, grad-norm
clip 1, EMA of the weights (what is shipped). One seeded ``torch.Generator`` drives the epoch
permutations, ``s``, noise and label dropout, so a run is deterministic given ``--seed``, the thread
count and ``--time-budget-min 0`` (with a time budget the learning-rate schedule follows the clock).

``--eval`` generates ``--per-class`` samples of each digit with the pipeline's shipped defaults
(or ``--steps-sample`` / ``--guidance-scale``) and prints the recognition rate by
``cachekit.evaluation.judges.digit_classifier`` (each sample pasted on a 16x16 canvas and
re-centred on its ink centroid, as that classifier's training digits were), plus the rate by
``train_classifier`` (the digits DiT's judge) for comparison, and the uncached wall time of one
generation of 8 images.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_digits import load_digits_tensor, lr_at  # noqa: E402  (sibling script: same data, same schedule)

from cachekit.reference.digits_flux2 import (
    CONFIG_NAME,
    DEFAULT_CLASS_EMBEDDER_CONFIG,
    DEFAULT_SAMPLING,
    DEFAULT_SCHEDULER_CONFIG,
    DEFAULT_TRANSFORMER_CONFIG,
    FORMAT,
    WEIGHTS_NAME,
    build_class_embedder,
    build_transformer,
    image_ids,
    images_to_tokens,
    sha256_file,
    text_ids,
)


def sample_sigmas(n: int, gen: torch.Generator, mode: str) -> torch.Tensor:
    if mode == "uniform":
        return torch.rand(n, generator=gen)
    return torch.sigmoid(torch.randn(n, generator=gen))  # logit-normal(0, 1)


def velocity_loss(transformer, embedder, x0, y, sigma, noise, img_ids, txt_ids) -> torch.Tensor:
    """Per-sample MSE of the predicted velocity (noise - x0) at noise level ``sigma``."""
    s = sigma.view(-1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    pred = transformer(hidden_states=images_to_tokens(xt), encoder_hidden_states=embedder(y), timestep=sigma,
                       img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
    return (pred - images_to_tokens(noise - x0)).pow(2).mean(dim=(1, 2))


def save(out: pathlib.Path, tr_state: dict, emb_state: dict, training: dict, guidance_scale: float,
         steps: int, extra_sampling: dict | None = None) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    tmp = weights.with_suffix(".tmp")
    tensors = {f"transformer.{k}": v for k, v in tr_state.items()}
    tensors.update({f"class_embedder.{k}": v for k, v in emb_state.items()})
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt", "model": "cachekit digits Flux.2 (EMA weights)"})
    tmp.chmod(0o644)
    tmp.replace(weights)
    sampling = dict(DEFAULT_SAMPLING)
    sampling["guidance_scale"] = guidance_scale
    sampling["num_inference_steps"] = steps
    sampling.update(extra_sampling or {})
    cfg = {
        "format": FORMAT,
        "transformer": {"_class_name": "Flux2Transformer2DModel", **DEFAULT_TRANSFORMER_CONFIG},
        "class_embedder": {"_class_name": "DigitsClassEmbedder", **DEFAULT_CLASS_EMBEDDER_CONFIG},
        "scheduler": dict(DEFAULT_SCHEDULER_CONFIG),
        "sampling": sampling,
        "null_class_label": DEFAULT_CLASS_EMBEDDER_CONFIG["num_classes"],
        "tokens": {"image": "8x8x1 pixels in [-1,1] -> 2x2 patches packed into channels -> 16 tokens x 4, "
                            "ids (0,h,w,0) on a 4x4 grid",
                   "text": "class label -> 4 learned tokens x 64 (class_embedder), ids (0,0,0,l)"},
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(weights), "ema": True, "dtype": "float32",
                    "layout": "one file: transformer.* (Flux2Transformer2DModel) and class_embedder.*"},
        "training": training,
    }
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def recognition(images: torch.Tensor, labels: list[int]) -> dict:
    """Recognition rates of (N, 1, 8, 8) samples in [0, 1] by both digit judges."""
    import numpy as np

    from cachekit.evaluation.judges import predict_digits, train_classifier

    canvas = torch.zeros(len(images), 1, 16, 16)
    canvas[:, :, 4:12, 4:12] = images[:, :, :, :].float()
    pred = predict_digits(canvas)          # digit_classifier on the centroid-centred crop
    want = np.array(labels)
    clf, _ = train_classifier()
    pred_svc = clf.predict(images.reshape(len(images), -1).double().numpy())
    return {
        "recognition_rate": float((pred == want).mean()),
        "per_class": {str(c): float((pred[want == c] == c).mean()) for c in range(10)},
        "recognition_rate_train_classifier": float((pred_svc == want).mean()),
        "pred": pred,
    }


def evaluate(args) -> int:
    from cachekit.reference.digits_flux2 import load_digits_flux2_pipeline

    pipe = load_digits_flux2_pipeline(args.out)
    pipe.set_progress_bar_config(disable=True)
    steps = args.steps_sample or pipe.default_num_inference_steps
    scales = ([float(g) for g in args.guidance_scale.split(",")] if args.guidance_scale
              else [pipe.default_guidance_scale])
    labels = [c for _ in range(args.per_class) for c in range(10)]  # balanced, interleaved
    results = []
    for gs in scales:
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        images = torch.cat([pipe(class_labels=labels[i: i + args.labels_per_call], num_inference_steps=steps,
                                 guidance_scale=gs, generator=gen).images
                            for i in range(0, len(labels), args.labels_per_call)])
        wall = time.perf_counter() - t0
        assert images.shape[1:] == (1, 8, 8) and torch.isfinite(images).all()
        r = recognition(images, labels)
        print(f"CFG {gs}, {steps} steps, {len(labels)} samples (seed {args.seed}): recognition rate "
              f"{r['recognition_rate']:.4f} (digit_classifier), {r['recognition_rate_train_classifier']:.4f} "
              f"(train_classifier); per class " + " ".join(f"{c}:{v:.2f}" for c, v in r["per_class"].items())
              + f"; {wall:.1f} s", flush=True)
        results.append({k: v for k, v in r.items() if k != "pred"} | {
            "guidance_scale": gs, "num_inference_steps": steps, "n_samples": len(labels), "seed": args.seed,
            "labels_per_call": args.labels_per_call, "sampling_wall_s": round(wall, 2)})
        if args.grid:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            k = min(len(images), 100)
            fig, axes = plt.subplots(k // 10, 10, figsize=(10, k // 10))
            for ax, img, lab, p in zip(axes.flat, images[:k], labels[:k], r["pred"][:k]):
                ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
                ax.set_title(f"{lab}->{p}", fontsize=7, color="black" if lab == p else "red")
                ax.axis("off")
            fig.tight_layout()
            fig.savefig(args.grid.replace(".png", f"_cfg{gs}.png"), dpi=80)
            plt.close(fig)
    timing = None
    if args.time_repeats > 0:
        gs = pipe.default_guidance_scale
        times = []
        for i in range(args.time_repeats + 1):
            t0 = time.perf_counter()
            pipe(class_labels=list(range(8)), num_inference_steps=pipe.default_num_inference_steps,
                 guidance_scale=gs, generator=torch.Generator().manual_seed(0))
            if i:
                times.append(time.perf_counter() - t0)
        timing = {"images": 8, "num_inference_steps": pipe.default_num_inference_steps, "guidance_scale": gs,
                  "transformer_forwards": 2 * pipe.default_num_inference_steps if gs > 1 else
                  pipe.default_num_inference_steps, "median_s": round(sorted(times)[len(times) // 2], 3),
                  "min_s": round(min(times), 3), "repeats": args.time_repeats, "threads": torch.get_num_threads()}
        print(f"one generation of 8 images, {timing['num_inference_steps']} steps, CFG {gs} "
              f"({timing['transformer_forwards']} forwards), uncached: median {timing['median_s']:.3f} s, "
              f"min {timing['min_s']:.3f} s ({timing['threads']} thread(s))", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"results": results, "generation_time": timing,
                                                       "torch": torch.__version__}, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def train(args, argv) -> int:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    out = pathlib.Path(args.out)

    x_all, y_all = load_digits_tensor()
    n = len(x_all)
    null = DEFAULT_CLASS_EMBEDDER_CONFIG["num_classes"]
    transformer = build_transformer()
    embedder = build_class_embedder()
    # No dropout / batch-norm anywhere: eval() changes nothing but keeps the mode explicit.
    transformer.eval()
    embedder.eval()
    params = list(transformer.named_parameters()) + [("class_embedder." + k, p) for k, p in embedder.named_parameters()]
    live = list(transformer.state_dict().values()) + list(embedder.state_dict().values())
    assert all(v.is_floating_point() for v in live)
    ema = [v.detach().clone() for v in live]
    n_tr = sum(p.numel() for p in transformer.parameters())
    n_emb = sum(p.numel() for p in embedder.parameters())

    decay, no_decay = [], []
    for name, p in params:
        (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))
    img_ids = image_ids()
    txt_ids = text_ids(DEFAULT_CLASS_EMBEDDER_CONFIG["num_tokens"])

    cmd = "python reference/train_digits_flux2.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"params: transformer {n_tr} ({n_tr / 1e6:.2f}M) + class embedder {n_emb}; data {n} images; "
          f"steps {args.steps} x batch {args.batch_size}; threads {torch.get_num_threads()}", flush=True)

    def ema_states():
        k_tr = len(transformer.state_dict())
        keys_tr = list(transformer.state_dict())
        keys_emb = list(embedder.state_dict())
        return dict(zip(keys_tr, ema[:k_tr])), dict(zip(keys_emb, ema[k_tr:]))

    perm = torch.randperm(n, generator=gen)
    pos = 0
    t0 = time.perf_counter()
    run_loss, logged = 0.0, 0
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
        y[drop] = null
        sigma = sample_sigmas(len(y), gen, args.t_sampling)
        noise = torch.randn(x0.shape, generator=gen)

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
        loss = velocity_loss(transformer, embedder, x0, y, sigma, noise, img_ids, txt_ids).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, live, 1 - d)

        run_loss += loss.item()
        logged += 1
        if (step + 1) % args.log_every == 0 or step == 0:
            elapsed = time.perf_counter() - t0
            print(f"step {step + 1:5d}  loss {run_loss / logged:.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                  f"{elapsed / 60:5.1f} min  {elapsed / (step + 1):.3f} s/step", flush=True)
            loss_history.append([step + 1, round(run_loss / logged, 5)])
            run_loss, logged = 0.0, 0
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(out, *ema_states(), {"partial": True, "steps_done": step + 1, "command": cmd,
                                      "wall_time_s": round(time.perf_counter() - t0, 1),
                                      "loss_history": loss_history},
                 args.guidance_scale, args.sample_steps)
    wall = time.perf_counter() - t0

    # Final loss of the shipped (EMA) weights: velocity MSE over the whole data set with a fixed
    # generator (same sigmas, logit-normal, and noise for every run), 4 draws per image.
    tr_state, emb_state = ema_states()
    ema_tr, ema_emb = build_transformer(), build_class_embedder()
    ema_tr.load_state_dict(tr_state)
    ema_emb.load_state_dict(emb_state)
    ema_tr.eval()
    ema_emb.eval()
    eg = torch.Generator().manual_seed(1234)
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for _ in range(4):
            for i in range(0, n, 256):
                x0, y = x_all[i: i + 256], y_all[i: i + 256]
                sigma = sample_sigmas(len(y), eg, "logit-normal")
                noise = torch.randn(x0.shape, generator=eg)
                tot += velocity_loss(ema_tr, ema_emb, x0, y, sigma, noise, img_ids, txt_ids).sum().item()
                cnt += len(y)
    final = tot / cnt
    training = {
        "command": cmd,
        "steps_done": step + 1,
        "stopped_early": stopped_early,
        "steps_requested": args.steps, "time_budget_min": args.time_budget_min,
        "batch_size": args.batch_size,
        "lr": args.lr, "min_lr": args.min_lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
        "ema_decay": args.ema, "class_dropout": args.class_dropout, "t_sampling": args.t_sampling,
        "objective": "flow matching: x_s = (1-s) x0 + s noise, target noise - x0, MSE",
        "seed": args.seed, "threads": torch.get_num_threads(),
        "wall_time_s": round(wall, 1),
        "final_train_loss_running": loss_history[-1][1] if loss_history else None,
        "final_ema_velocity_mse_full_data": round(final, 5),
        "loss_history": loss_history,
        "data": "sklearn.datasets.load_digits, all 1797 images, 8x8, pixel/8-1 -> [-1,1], no augmentation",
        "torch": torch.__version__,
    }
    save(out, tr_state, emb_state, training, args.guidance_scale, args.sample_steps)
    print(f"done: {step + 1} steps in {wall / 60:.1f} min; EMA velocity MSE on all data {final:.4f}; saved to {out}",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reference_weights/digits_flux2", help="model directory (written; read by --eval)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("training")
    g.add_argument("--steps", type=int, default=6000)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--min-lr", type=float, default=1e-5)
    g.add_argument("--warmup", type=int, default=200)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--ema", type=float, default=0.999)
    g.add_argument("--class-dropout", type=float, default=0.1)
    g.add_argument("--t-sampling", choices=["logit-normal", "uniform"], default="logit-normal")
    g.add_argument("--guidance-scale-default", dest="default_guidance", type=float,
                   default=DEFAULT_SAMPLING["guidance_scale"], help="default CFG scale written to config.json")
    g.add_argument("--sample-steps", type=int, default=DEFAULT_SAMPLING["num_inference_steps"],
                   help="default number of sampling steps written to config.json")
    g.add_argument("--time-budget-min", type=float, default=0.0,
                   help="if > 0, progress (cosine schedule and stopping) is max(step/steps, elapsed/budget); "
                        "0 = pure step count (fully deterministic)")
    g.add_argument("--log-every", type=int, default=100)
    g.add_argument("--save-every", type=int, default=500)
    e = ap.add_argument_group("evaluation (--eval)")
    e.add_argument("--eval", action="store_true", help="evaluate the model in --out instead of training")
    e.add_argument("--per-class", type=int, default=20)
    e.add_argument("--labels-per-call", type=int, default=20)
    e.add_argument("--guidance-scale", default=None, help="CFG scale(s), comma-separated (default: shipped)")
    e.add_argument("--steps-sample", type=int, default=None, help="sampling steps (default: shipped)")
    e.add_argument("--time-repeats", type=int, default=5, help="timed 8-image generations (0 skips)")
    e.add_argument("--json", default=None)
    e.add_argument("--grid", default=None, help="PNG grid of the first samples, per scale (needs matplotlib)")
    args = ap.parse_args(argv)

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    if args.eval:
        return evaluate(args)
    args.guidance_scale = args.default_guidance
    return train(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
