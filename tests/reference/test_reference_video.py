"""Fast checks of the shipped video reference model (assets/moving_digits_wan): loading, CFG
sampling with two separate transformer forwards per step, output conventions, file errors."""

import json
import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from cachekit.reference import asset_path  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    from cachekit.reference.video import load_video_pipeline

    p = load_video_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def test_assets_are_found():
    d = asset_path("moving_digits_wan")
    for name in ("model.safetensors", "config.json", "MODEL_CARD.md"):
        assert (d / name).is_file(), d / name
    assert (d / "model.safetensors").stat().st_size < 20 * 2**20


def test_architecture_and_eval_mode(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tr = pipe.transformer
    assert isinstance(pipe, WanPipeline)
    assert isinstance(tr, WanTransformer3DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert tuple(tr.config.patch_size) == (3, 2, 2)
    assert tr.config.qk_norm == "rms_norm_across_heads"
    assert len(tr.blocks) >= 4
    assert pipe.vae is None and pipe.text_encoder is None and pipe.tokenizer is None
    assert pipe.vae_scale_factor_temporal == 1 and pipe.vae_scale_factor_spatial == 1
    assert not tr.training and not pipe.condition_embedding.training
    assert pipe.default_num_inference_steps == 50 and pipe.default_guidance_scale > 1


def test_prompt_embeds(pipe):
    from cachekit.reference.video import CONTENT_NAMES, DIRECTION_NAMES, video_prompt_embeds

    pe, npe = video_prompt_embeds(pipe, ["zero", "seven", 2], ["up", 3, "left"])
    assert pe.shape == npe.shape == (3, 2, pipe.transformer.config.text_dim)
    assert torch.equal(npe[0], npe[1])
    assert not torch.equal(pe[0], pe[1])
    assert len(CONTENT_NAMES) == 4 and len(DIRECTION_NAMES) == 4
    with pytest.raises(ValueError):
        video_prompt_embeds(pipe, ["eight"], ["up"])


def test_cfg_makes_two_separate_forwards_per_step(pipe):
    from cachekit.reference.video import video_prompt_embeds

    tr = pipe.transformer
    calls = []
    active = []
    original = tr.cache_context

    def recording_cache_context(name, **kwargs):
        import contextlib

        @contextlib.contextmanager
        def cm():
            active.append(name)
            try:
                with original(name, **kwargs):
                    yield
            finally:
                active.pop()
        return cm()

    handle = tr.register_forward_hook(
        lambda m, a, k, o: calls.append((active[-1] if active else None, k["hidden_states"].shape[0],
                                         k["encoder_hidden_states"].clone())),
        with_kwargs=True)
    tr.cache_context = recording_cache_context
    try:
        pe, npe = video_prompt_embeds(pipe, ["one", "four"], ["down", "right"])
        out = pipe(prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=3, guidance_scale=4.0,
                   generator=torch.Generator().manual_seed(0), output_type="pt").frames
    finally:
        del tr.cache_context
        handle.remove()
    assert [c[0] for c in calls] == ["cond", "uncond"] * 3
    assert all(c[1] == 2 for c in calls)  # separate forwards, not a batched 2x forward
    assert torch.equal(calls[0][2], pe) and torch.equal(calls[1][2], npe)
    assert out.shape == (2, 9, 1, 16, 16) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1

    calls.clear()
    handle = tr.register_forward_hook(lambda m, a, k, o: calls.append(1), with_kwargs=True)
    try:
        pipe(prompt_embeds=pe, num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    finally:
        handle.remove()
    assert len(calls) == 2  # no CFG: one forward per step


def test_determinism_and_output_types(pipe):
    from cachekit.reference.video import frames_from_output, video_prompt_embeds

    pe, npe = video_prompt_embeds(pipe, ["zero"], ["left"])
    kw = dict(prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=2)
    lat = pipe(**kw, generator=torch.Generator().manual_seed(1), output_type="latent").frames
    pt = pipe(**kw, generator=torch.Generator().manual_seed(1), output_type="pt").frames
    npy = pipe(**kw, generator=torch.Generator().manual_seed(1)).frames  # Wan's default "np"
    assert lat.shape == (1, 1, 9, 16, 16)
    assert torch.allclose(frames_from_output(lat), pt)
    assert npy.shape == (1, 9, 16, 16, 1)
    assert torch.allclose(torch.from_numpy(npy).permute(0, 1, 4, 2, 3), pt)


def test_scorer_on_real_clips():
    import numpy as np

    from cachekit.evaluation.judges import score_clips
    from eval_video import balanced_conditions
    from train_video import digit_bank, render_clips
    from cachekit.reference.video import CONTENT_NAMES, DIRECTION_NAMES

    contents, directions = balanced_conditions(16)
    clips = render_clips(np.random.default_rng(0), digit_bank("test"),
                         np.array([CONTENT_NAMES.index(c) for c in contents]),
                         np.array([DIRECTION_NAMES.index(d) for d in directions]))
    res = score_clips(torch.from_numpy(clips)[:, :, None], contents, directions)
    assert res["n"] == 16 and res["direction_accuracy"] == 1.0 and res["both_accuracy"] >= 0.9
    blank = score_clips(np.zeros((2, 9, 1, 16, 16)), ["zero", "one"], ["up", "down"])
    assert blank["direction_accuracy"] == 0.0


@pytest.fixture()
def model_copy(tmp_path):
    src = asset_path("moving_digits_wan")
    dst = tmp_path / "m"
    dst.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(src / name, dst / name)
    return dst


def test_missing_weight_file_names_the_file(model_copy):
    from cachekit.reference.video import VideoWeightsError, load_video_pipeline

    (model_copy / "model.safetensors").unlink()
    with pytest.raises(VideoWeightsError, match="model.safetensors") as info:
        load_video_pipeline(model_copy)
    assert isinstance(info.value, ValueError)
    assert str(model_copy / "model.safetensors") in str(info.value)


@pytest.mark.parametrize("check", [True, False])
def test_corrupted_weight_file_names_the_file(model_copy, check):
    from cachekit.reference.video import VideoWeightsError, load_video_pipeline

    w = model_copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[:16] = b"\xff" * 16  # breaks the safetensors header (and the checksum)
    w.write_bytes(bytes(data))
    with pytest.raises(VideoWeightsError, match="model.safetensors"):
        load_video_pipeline(model_copy, verify_checksum=check)


def test_truncated_weight_file_and_bad_config(model_copy):
    from cachekit.reference.video import VideoWeightsError, load_video_pipeline

    w = model_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(VideoWeightsError, match="model.safetensors"):
        load_video_pipeline(model_copy, verify_checksum=False)
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(VideoWeightsError, match="config.json"):
        load_video_pipeline(model_copy)


def test_config_records_weights_checksum():
    from cachekit.reference.video import sha256_file

    d = asset_path("moving_digits_wan")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["weights"]["sha256"] == sha256_file(d / "model.safetensors")
    assert cfg["weights"]["ema"] is True



def test_num_frames_must_fit_the_temporal_patch(pipe):
    from cachekit.reference.video import video_prompt_embeds

    pe, npe = video_prompt_embeds(pipe, ["one"], ["up"])
    with pytest.raises(ValueError, match="multiple of the transformer's temporal patch size 3, got 8"):
        pipe(prompt_embeds=pe, negative_prompt_embeds=npe, num_frames=8, num_inference_steps=1)
