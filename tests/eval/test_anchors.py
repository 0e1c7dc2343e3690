"""MAC counter and the other libraries' caches ("anchors") on tiny random-weight copies of the two
reference pipelines (same classes, same loops: DiT with batched CFG, Wan with separate forwards)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cachekit.evaluation.macs import LinearMacCounter, count_linear_macs, linear_macs

STEPS = 5


# ------------------------------------------------------------------------------------------------
# MAC counter
# ------------------------------------------------------------------------------------------------
class _Toy(nn.Module):
    """Two blocks: Linear(4->8) then Linear(8->3); block 1 can be skipped by a flag."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 3)])
        self.head = nn.Linear(3, 2)        # outside the blocks: not counted
        self.skip_second = False

    def forward(self, x):
        x = self.blocks[0](x)
        x = x[..., :3] if self.skip_second else self.blocks[1](x)
        return self.head(x)


def test_linear_macs_by_hand():
    x = torch.randn(2, 5, 4)                              # 10 rows of 4
    assert linear_macs(nn.Linear(4, 8), x) == 10 * 4 * 8


def test_counter_is_exact_and_leaves_nothing():
    toy = _Toy()
    before = {n: (dict(m._forward_pre_hooks), dict(m.__dict__)) for n, m in toy.named_modules()}
    with count_linear_macs(toy.blocks) as c:
        toy(torch.randn(2, 5, 4))
    assert c.macs == 10 * 4 * 8 + 10 * 8 * 3 and c.calls == 2
    after = {n: (dict(m._forward_pre_hooks), dict(m.__dict__)) for n, m in toy.named_modules()}
    assert {n: len(h) for n, (h, _) in after.items()} == {n: len(h) for n, (h, _) in before.items()}
    assert all(len(h) == 0 for h, _ in after.values())


def test_reuse_lowers_the_count_and_shared_layers_count_once():
    toy = _Toy()
    with count_linear_macs(toy.blocks) as full:
        toy(torch.randn(3, 4))
    toy.skip_second = True
    with count_linear_macs([toy.blocks, toy.blocks[0]]) as part:   # block 0 listed twice: hooked once
        toy(torch.randn(3, 4))
    assert part.macs == 3 * 4 * 8 < full.macs == 3 * 4 * 8 + 3 * 8 * 3
    c = LinearMacCounter([toy.blocks])
    c.remove()
    toy(torch.randn(3, 4))
    assert c.macs == 0


# ------------------------------------------------------------------------------------------------
# tiny reference pipelines
# ------------------------------------------------------------------------------------------------
def _tiny_digits():
    from cachekit.reference.digits import DEFAULT_TRANSFORMER_CONFIG, DigitsDiTPipeline, build_scheduler, build_transformer

    torch.manual_seed(0)
    cfg = {**DEFAULT_TRANSFORMER_CONFIG, "num_layers": 3, "num_attention_heads": 2, "attention_head_dim": 8, "sample_size": 4}
    pipe = DigitsDiTPipeline(build_transformer(cfg).eval(), build_scheduler())
    pipe.set_progress_bar_config(disable=True)

    def run(seed=0):
        with torch.no_grad():
            return pipe(class_labels=[1, 7], num_inference_steps=STEPS, output_type="pt",
                        generator=torch.Generator().manual_seed(seed)).images
    return pipe, run


def _tiny_video():
    from cachekit.reference.video import (DEFAULT_TRANSFORMER_CONFIG, ConditionEmbedding, MovingDigitsWanPipeline,
                                          build_scheduler, build_transformer, video_prompt_embeds)

    torch.manual_seed(0)
    cfg = {**DEFAULT_TRANSFORMER_CONFIG, "num_layers": 3, "num_attention_heads": 2, "attention_head_dim": 16,
           "ffn_dim": 32}
    pipe = MovingDigitsWanPipeline(build_transformer(cfg).eval(), build_scheduler(), ConditionEmbedding().eval())
    pipe.set_progress_bar_config(disable=True)
    pe, npe = video_prompt_embeds(pipe, ["zero", "one"], ["up", "left"])

    def run(seed=0):
        with torch.no_grad():
            return pipe(prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=STEPS, num_frames=3,
                        height=16, width=16, output_type="pt", generator=torch.Generator().manual_seed(seed)).frames
    return pipe, run


_PIPES = {}


def _pipe(kind):
    """(pipe, run, uncached output, uncached multiply-adds), built once per module."""
    if kind not in _PIPES:
        from anchors import block_modules

        pipe, run = _tiny_digits() if kind == "digits" else _tiny_video()
        with count_linear_macs(block_modules(pipe)) as c:
            ref = run()
        _PIPES[kind] = pipe, run, ref, c.macs
    return _PIPES[kind]


# One reusing setting per method; ``None``: expected to refuse on that model (reason checked).
_CASES = [
    ("FirstBlockCache", {"threshold": 10.0}),
    ("MagCache", {"threshold": 10.0, "max_skip_steps": 3}),
    ("TaylorSeer", {"cache_interval": 2, "max_order": 1, "warmup": 2, "identifiers": "attn+ffn"}),
    ("TaylorSeer", {"cache_interval": 2, "max_order": 1, "warmup": 2, "identifiers": "default"}),
    ("PyramidAttentionBroadcast", {"skip_range": 2}),
    ("FasterCache", {"uncond_skip_range": 2, "attn_skip_range": 2}),
    ("DBCache", {"Fn": 1, "Bn": 0, "threshold": 10.0, "taylorseer": 0, "warmup": 2}),
    ("DBCache+TaylorSeer", {"Fn": 1, "Bn": 0, "threshold": 10.0, "taylorseer": 1, "warmup": 2}),
]
_REFUSES = {("video", "FasterCache"): "separate forwards", ("digits", "TaylorSeer/default"): "hooks nothing",
            ("video", "TaylorSeer/default"): "hooks nothing"}


def _snapshot(module):
    return {n: (sorted(m.__dict__.keys() - {"_parameters", "_buffers", "_modules"}), len(m._forward_pre_hooks),
                len(m._forward_hooks)) for n, m in module.named_modules()}


@pytest.mark.parametrize("kind", ["digits", "video"])
@pytest.mark.parametrize("method,params", _CASES, ids=[f"{m}-{p.get('identifiers', '')}" for m, p in _CASES])
def test_anchor_reuses_and_removes_cleanly(kind, method, params):
    import anchors as A

    grid = {**A.DIFFUSERS_GRID, **A.CACHE_DIT_GRID}
    cls = grid[method][0]
    if cls is A.DBCacheAnchor:
        pytest.importorskip("cache_dit")
    pipe, run, ref, full = _pipe(kind)
    blocks = A.block_modules(pipe)
    anchor = cls("cache-dit" if cls is A.DBCacheAnchor else "diffusers", method, dict(params))
    if cls is A.MagCacheAnchor:
        anchor.mag_ratios = A.calibrate_mag_ratios(pipe, STEPS, run)
        assert len(anchor.mag_ratios) == STEPS and anchor.mag_ratios[0] == 1.0
        # a second calibration (after cache_context was entered by earlier runs) must see the same
        assert A.calibrate_mag_ratios(pipe, STEPS, run) == anchor.mag_ratios
    before = _snapshot(pipe.transformer)
    key = (kind, method + ("/default" if params.get("identifiers") == "default" else ""))
    if key in _REFUSES:
        with pytest.raises(A.AnchorUnavailable, match=_REFUSES[key]):
            anchor.install(pipe, STEPS)
        assert _snapshot(pipe.transformer) == before
        return
    anchor.install(pipe, STEPS)
    try:
        fracs = []
        for _ in range(2):                                   # reset makes generations repeatable
            anchor.reset()
            with count_linear_macs(blocks) as c:
                got = run()
            fracs.append(c.macs / full)
        assert torch.isfinite(got).all()
        assert fracs[0] == fracs[1] and fracs[0] < 1.0, fracs
    finally:
        anchor.remove()
    assert _snapshot(pipe.transformer) == before
    assert torch.equal(run(), ref)
