"""Write docs/families.md: every built-in layout (cachekit/adapters/known.py, diffusers_layouts.py)
as a table, from the registry itself, with the diffusers test configuration each is tested on.

    python eval/family_table.py [--out docs/families.md]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from cachekit.adapters.registry import LAYOUTS  # noqa: E402

INTRO = """# Supported model families

Every transformer class of diffusers 0.42.1 (75 in `diffusers.models.transformers`) has a
registered layout, but two that are not denoisers: DreamLite's `DreamLiteTransformer2DModel` (a
spatial transformer inside its UNet, which is what a step calls) and MiniMax-Music3's RVQ depth
decoder (autoregressive, no timestep). 58 classes are tested on diffusers' own test configuration
(`tests/models/transformers`), 15 on a hand-made tiny one (`eval/handmade_diffusers_configs.py`: the
14 with no test configuration there, and Cosmos 2, whose test configuration needs torchvision): `tests/families/test_diffusers_zoo.py` runs each on that
configuration and with every one-layer list made two layers, through the registered layout and again through
discovery alone (a subclass nobody registered): interval 1 bit-exact, interval 2 reuses and changes
the output, `remove` exact, a second generation identical, the default (units + Taylor) reuses.
A class not in this table (a new diffusers release, your own DiT) is found from its first call
(`docs/adding_a_family.md`). This page is written by `python eval/family_table.py`.

Columns: *units* = lists cached by unit-level methods (the default, BAC, `units=True`); *block
ranges* = lists cached by block-range methods (fixed interval stack-level, EasyCache, BlockDrift,
ERTACache); *streams* = the block arguments carried block to block, main stream first, and the order
a block returns them (`-` = one tensor); *sub-block units* = the attention / FFN modules cached one
by one (per list, `|` between lists).

Refused: none. Block-range methods only are refused on **Latte** (spatial and temporal blocks
alternate with a reshape between them, so no range of blocks carries one stream); unit-level
methods, the default among them, cache both lists.

Refiners and lists outside the block ranges, and why (shares are estimates from the sources' block
counts and token counts at published sizes, not measurements):

- Lumina2, Z-Image: `context_refiner` (text, no timestep: the same at every step, <1% of a step)
  and `noise_refiner` (image tokens, timestep-modulated, about 6-7% of the main stack) run before
  the joint `layers` on other streams; a block range spanning them would pass the main stream's
  input through where its residual belongs. Units cache them; block ranges cache `layers`.
- HunyuanVideo 1.5, MiniMax-H3: the token refiner (text only, <<1%); Krea2: the text-fusion lists
  (text only, no timestep, about 2%). Units only.
- AuraFlow, Chroma, Flux2, Bria-Fibo, HiDream: the double-stream blocks' two streams are
  concatenated before the single-stream blocks (Flux2 dev: 8 double-stream of 56 blocks), so block
  ranges cache the single-stream blocks and units cache both.
- Wan VACE: the VACE blocks run first on the control stream; their hints are added between main
  blocks (injections, taken out of the cached residual). Units cache the VACE blocks too.
- HunyuanVideo (registered since the first release): block ranges and units cache the double- and
  single-stream blocks; its token refiner is not in the layout (<<1%).

Caveats seen in the sources: WanAnimate2 skips block 9 in its unconditional call (counted in
`stats().skipped`, never as reuse); GLM-Image keeps a per-layer KV cache that an image-conditioning
"write" pass fills, so do not reuse blocks on such a pass; Flux2's KV-cache mode makes step 0 longer
(reference tokens): the cache of a longer step is not reused for shorter ones. Flux3's
`mode_blocks.image_cond` (reference images only) is not hooked: hooked blocks must run at the first
step; Kandinsky 6 calls without audio are refused by unit-level methods for the same reason (its
pipeline always passes audio). Qwen-Image 2.1's and SANA-WM's KV-cache modes: the "extract" call
is step 0 (always computed); a block reused in a "capture" call would record no K/V.

| class | units | block ranges | streams | sub-block units | tested on (diffusers test) |
|---|---|---|---|---|---|
"""


def _io(io) -> str:
    return f"{', '.join(io.streams)} / {'-' if io.outputs is None else ', '.join(io.outputs)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "families.md"))
    args = ap.parse_args()
    try:
        import diffusers_zoo as Z
        tested: dict[str, list[str]] = {}
        for name in Z.names():
            source = Z.entry(name)["source"]
            tested.setdefault(Z.entry(name)["class"], []).append(
                "hand-made" if source.startswith("handmade") else source.split("::")[0].split("/")[-1])
    except Exception:   # no test data beside the script
        tested = {}
    rows = []
    for key in sorted(LAYOUTS, key=lambda k: k.rsplit(".", 1)[-1].lower()):
        lay = LAYOUTS[key]
        cls = key.rsplit(".", 1)[-1]
        ios = " \\| ".join(_io(lay.io_for(i)) for i in range(len(lay.block_lists)))
        if len(set(lay.io)) == 1:
            ios = _io(lay.io[0])
        units = "by block class" if lay.units is None else " \\| ".join(
            "whole block" if u is None else ", ".join(a for _, a in u.units) for u in lay.units)
        seg = ", ".join(lay.segment_paths) if lay.segment_paths else "refused: " + lay.note
        src = ", ".join(sorted(set(tested.get(key, [])))) or "-"
        rows.append(f"| {cls} | {', '.join(lay.block_lists)} | {seg} | {ios} | {units} | {src} |")
    pathlib.Path(args.out).write_text(INTRO + "\n".join(rows) + "\n")
    print(f"{len(rows)} layouts -> {args.out}")


if __name__ == "__main__":
    main()
