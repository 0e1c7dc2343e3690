"""Cost of caching at real widths: Flux.1-dev and Wan2.1 built from their published configs (random
weights, nothing downloaded), driven as bare transformers on this CPU at reduced token counts.

    python eval/bench_scale.py --quick            # < 3 min on 2 cores: bf16, 1-2 blocks, 256-1024 tokens
    python eval/bench_scale.py                    # the full grid (fp32 and bf16, up to 4096 tokens, 30 blocks)
    python eval/bench_scale.py --history          # cost of history='bf16' / 'host' beside the default

Per setup (model, blocks, tokens, dtype), in one process, alternating passes (``timing.alternate``:
one untimed warm-up, then ``--repeats`` rounds, medians), three instances sharing one set of weights:
- ``uncached_ms``: one forward, no hooks;
- ``hooks_ms``: hooks on, nothing reused (``FixedIntervalConfig(interval=1)``: every step computes and
  caches its residual): a computed step; ``hook_overhead_*``: hooks_ms - uncached_ms (noisy: compare
  with ``uncached_spread``);
- ``reused_ms``: a fully reused step (after one computed step, ``interval=10**9``): the embeddings,
  the output layer and one add run; ``reused_share`` = reused_ms / hooks_ms;
- ``hook_cost_ms``: the hooks' own cost, measured precisely on a stack of empty blocks of the same
  signature at the same stream sizes (100 calls a round, one thread: an upper bound, the residual
  subtraction parallelises), at this many blocks and at the published depth; ``hook_cost_share`` =
  hook_cost_ms / uncached_ms;
- ``projected_*``: at the published depth (Wan-1.3B 30 blocks, Wan-14B 40, Flux 19 + 38), from the
  measured per-block cost (uncached_ms - reused_ms) / blocks: the same ratios for the whole model;
- ``cached_bytes`` (``cachekit.stats``) and ``estimate_bytes`` (``cachekit.estimate_cache_bytes``).

Models that do not fit this machine at full depth run at full width with fewer blocks (the ``blocks``
and ``note`` columns say so): Flux.1-dev is 11.9B parameters (48 GB fp32, 24 GB bf16). Weights are
filled from a tiled random pool scaled by 1/sqrt(fan_in) (init of 1.4B parameters takes 25 s
otherwise); timing does not depend on the values (denormals are flushed). Writes CSV and a plot of
cost vs work (block-token evaluations) under ``--out`` (default ``eval/results/scale``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import cachekit
from cachekit.evaluation.timing import Pass, alternate
from cachekit.memory import PUBLISHED_CONFIGS, estimate_cache_bytes

FULL_DEPTH = {"wan2.1-1.3b": (30,), "wan2.1-14b": (40,), "flux.1-dev": (19, 38)}
TEXT_TOKENS = {"wan2.1-1.3b": 512, "wan2.1-14b": 512, "flux.1-dev": 512}   # what the pipelines feed


@dataclass(frozen=True)
class Setup:
    model: str                       # a key of PUBLISHED_CONFIGS
    blocks: tuple[int, ...]          # blocks per list (Flux: dual, single)
    tokens: int                      # image / video tokens (multiples of 256)
    dtype: torch.dtype = torch.bfloat16
    text_tokens: int | None = None   # Flux's text stream; None: the pipeline's 512

    @property
    def text(self) -> int:
        return TEXT_TOKENS[self.model] if self.text_tokens is None else self.text_tokens


BF16, FP32 = torch.bfloat16, torch.float32
QUICK = [Setup("wan2.1-1.3b", (1,), 256), Setup("wan2.1-1.3b", (2,), 256), Setup("wan2.1-1.3b", (2,), 1024),
         Setup("wan2.1-14b", (1,), 256), Setup("flux.1-dev", (1, 1), 256, text_tokens=64)]
FULL = ([Setup("wan2.1-1.3b", (2,), n) for n in (256, 1024, 4096)]
        + [Setup("wan2.1-1.3b", (b,), 1024) for b in (1, 4, 8, 30)]
        + [Setup("wan2.1-1.3b", (2,), n, FP32) for n in (256, 1024)] + [Setup("wan2.1-1.3b", (30,), 256, FP32)]
        + [Setup("wan2.1-14b", (1,), n) for n in (256, 1024, 4096)] + [Setup("wan2.1-14b", (2,), 1024),
                                                                      Setup("wan2.1-14b", (1,), 1024, FP32)]
        + [Setup("flux.1-dev", (1, 1), n) for n in (256, 1024, 4096)] + [Setup("flux.1-dev", (2, 4), 1024),
                                                                        Setup("flux.1-dev", (1, 1), 1024, FP32)])


# ---- models from the published configs ----------------------------------------------------------
def model_config(name: str, blocks: tuple[int, ...] | None = None) -> tuple[str, dict]:
    """(diffusers class name, constructor kwargs) of a published config, with fewer blocks if asked."""
    cfg = dict(PUBLISHED_CONFIGS[name])
    cls = cfg.pop("_class_name")
    if blocks is not None:
        keys = ("num_layers", "num_single_layers")[:len(blocks)]
        cfg.update(zip(keys, blocks))
    return cls, cfg


def _fill(t: torch.Tensor, name: str, pool: torch.Tensor) -> None:
    """Tiled random values scaled by 1/sqrt(fan_in); 1-D: norm scales 1, biases 0."""
    if t.ndim == 1 and name.endswith("bias"):
        t.zero_()
        return
    if t.ndim == 1 and name.endswith("weight"):
        t.fill_(1.0)
        return
    flat = t.view(-1)
    for i in range(0, flat.numel(), pool.numel()):
        chunk = flat[i:i + pool.numel()]
        chunk.copy_(pool[:chunk.numel()])
    fan_in = t.numel() // t.shape[0] if t.ndim >= 2 else t.numel()
    t.mul_(1.0 / math.sqrt(max(fan_in, 1)))


def build(name: str, blocks: tuple[int, ...] | None, dtype: torch.dtype, device: str = "cpu",
          fast_init: bool = True) -> nn.Module:
    """The published architecture with random weights, in eval mode, without gradients. ``fast_init``:
    parameters made on the meta device (accelerate), then filled from a tiled pool (``_fill``);
    buffers (rotary tables) are built as usual. Else the classes' own init, on ``device``."""
    cls_name, cfg = model_config(name, blocks)
    return build_from(cls_name, cfg, dtype, device, fast_init)


def build_from(cls_name: str, cfg: dict, dtype: torch.dtype, device: str = "cpu", fast_init: bool = True) -> nn.Module:
    """``build`` for any diffusers transformer class and constructor kwargs."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    if not fast_init:
        with torch.device(device):
            model = cls(**cfg)
        return model.to(dtype).eval().requires_grad_(False)
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = cls(**cfg)
    pool = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    for mod in model.modules():
        for p_name, p in list(mod._parameters.items()):
            if p is None or p.device.type != "meta":
                continue
            t = torch.empty(p.shape, dtype=dtype, device=device)
            _fill(t, p_name, pool)
            mod._parameters[p_name] = nn.Parameter(t, requires_grad=False)
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"{cls_name}: {left[0]} was left on the meta device")
    return model.to(device).eval().requires_grad_(False)


def make_inputs(name: str, model: nn.Module, tokens: int, text: int, dtype: torch.dtype, device: str = "cpu",
                latent_hw: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, Callable]:
    """(latent, forward(instance, latent, t)): one denoising step's inputs for ``tokens`` image /
    video tokens at timestep t (0-1000, a float or a 0-d tensor), random latents and text
    embeddings, one sample. Wan: ``latent_hw`` latent pixels per frame (patch 2 x 2), as many
    frames as make ``tokens`` (480p: (60, 104), 1,560 tokens a frame)."""
    g = torch.Generator().manual_seed(1)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    def stamp(t: Any, scale: float = 1.0) -> torch.Tensor:
        t = t if isinstance(t, torch.Tensor) else torch.tensor(float(t))
        return (t.to(device=device, dtype=torch.float32) * scale).reshape(1)

    cfg = model.config
    if name.startswith("wan"):
        per_frame = (latent_hw[0] // 2) * (latent_hw[1] // 2)
        if tokens % per_frame:
            raise ValueError(f"Wan: {tokens} tokens are not whole frames of {per_frame} ({latent_hw} latent pixels)")
        enc = rnd(1, text, cfg.text_dim)

        def forward(m: nn.Module, latent: torch.Tensor, t: Any) -> torch.Tensor:
            return m(latent, stamp(t), enc, return_dict=False)[0]

        return rnd(1, cfg.in_channels, tokens // per_frame, *latent_hw), forward
    side = int(math.isqrt(tokens))
    h, w = (side, side) if side * side == tokens else (16, tokens // 16)
    enc, pooled = rnd(1, text, cfg.joint_attention_dim), rnd(1, cfg.pooled_projection_dim)
    img_ids = torch.zeros(h * w, 3, device=device)
    img_ids[:, 1] = torch.arange(h, device=device).repeat_interleave(w)
    img_ids[:, 2] = torch.arange(w, device=device).repeat(h)
    txt_ids = torch.zeros(text, 3, device=device)
    guidance = torch.tensor([3.5], device=device)

    def forward(m: nn.Module, latent: torch.Tensor, t: Any) -> torch.Tensor:
        return m(latent, enc, pooled, stamp(t, 1e-3), img_ids, txt_ids, guidance=guidance, return_dict=False)[0]

    return rnd(1, h * w, cfg.in_channels), forward


def share_weights(model: nn.Module) -> nn.Module:
    """A second instance holding the same parameter and buffer tensors (hooks go on instances)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


class Clock:
    """Decreasing timesteps, one per call: every call of a bare module is a new step."""

    def __init__(self, start: float = 999.0) -> None:
        self.t = start

    def __call__(self) -> float:
        self.t -= 0.5
        return self.t


def block_gflop(model: nn.Module, tokens: int, width: int) -> float:
    """Approximate work of the blocks in one step, GFLOP: 2 x block parameters x tokens through
    them, plus self-attention's 4 x tokens^2 x width per block (Wan's cross-attention keys and
    values, on 512 text tokens, are counted as if on the video tokens: an overcount below 512)."""
    from cachekit.adapters import resolve

    blocks = resolve(model).blocks
    params = sum(p.numel() for b in blocks for p in b.module.parameters())
    return (2 * params * tokens + 4 * len(blocks) * tokens ** 2 * width) / 1e9


# ---- the hooks' own cost: empty blocks of the same signature ----------------------------------------
class _EmptyBlock(nn.Module):
    def __init__(self, two_streams: bool) -> None:
        super().__init__()
        self.two = two_streams

    def forward(self, hidden_states, encoder_hidden_states=None, temb=None, rotary_emb=None):
        return (encoder_hidden_states, hidden_states) if self.two else hidden_states


class _EmptyStack(nn.Module):
    def __init__(self, n: int, two_streams: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_EmptyBlock(two_streams) for _ in range(n))
        self.two = two_streams

    def forward(self, hidden_states, timestep, encoder_hidden_states=None):
        for b in self.blocks:
            out = b(hidden_states, encoder_hidden_states, timestep)
            encoder_hidden_states, hidden_states = out if self.two else (encoder_hidden_states, out)
        return hidden_states


def hook_cost_ms(blocks: int, tokens: int, text: int, width: int, dtype: torch.dtype, two_streams: bool,
                 repeats: int, calls: int = 100) -> float:
    """Per-call cost of the hooks (interval 1: decide, run, cache the stack residual) on ``blocks``
    empty blocks at these stream sizes: (hooked - bare) / calls, medians of alternating rounds, one
    thread."""
    from cachekit import BlockIO, ModelLayout

    bare = _EmptyStack(blocks, two_streams)
    hooked = _EmptyStack(blocks, two_streams)
    io = BlockIO(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states")) \
        if two_streams else BlockIO(("hidden_states",))
    cachekit.apply(hooked, cachekit.FixedIntervalConfig(interval=1, warmup=0, final_steps=0),
                   layout=ModelLayout(("blocks",), (io,)))
    cachekit.reset(hooked)
    x = torch.randn(1, tokens, width).to(dtype)
    c = torch.randn(1, text, width).to(dtype) if two_streams else None
    clock = Clock(1e9)

    def run(m: nn.Module) -> None:
        with torch.no_grad():
            for _ in range(calls):
                m(x, torch.tensor([clock()]), c)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # 2-thread barriers of small ops cost ~ms each on a busy machine; one
    try:                       # thread bounds the quiet-machine cost from above (these ops parallelise)
        a, b = alternate([Pass(lambda r: run(bare)), Pass(lambda r: run(hooked))], repeats)
    finally:
        torch.set_num_threads(threads)
        cachekit.remove(hooked)
    return 1e3 * (b.median - a.median) / calls


# ---- one setup ---------------------------------------------------------------------------------------
def _spread(times: list[float]) -> float:
    """(max - min) / median of a pass's rounds: the noise floor of a difference of medians."""
    return (max(times) - min(times)) / statistics.median(times)


def measure(s: Setup, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = build(s.model, s.blocks, s.dtype)
    build_s = time.perf_counter() - t0
    latent, forward = make_inputs(s.model, model, s.tokens, s.text, s.dtype)
    reused, hooked = share_weights(model), share_weights(model)
    reuse_cfg = cachekit.FixedIntervalConfig(interval=10 ** 9, warmup=0, final_steps=0)
    cachekit.apply(reused, reuse_cfg)
    cachekit.apply(hooked, cachekit.FixedIntervalConfig(interval=1, warmup=0, final_steps=0))
    clocks = {id(m): Clock() for m in (model, reused, hooked)}

    def step(m: nn.Module) -> Any:
        with torch.no_grad():
            return forward(m, latent, clocks[id(m)]())

    step(reused)   # the computed step whose residual every later call reuses (untimed)
    timed = alternate([Pass(lambda r: step(model)), Pass(lambda r: step(hooked)), Pass(lambda r: step(reused))],  # noqa: F821 - called before the del below
                      repeats)
    un, hk, ru = (t.median * 1e3 for t in timed)
    st_r, st_h = cachekit.stats(reused), cachekit.stats(hooked)
    if not (st_r.plan[0].all() and not st_r.plan[1:].any() and st_h.computed_fraction == 1.0):
        raise RuntimeError(f"{s}: the reused pass did not reuse every block after the first step, or the "
                           f"hooked pass reused something")
    est = estimate_cache_bytes(reused, reuse_cfg, tokens=s.tokens, text_tokens=s.text if s.model.startswith("flux") else 0,
                               cfg=False)
    cachekit.remove(reused)
    cachekit.remove(hooked)
    width = model.config.num_attention_heads * model.config.attention_head_dim
    params = sum(p.numel() for p in model.parameters())
    two = s.model.startswith("flux")
    text = s.text if two else 0
    work = block_gflop(model, s.tokens + text, width)
    del model, reused, hooked
    n, full = sum(s.blocks), sum(FULL_DEPTH[s.model])
    cost = hook_cost_ms(n, s.tokens, text, width, s.dtype, two, repeats)
    cost_full = cost if full == n else hook_cost_ms(full, s.tokens, text, width, s.dtype, two, repeats)
    per_block = (un - ru) / n
    full_ms = un + (full - n) * per_block
    note = "" if s.blocks == FULL_DEPTH[s.model] else (
        f"full width, {'+'.join(map(str, s.blocks))} of {'+'.join(map(str, FULL_DEPTH[s.model]))} blocks")
    if s.text != TEXT_TOKENS[s.model]:
        note += f"; {s.text} text tokens (pipeline: {TEXT_TOKENS[s.model]})"
    return dict(
        model=s.model, width=width, blocks="+".join(map(str, s.blocks)), num_blocks=n, blocks_full=full,
        tokens=s.tokens, text_tokens=s.text, dtype=str(s.dtype).removeprefix("torch."), params_m=round(params / 1e6, 1),
        work_gflop=round(work, 1),
        uncached_ms=round(un, 2), hooks_ms=round(hk, 2), reused_ms=round(ru, 2),
        uncached_spread=round(_spread(timed[0].times), 4),
        hook_overhead_ms=round(hk - un, 2), hook_overhead_per_block_ms=round((hk - un) / n, 3),
        hook_overhead_share=round((hk - un) / un, 4),
        hook_cost_ms=round(cost, 4), hook_cost_per_block_us=round(1e3 * cost / n, 2),
        hook_cost_share=round(cost / un, 5), reused_share=round(ru / hk, 4),
        projected_full_ms=round(full_ms, 1), projected_reused_share=round(ru / full_ms, 4),
        projected_hook_cost_share=round(cost_full / full_ms, 5),
        cached_bytes=st_r.cached_bytes, estimate_bytes=est.at_end, repeats=repeats, threads=torch.get_num_threads(),
        wall_s=round(time.perf_counter() - t0, 1), build_s=round(build_s, 1), note=note.lstrip("; "))


# ---- history storage: cost of history='bf16' / 'host' ----------------------------------------------
def history_rows(repeats: int, tokens: int = 1024, blocks: int = 2) -> list[dict[str, Any]]:
    """Wan-1.3B width, fp32, ``units=True`` Taylor forecasts: wall time of a computed step (which
    moves the second-newest entry into its storage) and of a reused step (which brings the older
    entries back) per history storage, bytes held, and the output change against the default."""
    model = build("wan2.1-1.3b", (blocks,), FP32)
    latent, forward = make_inputs("wan2.1-1.3b", model, tokens, TEXT_TOKENS["wan2.1-1.3b"], FP32)
    rows = []
    for order in (1, 2):
        storages = ("device", "bf16", "host")
        inst = {}
        for kind in ("computed", "reused"):
            for h in storages:
                m = share_weights(model)
                cfg = cachekit.FixedIntervalConfig(interval=1 if kind == "computed" else 10 ** 9, warmup=order,
                                                   final_steps=0, units=True, forecast="taylor", forecast_order=order)
                cachekit.apply(m, cfg, history=h)
                inst[kind, h] = (m, Clock(), cfg)
        outs: dict[tuple, torch.Tensor] = {}

        def step(key: tuple, r: int) -> torch.Tensor:
            m, clock, _ = inst[key]
            with torch.no_grad():
                out = forward(m, latent, clock())
            if r == 0:
                outs[key] = out
            return None

        for h in storages:   # fill the reused instances' history: order + 1 computed steps
            for _ in range(order + 1):
                step(("reused", h), -1)
        keys = list(inst)
        timed = dict(zip(keys, alternate([Pass(lambda r, k=k: step(k, r)) for k in keys], repeats)))
        for kind in ("computed", "reused"):
            base = timed[kind, "device"].median
            for h in storages:
                m, _, cfg = inst[kind, h]
                st = cachekit.stats(m)
                est = estimate_cache_bytes(m, cfg, tokens=tokens, cfg=False, history=h)
                ref = outs[kind, "device"]
                err = float((outs[kind, h] - ref).abs().max() / ref.abs().max())
                rows.append(dict(order=order, step=kind, history=h, wall_ms=round(timed[kind, h].median * 1e3, 1),
                                 vs_device=round(timed[kind, h].median / base, 4), cached_bytes=st.cached_bytes,
                                 estimate_total=est.total, estimate_device=est.device, max_rel_change=f"{err:.2e}",
                                 tokens=tokens, blocks=blocks, dtype="float32", repeats=repeats))
        for m, _, _ in inst.values():
            cachekit.remove(m)
    return rows


# ---- memory at real sizes (estimates only) -----------------------------------------------------------
def memory_rows() -> list[dict[str, Any]]:
    from cachekit import BlockDriftConfig, EasyCacheConfig, FixedIntervalConfig

    cases = [("wan2.1-14b", 75600, "720p x 81 frames"), ("wan2.1-1.3b", 32760, "480p x 81 frames"),
             ("flux.1-dev", 4096, "1024^2")]
    configs = [("stack, plain", FixedIntervalConfig()), ("stack, taylor 1", FixedIntervalConfig(forecast="taylor")),
               ("stack, taylor 2", FixedIntervalConfig(forecast="taylor", forecast_order=2)),
               ("stack, foca", FixedIntervalConfig(forecast="foca")),
               ("units, plain", FixedIntervalConfig(units=True)),
               ("units, taylor 1", FixedIntervalConfig(units=True, forecast="taylor")),
               ("units, taylor 2", FixedIntervalConfig(units=True, forecast="taylor", forecast_order=2)),
               ("easycache, taylor 1", EasyCacheConfig(forecast="taylor")),
               ("block_drift, 2 ranges", BlockDriftConfig(splits=2))]
    rows = []
    for name, tokens, what in cases:
        for label, cfg in configs:
            for hist in (None, "host"):   # history='bf16' changes nothing on these bf16 models
                if hist is not None and cfg.forecast == "none":
                    continue
                e = estimate_cache_bytes(name, cfg, tokens=tokens, history=hist)
                rows.append(dict(model=name, size=what, tokens=tokens, text_tokens=e.text_tokens, branches=e.branches,
                                 config=label, history=hist or "device", total_gb=round(e.total / 1e9, 2),
                                 device_gb=round(e.device / 1e9, 2), host_gb=round(e.host / 1e9, 2)))
    return rows


# ---- output --------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict], path: Path) -> None:
    """Left: step time against the blocks' work (GFLOP), computed (solid) and fully reused
    (dashed); right: the hooks' cost as a share of an uncached step, measured on empty blocks
    (solid) and as hooks - uncached (dotted: within the noise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    marker = {"wan2.1-1.3b": "o", "wan2.1-14b": "s", "flux.1-dev": "^"}
    groups = itertools.groupby(sorted(rows, key=lambda r: (r["model"], r["dtype"], r["work_gflop"])),
                               key=lambda r: (r["model"], r["dtype"]))
    for color, ((model, dtype), group) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], groups):
        group = list(group)
        work = [r["work_gflop"] for r in group]
        style = dict(marker=marker[model], color=color)
        a.plot(work, [r["hooks_ms"] / 1e3 for r in group], ls="-", label=f"{model} {dtype}: computed", **style)
        a.plot(work, [r["reused_ms"] / 1e3 for r in group], ls="--", label=f"{model} {dtype}: fully reused", **style)
        b.plot(work, [100 * r["hook_cost_share"] for r in group], ls="-", label=f"{model} {dtype}: hook cost", **style)
        b.plot(work, [100 * r["hook_overhead_share"] for r in group], ls=":", alpha=0.5,
               label=f"{model} {dtype}: hooks - uncached", **style)
    a.set(xscale="log", yscale="log", xlabel="work of the blocks run, GFLOP per step", ylabel="s per step",
          title="step time")
    b.axhline(1.0, color="k", lw=0.8)
    b.set(xscale="log", xlabel="work of the blocks run, GFLOP per step", ylabel="% of an uncached step",
          title="hooks on, nothing reused (target < 1%)")
    for ax in (a, b):
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fewer = sorted({r["model"] for r in rows if r["num_blocks"] < r["blocks_full"]})
    fig.suptitle(f"cachekit at published widths, random weights, CPU, {rows[0]['threads']} threads; fewer blocks "
                 f"than published for {', '.join(fewer) or 'none'} (CSV: blocks, note)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict]) -> str:
    head = ("| model | blocks | tokens | dtype | uncached | computed (hooks) | fully reused | reused / computed "
            "| hook cost (share) | hooks - uncached (spread) | projected full depth: step, reused share, hook share "
            "| cached / estimate |")
    out = [head, "|" + "---|" * 12]
    for r in rows:
        out.append(f"| {r['model']} | {r['blocks']} | {r['tokens']} | {r['dtype']} | {r['uncached_ms'] / 1e3:.2f} s "
                   f"| {r['hooks_ms'] / 1e3:.2f} s | {r['reused_ms']:.0f} ms | {100 * r['reused_share']:.1f}% "
                   f"| {r['hook_cost_ms']:.2f} ms ({100 * r['hook_cost_share']:.3f}%) "
                   f"| {100 * r['hook_overhead_share']:+.1f}% ({100 * r['uncached_spread']:.1f}%) "
                   f"| {r['projected_full_ms'] / 1e3:.1f} s, {100 * r['projected_reused_share']:.2f}%, "
                   f"{100 * r['projected_hook_cost_share']:.3f}% | {r['cached_bytes'] / 1e6:.2f} / "
                   f"{r['estimate_bytes'] / 1e6:.2f} MB |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small grid (< 3 min on 2 cores)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per setup (medians; default 5)")
    ap.add_argument("--out", default="eval/results/scale", help="output folder")
    ap.add_argument("--history", action="store_true", help="only the history storage cost (history.csv)")
    ap.add_argument("--only", default=None, help="comma-separated model names to run (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    t0 = time.perf_counter()
    write_csv(out / "memory.csv", memory_rows())
    if args.history:
        rows = history_rows(args.repeats)
        write_csv(out / "history.csv", rows)
        for r in rows:
            print(r)
        print(f"wrote {out / 'history.csv'} in {time.perf_counter() - t0:.0f} s")
        return
    setups = QUICK if args.quick else FULL
    if args.only:
        setups = [s for s in setups if s.model in args.only.split(",")]
    suffix = "_quick" if args.quick else ""
    rows = []
    for s in setups:
        row = measure(s, args.repeats)
        rows.append(row)
        write_csv(out / f"scale{suffix}.csv", rows)   # as it goes: a long run keeps what it measured
        print(f"[{time.perf_counter() - t0:6.0f} s] {row['model']} {row['blocks']} blocks {row['tokens']} tokens "
              f"{row['dtype']}: uncached {row['uncached_ms']:.0f} ms, computed {row['hooks_ms']:.0f} ms, reused "
              f"{row['reused_ms']:.0f} ms ({100 * row['reused_share']:.1f}%), hook cost {row['hook_cost_ms']:.2f} ms "
              f"({100 * row['hook_cost_share']:.3f}%), cached {row['cached_bytes']} B (estimate {row['estimate_bytes']})",
              flush=True)
    plot(rows, out / f"scale{suffix}.png")
    (out / f"scale{suffix}.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    print(f"wrote {out}/scale{suffix}.csv, .png, .md and memory.csv in {time.perf_counter() - t0:.0f} s "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
