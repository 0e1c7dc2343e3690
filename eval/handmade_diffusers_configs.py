"""Hand-written tiny configurations for the diffusers 0.42.1 transformer classes that have none in
diffusers' own tests, added to ``tests/data/diffusers_configs.pt`` (which
``eval/harvest_diffusers_tests.py`` writes from those tests) so that ``tests/families/test_diffusers_zoo.py``
runs them like the harvested ones.

    python eval/handmade_diffusers_configs.py

Per class: a constructor config with two layers per block list and tiny widths (2 heads of 8-16
channels), and forward kwargs with the argument names, shapes and dtypes the class's ``forward``
reads (checked against the installed sources; batch 1, a few dozen tokens), so that each builds and
runs on CPU in well under a second. Every tensor comes from one seeded ``torch.Generator``. Entries
are named after the class (``<Class>#handmade`` where the harvested file already holds ``<Class>``)
and marked with ``SOURCE``; running the script again replaces them and keeps every other entry.
Classes that are not a diffusion denoiser over a stack of transformer blocks, or that cannot run
offline, are listed in ``LEFT_OUT`` with the reason.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Callable

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "diffusers_configs.pt"
SOURCE = "handmade (eval/handmade_diffusers_configs.py): no test configuration in diffusers tests"
_T = "diffusers.models.transformers."

LEFT_OUT = {
    "DreamLiteTransformer2DModel": "not a denoiser: the spatial transformer inside DreamLite's UNet "
                                   "(models/unets/unet_dreamlite.py; continuous input only, no patch or timestep "
                                   "embedding of its own); the UNet is what a denoising step calls",
    "MiniMaxMusic3RVQDepthDecoder": "not a diffusion denoiser: an autoregressive RVQ depth decoder "
                                    "(forward(inputs_embeds) -> codebook logits, no timestep)",
}


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def _flux3(g):
    init = dict(in_channels=8, cond_in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=16, timestep_channels=32, mlp_ratio=2.0,
                axes_dims_rope=(4, 4, 4, 4))
    hw = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(16, 2)
    img_ids = torch.cat([torch.zeros(16, 1, dtype=torch.long), hw, torch.zeros(16, 1, dtype=torch.long)], 1)
    cond_ids = img_ids.clone()
    cond_ids[:, 0] = 1
    txt_ids = torch.zeros(6, 4, dtype=torch.long)
    txt_ids[:, 3] = torch.arange(6)
    inputs = dict(hidden_states=_randn(g, 1, 16, 8), encoder_hidden_states=_randn(g, 1, 6, 16),
                  timestep=torch.tensor([0.7]), img_ids=img_ids, txt_ids=txt_ids,
                  image_cond_hidden_states=_randn(g, 1, 16, 8), image_cond_ids=cond_ids)
    return init, inputs


def _qwenimage21(g):
    init = dict(patch_size=1, in_channels=8, out_channels=8, num_layers=2, attention_head_dim=16,
                num_attention_heads=2, context_in_dim=16, mlp_ratio=2, axes_dims_rope=(4, 6, 6))
    # text-to-image: 6 text slots, then the target image's 16 latent tokens as 4 VLM slots of 2x2 tokens
    img_mask = torch.tensor([[False] * 6 + [True] * 4])
    inputs = dict(hidden_states=_randn(g, 1, 16, 8), encoder_hidden_states=_randn(g, 1, 6, 16),
                  timestep=torch.tensor([0.7]), img_shapes=[[(1, 4, 4)]], img_mask=img_mask,
                  encoder_hidden_states_mask=torch.ones(1, 6, dtype=torch.bool))
    return init, inputs


def _hunyuanimage(g):
    init = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                num_single_layers=2, num_refiner_layers=2, mlp_ratio=2.0, patch_size=(1, 1), text_embed_dim=16,
                rope_axes_dim=(8, 8))
    inputs = dict(hidden_states=_randn(g, 1, 4, 4, 4), timestep=torch.tensor([500.0]),
                  encoder_hidden_states=_randn(g, 1, 6, 16), encoder_attention_mask=torch.ones(1, 6))
    return init, inputs


def _kandinsky5(g):
    init = dict(in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
                model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 6, 6))
    inputs = dict(hidden_states=_randn(g, 1, 1, 8, 8, 4), encoder_hidden_states=_randn(g, 1, 6, 16),
                  timestep=torch.tensor([500.0]), pooled_projections=_randn(g, 1, 8),
                  visual_rope_pos=(torch.arange(1), torch.arange(4), torch.arange(4)), text_rope_pos=torch.arange(6))
    return init, inputs


def _kandinsky6(g):
    init = dict(in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
                model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 6, 6), visual_cond=False,
                in_audio_dim=4, out_audio_dim=4)
    inputs = dict(hidden_states=_randn(g, 1, 1, 8, 8, 4), encoder_hidden_states=_randn(g, 1, 6, 16),
                  pooled_projections=_randn(g, 1, 8), timestep=torch.tensor([500.0]),
                  audio_hidden_states=_randn(g, 1, 5, 4))
    return init, inputs


def _kandinsky6_sr(g):
    # NABLA attention groups 8x8 token blocks: the token grid must be a multiple of 8 on each side
    init = dict(in_visual_dim=2, out_visual_dim=4, time_dim=16, patch_size=(1, 1, 1), model_dim=32, ff_dim=64,
                num_visual_blocks=2, axes_dims=(4, 6, 6))
    inputs = dict(hidden_states=_randn(g, 1, 1, 8, 8, 5), timestep=torch.tensor([500.0]))
    return init, inputs


def _cosmos(g):
    # diffusers' own Cosmos test configurations concatenate a padding mask resized with torchvision, which is
    # not installed here: the same tiny model without it (concat_padding_mask=False)
    init = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
                text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2),
                rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False, extra_pos_embed_type="learnable")
    inputs = dict(hidden_states=_randn(g, 1, 4, 1, 8, 8), timestep=torch.tensor([500]),
                  encoder_hidden_states=_randn(g, 1, 6, 16), attention_mask=torch.ones(1, 6), fps=30)
    return init, inputs


def _bria_fibo2(g):
    init = dict(in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=2, n_heads=2, cap_feat_dim=16,
                injection_layer_ids=(1,), perceiver_num_layers=2, min_num_gist_tokens=4, max_num_gist_tokens=4,
                gist_step=4, gist_min_text_len=4, gist_max_text_len=8, axes_dims=(4, 6, 6), axes_lens=(64, 16, 16))
    # encoder_hidden_states: the Perceiver's bundle, then one bundle per injection block
    inputs = dict(hidden_states=_randn(g, 1, 4, 8, 8), timestep=torch.tensor([0.7]),
                  encoder_hidden_states=_randn(g, 1, 2, 6, 16))
    return init, inputs


def _stable_audio(g):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    init = dict(sample_size=8, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=16,
                global_states_input_dim=16, cross_attention_input_dim=16)
    # as the pipeline makes it: half the head dim, over the sequence and the one prepended global token
    rotary = get_1d_rotary_pos_embed(16 // 2, 8 + 1, use_real=True, repeat_interleave_real=False)
    inputs = dict(hidden_states=_randn(g, 1, 4, 8), timestep=torch.tensor([0.7]),
                  encoder_hidden_states=_randn(g, 1, 6, 16), global_hidden_states=_randn(g, 1, 1, 16),
                  rotary_embedding=rotary)
    return init, inputs


def _transformer_2d(g):
    # the generic class on its patched-input path (the DiT checkpoints' original class), as DiT's test config
    init = dict(in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_attention_heads=2,
                attention_head_dim=8, attention_bias=True, num_layers=2, norm_type="ada_norm_zero",
                num_embeds_ada_norm=8, patch_size=2, sample_size=8)
    inputs = dict(hidden_states=_randn(g, 1, 4, 8, 8), timestep=torch.tensor([500]), class_labels=torch.tensor([3]))
    return init, inputs


def _prior(g):
    init = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=8, num_embeddings=6,
                additional_embeddings=4)
    inputs = dict(hidden_states=_randn(g, 1, 8), timestep=torch.tensor([500]), proj_embedding=_randn(g, 1, 8),
                  encoder_hidden_states=_randn(g, 1, 6, 8), attention_mask=torch.ones(1, 6, dtype=torch.bool))
    return init, inputs


def _t5_film(g):
    init = dict(input_dims=8, targets_length=8, d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64,
                dropout_rate=0.0)
    inputs = dict(encodings_and_masks=[(_randn(g, 1, 5, 32), torch.ones(1, 5))],
                  decoder_input_tokens=_randn(g, 1, 8, 8), decoder_noise_time=torch.tensor([0.5]))
    return init, inputs


def _rfd4_proteina(g):
    # only the noisy state and the two times as features: no AtomWorks-prepared conditioning needed
    init = dict(nlayers=2, token_dim=32, nheads=2, dim_cond=16, pair_repr_dim=8, latent_dim=4, t_emb_dim=16,
                xt_pair_dist_dim=8, feats_seq=("xt_bb_ca", "xt_local_latents"),
                feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"), feats_pair_repr=("xt_bb_ca_pair_dists",),
                feats_pair_cond=("time_emb_bb_ca",), update_pair_repr_every_n=1, tri_mult_c=8, num_sequence_classes=8)
    inputs = dict(bb_ca=_randn(g, 1, 6, 3), local_latents=_randn(g, 1, 6, 4), bb_ca_time=torch.tensor([0.4]),
                  local_latents_time=torch.tensor([0.4]), padding_mask=torch.ones(1, 6, dtype=torch.bool),
                  conditioning={"is_in_context_conditioning": torch.zeros(1, 6, dtype=torch.bool),
                                "supports_local_latent": torch.ones(1, 6, dtype=torch.bool)})
    return init, inputs


def _sana_wm(g):
    # block 0 runs the GDN linear attention, block 1 (softmax_every_n=2) the softmax one; no camera
    init = dict(in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, patch_size=(1, 1, 1),
                softmax_every_n=2, linear_head_dim=16, use_chunk_plucker_post_attn=False, image_size=32,
                caption_channels=16, mlp_ratio=2.0)
    inputs = dict(hidden_states=_randn(g, 1, 4, 2, 4, 4), timestep=torch.full((1, 1, 2), 500.0),
                  encoder_hidden_states=_randn(g, 1, 1, 6, 16), encoder_attention_mask=torch.ones(1, 6))
    return init, inputs


def _sana_wm_refiner(g):
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMLTX2RefinerTransformer3DModel

    # LTX-2's tiny test config (the refiner is LTX-2 with a video-only, KV-cached forward)
    init = dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
                qk_norm="rms_norm_across_heads", caption_channels=16, rope_double_precision=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SanaWMLTX2RefinerTransformer3DModel(**init)
    rope = model.build_rotary_emb_for_absolute_positions(1, [0, 1], 4, 4, torch.device("cpu"), fps=25.0)
    inputs = dict(hidden_states=_randn(g, 1, 32, 4), encoder_hidden_states=_randn(g, 1, 6, 16),
                  timestep=torch.full((1, 32), 500.0), video_rotary_emb=tuple(r.clone() for r in rope),
                  encoder_attention_mask=torch.ones(1, 6))
    return init, inputs


#: entry name -> (class path, config maker)
CONFIGS: dict[str, tuple[str, Callable]] = {
    "Flux3Transformer2DModel": (_T + "transformer_flux3.Flux3Transformer2DModel", _flux3),
    "QwenImage21Transformer2DModel": (_T + "transformer_qwenimage21.QwenImage21Transformer2DModel", _qwenimage21),
    "HunyuanImageTransformer2DModel": (_T + "transformer_hunyuanimage.HunyuanImageTransformer2DModel", _hunyuanimage),
    "Kandinsky5Transformer3DModel": (_T + "transformer_kandinsky.Kandinsky5Transformer3DModel", _kandinsky5),
    "Kandinsky6Transformer3DModel": (_T + "transformer_kandinsky6.Kandinsky6Transformer3DModel", _kandinsky6),
    "Kandinsky6SRTransformer3DModel": (_T + "transformer_kandinsky6_sr.Kandinsky6SRTransformer3DModel", _kandinsky6_sr),
    "CosmosTransformer3DModel#handmade": (_T + "transformer_cosmos.CosmosTransformer3DModel", _cosmos),
    "BriaFibo2Transformer2DModel": (_T + "transformer_bria_fibo2.BriaFibo2Transformer2DModel", _bria_fibo2),
    "SanaWMTransformer3DModel": (_T + "transformer_sana_wm.SanaWMTransformer3DModel", _sana_wm),
    "SanaWMLTX2RefinerTransformer3DModel": (
        _T + "transformer_sana_wm_refiner.SanaWMLTX2RefinerTransformer3DModel", _sana_wm_refiner),
    "StableAudioDiTModel": (_T + "stable_audio_transformer.StableAudioDiTModel", _stable_audio),
    "Transformer2DModel": (_T + "transformer_2d.Transformer2DModel", _transformer_2d),
    "PriorTransformer": (_T + "prior_transformer.PriorTransformer", _prior),
    "RFD4ProteinaTransformer": (_T + "transformer_rfd4_proteina.RFD4ProteinaTransformer", _rfd4_proteina),
    "T5FilmDecoder": (_T + "t5_film_transformer.T5FilmDecoder", _t5_film),
}


#: entries whose timestep argument has a name of its own: written only once both the zoo harness
#: (tests/helpers/diffusers_zoo.py TIMESTEP_KEYS, which moves the timestep from call to call) and discovery
#: (cachekit/adapters/observation.py, which finds it by name to start a generation again) know the name.
#: Otherwise every call of the zoo has the same time, so the registered layout sees one step (nothing
#: reused), and discovery sees no timestep, so the second generation continues the first.
TIMESTEP_ARGS = {"RFD4ProteinaTransformer": "bb_ca_time", "T5FilmDecoder": "decoder_noise_time"}


def _timestep_names() -> tuple[set, set]:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "helpers")]
    try:
        import diffusers_zoo
        from cachekit.adapters import observation
    finally:
        del sys.path[:2]
    return set(diffusers_zoo.TIMESTEP_KEYS), set(observation.TIMESTEP_NAMES)


def _unsupported_timesteps() -> dict[str, str]:
    zoo, found = _timestep_names()
    out = {}
    for name, arg in TIMESTEP_ARGS.items():
        missing = [w for w, names in (("tests/helpers/diffusers_zoo.py TIMESTEP_KEYS", zoo),
                                      ("cachekit/adapters/observation.py TIMESTEP_NAMES", found)) if arg not in names]
        if missing:
            out[name] = (f"config ready ({CONFIGS[name][1].__name__}), not written: its timestep argument "
                         f"{arg!r} is not in {' nor '.join(missing)}")
    return out


LEFT_OUT.update(_unsupported_timesteps())


def entries(seed: int = 0) -> dict[str, dict]:
    """Every entry whose class is not in ``LEFT_OUT``."""
    out = {}
    for k, (name, (cls, make)) in enumerate(CONFIGS.items()):
        if name in LEFT_OUT:
            continue
        g = torch.Generator().manual_seed(seed + k)
        init, inputs = make(g)
        out[name] = {"class": cls, "init": init, "inputs": inputs, "source": SOURCE}
    return out


def main() -> None:
    data = torch.load(DATA, weights_only=False)   # our own file (tests/helpers/diffusers_zoo.py)
    kept = {k: v for k, v in data["entries"].items() if v.get("source") != SOURCE}
    new = entries()
    clash = sorted(set(new) & set(kept))
    if clash:
        raise SystemExit(f"harvested entries already use the names {clash}")
    data["entries"] = {**kept, **new}
    torch.save(data, DATA)
    print(f"{DATA}: {len(kept)} harvested + {len(new)} handmade entries ({', '.join(new)})")
    for cls, why in LEFT_OUT.items():
        print(f"left out {cls}: {why}")


if __name__ == "__main__":
    main()
