"""Does the balanced default's wall ratio depend on the model's width? Same-run ratios at real widths.

On the tiny reference models (width 256-384) a step whose sub-block units are all forecast still
costs ~20% of a full step: the blocks' norms, AdaLN modulation, gates and the forecasts are
elementwise passes whose share of a block falls as the width grows (attention and FFN cost ~ d^2
per token, elementwise ~ d). This times the balanced default (``recipes/default.yaml``) against
the uncached model on transformers of the reference families at real widths, few layers (the
ratio is per block; depth only dilutes the small outside-block share), random small weights
(speed only: quality on random weights means nothing), a plain Euler loop over ``--steps`` steps,
CFG as a batch of 2. Alternating rounds, medians. Run it alone on the machine.

    python eval/default_wall_sizes.py --out eval/results/default_wall_sizes
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import cachekit
from cachekit.evaluation.runner import environment
from cachekit.recipe import load_recipe


def dit(width: int, layers: int, tokens_side: int):
    from diffusers import DiTTransformer2DModel

    heads = width // 72
    m = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=72, in_channels=4, out_channels=8,
                              num_layers=layers, sample_size=tokens_side * 2, patch_size=2, num_embeds_ada_norm=1000)
    x = torch.randn(2, 4, tokens_side * 2, tokens_side * 2)
    return m, lambda x, t: m(x, timestep=t.expand(2), class_labels=torch.tensor([1, 1000]), return_dict=False)[0][:, :4], x


def wan(width: int, layers: int, tokens_side: int):
    from diffusers import WanTransformer3DModel

    m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=width // 128, attention_head_dim=128,
                              in_channels=16, out_channels=16, text_dim=512, freq_dim=256, ffn_dim=width * 4,
                              num_layers=layers, rope_max_seq_len=1024)
    text = torch.randn(2, 32, 512)
    x = torch.randn(2, 16, 4, tokens_side, tokens_side)
    return m, lambda x, t: m(x, timestep=t.expand(2) * 1000, encoder_hidden_states=text, return_dict=False)[0], x


MODELS = {  # name -> (builder, width, layers, latent side): DiT-XL/2 and Wan 2.1 1.3B widths
    "dit_xl_width": (dit, 1152, 4, 16),      # 256 tokens (a 256 px image)
    "wan_1.3b_width": (wan, 1536, 2, 16),    # 4 latent frames x 8 x 8 patches = 256 tokens
}


def randomise(model: torch.nn.Module) -> None:
    """Small random weights everywhere: zero-initialised gates make blocks identities and reuse free."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.dim() > 1 else 0.01))


def generate(fn, x0: torch.Tensor, steps: int) -> torch.Tensor:
    x = x0.clone()
    with torch.no_grad():
        for i in range(steps):
            t = torch.tensor([1.0 - i / steps])
            x = x - fn(x, t) / steps
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="eval/results/default_wall_sizes")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    command = "python eval/default_wall_sizes.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    config = load_recipe("default").config
    rows = []
    t_start = time.time()
    for name, (build, width, layers, side) in MODELS.items():
        model, fn, x0 = build(width, layers, side)
        model.eval()
        randomise(model)
        generate(fn, x0, 2)   # warm-up
        base, cached, fraction = [], [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            generate(fn, x0, args.steps)
            base.append(time.perf_counter() - t0)
            cachekit.apply(model, config)
            try:
                cachekit.reset(model, num_steps=args.steps)
                t0 = time.perf_counter()
                generate(fn, x0, args.steps)
                cached.append(time.perf_counter() - t0)
                fraction = cachekit.stats(model).computed_fraction
            finally:
                cachekit.remove(model)
        b, c = statistics.median(base), statistics.median(cached)
        rows.append((name, width, layers, fraction, b, c, b / c))
        print(rows[-1], flush=True)
    env = environment(command)
    lines = ["# The balanced default's wall ratio at real widths", "", f"Command: `{command}`  ",
             f"Device: {env['device']}; {(time.time() - t_start) / 60:.1f} min; medians of {args.repeats} "
             f"alternating rounds, {args.steps} Euler steps, batch 2 (CFG), random small weights (speed only).", "",
             "| model | width | layers | computed fraction | uncached s | default s | speedup | 1 / fraction |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {w} | {l} | {f:.2f} | {b:.2f} | {c:.2f} | {r:.2f}x | {1 / f:.2f}x |"
              for n, w, l, f, b, c, r in rows]  # noqa: E741
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "default_wall_sizes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
