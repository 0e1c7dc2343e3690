"""Quality evaluation of the moving-digits video reference model.

    python reference/eval_video.py [--json PATH] [--num-clips 48] [--grid PNG]

Generates clips balanced over the 16 (content, direction) conditions with the shipped pipeline
(default 50 steps, the shipped guidance scale, seeded) and scores them with
:func:`cachekit.evaluation.judges.score_clips`:

* content: in every frame the 8x8 window centred on the ink centroid is cropped and classified by
  an RBF SVM trained on all 1797 real scikit-learn 8x8 digits, re-centred the same way (10
  classes, so a blob that looks like no trained content counts as wrong); the per-frame
  log-probabilities are summed over frames;
* direction: the ink centroid of every frame (pixels above 0.25) is fitted by a line over frames;
  the dominant axis of the fitted displacement and its sign give up / down / left / right, and a
  displacement under 3 pixels (the real clips move 8) counts as no motion (wrong).

It also times the transformer forward at the default batch (8 clips = 8 rows; with CFG each
denoising step runs two such forwards, cond and uncond). ``--real`` scores real rendered clips
(the digits held out from training) instead, as a check of the scorer itself.

The scorer is importable, e.g. to score the output of a cached pipeline in a report::

    from cachekit.evaluation.judges import score_clips
    result = score_clips(frames, contents, directions)   # frames (N, F, 1, H, W) in [0, 1]
    result["both_accuracy"], result["content_accuracy"], result["direction_accuracy"]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from typing import Any

import numpy as np

from cachekit.evaluation.judges import _as_frames, score_clips


def balanced_conditions(num_clips: int) -> tuple[list[str], list[str]]:
    """``num_clips`` (content, direction) pairs cycling over all 16 conditions."""
    from cachekit.reference.video_conditions import CONTENT_NAMES, DIRECTION_NAMES

    pairs = [(c, d) for d in DIRECTION_NAMES for c in CONTENT_NAMES]
    chosen = [pairs[i % len(pairs)] for i in range(num_clips)]
    return [c for c, _ in chosen], [d for _, d in chosen]


def time_transformer_forward(pipe, batch: int = 8, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median wall time of one transformer forward on ``batch`` clips (no grad), in ms."""
    import torch

    from cachekit.reference.video_conditions import DEFAULT_CONDITIONS, video_prompt_embeds

    tr = pipe.transformer
    cfg_d = {"num_frames": 9, "height": 16, "width": 16}
    x = torch.randn(batch, tr.config.in_channels, cfg_d["num_frames"], cfg_d["height"], cfg_d["width"],
                    generator=torch.Generator().manual_seed(0))
    conds = [DEFAULT_CONDITIONS[i % len(DEFAULT_CONDITIONS)] for i in range(batch)]
    pe, _ = video_prompt_embeds(pipe, [c for c, _ in conds], [d for _, d in conds])
    t = torch.full((batch,), 500.0)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            tr(hidden_states=x, timestep=t, encoder_hidden_states=pe, return_dict=False)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return {"batch_clips": batch, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "repeats": repeats, "torch_threads": torch.get_num_threads()}


def save_grid(frames, contents, directions, result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = _as_frames(frames)
    n, f = x.shape[:2]
    fig, axes = plt.subplots(n, f, figsize=(f * 0.6, n * 0.62))
    axes = np.atleast_2d(axes)
    for i in range(n):
        clip = result["clips"][i]
        ok = clip["pred_digit"] is not None and clip["pred_direction"] == clip["direction"]
        for j in range(f):
            ax = axes[i, j]
            ax.imshow(x[i, j], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f"{contents[i]}/{directions[i]}\n->{clip['pred_digit']}/{clip['pred_direction']}",
                              fontsize=5, rotation=0, ha="right", va="center",
                              color="black" if ok else "red")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the shipped assets/moving_digits_wan)")
    p.add_argument("--num-clips", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: shipped, 50)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: shipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timing-repeats", type=int, default=20)
    p.add_argument("--real", action="store_true", help="score real rendered (held-out) clips instead")
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None, help="save a PNG grid of (up to 32) clips")
    args = p.parse_args(argv)

    import torch

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    contents, directions = balanced_conditions(args.num_clips)
    result: dict[str, Any] = {"command": "python reference/eval_video.py " + " ".join(argv or __import__("sys").argv[1:])}
    t0 = time.time()
    if args.real:
        from train_video import digit_bank, render_clips

        from cachekit.reference.video_conditions import CONTENT_NAMES, DIRECTION_NAMES

        rng = np.random.default_rng(args.seed)
        frames = render_clips(rng, digit_bank("test"), np.array([CONTENT_NAMES.index(c) for c in contents]),
                              np.array([DIRECTION_NAMES.index(d) for d in directions]))[:, :, None]
        result["source"] = "real clips (held-out digits)"
    else:
        from cachekit.reference.video import load_video_pipeline, video_prompt_embeds

        pipe = load_video_pipeline(args.model)
        pipe.set_progress_bar_config(disable=True)
        steps = args.steps or pipe.default_num_inference_steps
        gs = pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale
        gen = torch.Generator().manual_seed(args.seed)
        chunks = []
        for s in range(0, args.num_clips, args.batch):
            pe, npe = video_prompt_embeds(pipe, contents[s:s + args.batch], directions[s:s + args.batch])
            chunks.append(pipe(prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=steps,
                               guidance_scale=gs, generator=gen, output_type="pt").frames)
        frames = torch.cat(chunks)
        result.update({"source": "generated", "num_inference_steps": steps, "guidance_scale": gs,
                       "seed": args.seed, "batch": args.batch})
        result["generation_seconds"] = round(time.time() - t0, 1)
        if args.timing_repeats > 0:
            result["transformer_forward"] = time_transformer_forward(pipe, batch=8, repeats=args.timing_repeats)
    scored = score_clips(frames, contents, directions)
    result.update(scored)
    print(f"clips: {scored['n']} ({result['source']})")
    print(f"content accuracy:   {scored['content_accuracy']:.3f}")
    print(f"direction accuracy: {scored['direction_accuracy']:.3f}")
    print(f"both correct:       {scored['both_accuracy']:.3f}")
    if "transformer_forward" in result:
        tf = result["transformer_forward"]
        print(f"transformer forward, batch {tf['batch_clips']} clips: median {tf['median_ms']:.1f} ms "
              f"(min {tf['min_ms']:.1f}, {tf['repeats']} repeats, {tf['torch_threads']} threads)")
    if args.grid:
        k = min(32, len(frames))
        save_grid(frames[:k], contents[:k], directions[:k], {"clips": scored["clips"][:k]}, args.grid)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
