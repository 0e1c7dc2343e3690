"""Quality and speed check of the digits reference DiT.

    python reference/eval_digits.py [--json PATH]

1. Trains a classifier on the REAL 8x8 digits (scikit-learn SVC, RBF kernel, on a stratified 80/20
   split, seed 0) and prints its own held-out accuracy.
2. Generates ``--per-class`` samples of each of the 10 digits (default 20 -> 200 samples) with the
   pipeline's defaults (50 DDIM steps, shipped CFG scale), ``--labels-per-call`` labels per pipeline
   call (default 20 -> 40 rows per transformer forward with CFG), fixed seed.
3. Prints the recognition rate: the fraction of samples the classifier assigns to the requested
   class (overall and per class).
4. Times one transformer forward at the default batch (20 labels -> 40 rows with CFG, a mid
   timestep, no grad, float32): median of ``--repeats`` after 3 warm-up calls.

The classifier is :func:`cachekit.evaluation.judges.train_classifier` (the toolkit's class-recognition
metric uses the same one).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import torch

from cachekit.evaluation.judges import train_classifier


def time_forward(pipe, labels_per_call: int = 20, repeats: int = 20, guidance: bool = True) -> dict:
    """Median wall time (ms) of one transformer forward at the default batch."""
    tr = pipe.transformer
    n = labels_per_call * (2 if guidance else 1)
    size = tr.config.sample_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, tr.config.in_channels, size, size, generator=g).to(tr.device, tr.dtype)
    labels = torch.tensor([i % 10 for i in range(labels_per_call)] + [pipe.null_class_label] * (n - labels_per_call))
    t = torch.full((n,), 500, dtype=torch.long)
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            tr(x, timestep=t.to(tr.device), class_labels=labels.to(tr.device))
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return {"batch_rows": n, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "repeats": repeats, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=None, help="model directory (default: shipped assets/digits_dit)")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--labels-per-call", type=int, default=20)
    ap.add_argument("--guidance-scale", type=float, default=None, help="default: shipped config value")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20, help="forward-timing repeats (0 skips timing)")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--grid", default=None, help="save a PNG grid of the first samples (needs matplotlib)")
    args = ap.parse_args(argv)

    torch.set_flush_denormal(True)
    from cachekit.reference.digits import load_digits_pipeline

    clf, clf_acc = train_classifier()
    print(f"classifier: SVC(rbf, C=10) on real digits, held-out accuracy {clf_acc:.4f} (stratified 80/20 split, seed 0)")

    pipe = load_digits_pipeline(args.path)
    pipe.set_progress_bar_config(disable=True)
    gs = pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale
    labels = [c for _ in range(args.per_class) for c in range(10)]  # balanced, interleaved
    gen = torch.Generator().manual_seed(args.seed)
    images = []
    t0 = time.perf_counter()
    for i in range(0, len(labels), args.labels_per_call):
        out = pipe(class_labels=labels[i: i + args.labels_per_call], guidance_scale=gs, generator=gen,
                   num_inference_steps=args.steps, output_type="pt").images
        images.append(out)
    sample_s = time.perf_counter() - t0
    images = torch.cat(images)
    assert images.shape[1:] == (1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
    pred = clf.predict(images.reshape(len(images), -1).double().numpy())
    want = np.array(labels)
    rate = float((pred == want).mean())
    per_class = {str(c): float((pred[want == c] == c).mean()) for c in range(10)}
    calls = (len(labels) + args.labels_per_call - 1) // args.labels_per_call
    print(f"generated {len(labels)} samples ({args.per_class}/class), {args.steps} steps, CFG {gs}, "
          f"{args.labels_per_call} labels/call: {sample_s:.1f} s ({sample_s / calls:.2f} s per call)")
    print(f"recognition rate: {rate:.4f}  per class: " + " ".join(f"{c}:{v:.2f}" for c, v in per_class.items()))

    result = {
        "recognition_rate": rate, "per_class": per_class, "n_samples": len(labels),
        "guidance_scale": gs, "num_inference_steps": args.steps, "seed": args.seed,
        "labels_per_call": args.labels_per_call, "sampling_wall_s": round(sample_s, 2),
        "classifier": "sklearn SVC(kernel='rbf', C=10, gamma='scale') on load_digits()/16, stratified 80/20 split seed 0",
        "classifier_heldout_accuracy": clf_acc,
        "torch": torch.__version__,
    }
    if args.repeats > 0:
        ft = time_forward(pipe, args.labels_per_call, args.repeats)
        result["forward_time"] = ft
        print(f"transformer forward at batch {ft['batch_rows']} ({args.labels_per_call} labels x CFG): "
              f"median {ft['median_ms']:.1f} ms (min {ft['min_ms']:.1f}, max {ft['max_ms']:.1f}, "
              f"{ft['repeats']} repeats, {ft['threads']} threads)")
    if args.grid:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = min(len(images), 100)
        fig, axes = plt.subplots(k // 10, 10, figsize=(10, k // 10))
        for ax, img, lab, p in zip(axes.flat, images[:k], labels[:k], pred[:k]):
            ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{lab}->{p}", fontsize=7, color="black" if lab == p else "red")
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.grid, dpi=80)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
