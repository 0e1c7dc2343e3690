"""Hook overhead and fixed-interval speedup on medium random-weight Wan-like and Flux-like models.

Same process, alternating runs, warm-up first, median of repeats. Random weights are fine here: the
question is wall time per block evaluation, not output quality.

    python eval/bench_overhead.py [--steps 20] [--repeats 5] [--json out.json]

Checks (the core issue's bar): hooks with interval 1 cost <= 1.03x the uncached time, and
FixedInterval(interval=2) reaches >= 0.9 x 1/computed_fraction.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch

import cachekit
from cachekit.evaluation.timing import Pass, alternate


def wan_like():
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, in_channels=16,
        out_channels=16, text_dim=64, freq_dim=64, ffn_dim=1024, num_layers=8, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024).eval()
    x, enc = torch.randn(1, 16, 5, 32, 32), torch.randn(1, 16, 64)

    def forward(latent, t):
        return model(latent, torch.tensor([t]), enc, return_dict=False)[0]

    return model, x, forward


def flux_like():
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=4, num_single_layers=8, attention_head_dim=64,
        num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=32,
        axes_dims_rope=[16, 24, 24]).eval()
    h = w = 32
    txt, pooled = torch.randn(1, 16, 64), torch.randn(1, 32)
    img_ids = torch.zeros(h * w, 3)
    img_ids[:, 1] = torch.arange(h).repeat_interleave(w)
    img_ids[:, 2] = torch.arange(w).repeat(h)
    txt_ids = torch.zeros(16, 3)

    def forward(latent, t):
        return model(latent, txt, pooled, torch.tensor([t / 1000]), img_ids, txt_ids, return_dict=False)[0]

    return model, torch.randn(1, h * w, 16), forward


@torch.no_grad()
def denoise(forward, x0, steps):
    """A plain Euler flow-matching loop: enough to exercise step detection and reuse."""
    x = x0.clone()
    ts = torch.linspace(1000, 0, steps + 1)
    for i in range(steps):
        v = forward(x, float(ts[i]))
        x = x + (ts[i + 1] - ts[i]) / 1000 * v
    return x


def bench(name, build, steps, repeats):
    torch.manual_seed(0)
    model, x0, forward = build()
    configs = {
        "uncached": None,
        "hooks, interval 1": cachekit.FixedIntervalConfig(interval=1, warmup=0, final_steps=0),
        "fixed interval 2": cachekit.FixedIntervalConfig(interval=2, warmup=1, final_steps=1),
    }
    fraction = {}

    @contextlib.contextmanager
    def cached(label, cfg):   # apply / remove outside the timed region
        cachekit.apply(model, cfg)
        cachekit.reset(model, num_steps=steps)
        try:
            yield
        finally:
            fraction[label] = cachekit.stats(model).computed_fraction
            cachekit.remove(model)

    timed = alternate([Pass(lambda r: denoise(forward, x0, steps),
                            around=contextlib.nullcontext if cfg is None else (lambda k=k, c=cfg: cached(k, c)))
                       for k, cfg in configs.items()], repeats)
    med = {k: t.median for k, t in zip(configs, timed)}
    outputs = {k: t.first for k, t in zip(configs, timed)}
    base = med["uncached"]
    res = {
        "model": name,
        "forward_ms": 1000 * base / steps,
        "steps": steps,
        "repeats": repeats,
        "median_s": med,
        "overhead_interval1": med["hooks, interval 1"] / base,
        "interval1_bit_exact": bool(torch.equal(outputs["uncached"], outputs["hooks, interval 1"])),
        "computed_fraction_interval2": fraction["fixed interval 2"],
        "speedup_interval2": base / med["fixed interval 2"],
        "ideal_speedup_interval2": 1 / fraction["fixed interval 2"],
    }
    res["speedup_over_ideal"] = res["speedup_interval2"] / res["ideal_speedup_interval2"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = [bench("wan-like (8 blocks, 9.0M, 1280 tokens)", wan_like, args.steps, args.repeats),
            bench("flux-like (4+8 blocks, 17.7M, 1024+16 tokens)", flux_like, args.steps, args.repeats)]
    print("| model | forward ms | interval-1 hooks / uncached | bit-exact | interval 2: speedup | 1/computed | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['forward_ms']:.0f} | {r['overhead_interval1']:.3f}x | {r['interval1_bit_exact']} "
              f"| {r['speedup_interval2']:.2f}x | {r['ideal_speedup_interval2']:.2f}x | {r['speedup_over_ideal']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
