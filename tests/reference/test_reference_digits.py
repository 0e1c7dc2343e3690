"""Fast checks of the shipped digits reference DiT (assets/digits_dit): loading, sampling, errors."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")

from cachekit.reference import asset_path  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    from cachekit.reference import load_digits_pipeline

    return load_digits_pipeline()


def test_assets_are_found():
    d = asset_path("digits_dit")
    for name in ("model.safetensors", "config.json", "MODEL_CARD.md"):
        assert (d / name).is_file(), d / name
    assert (d / "model.safetensors").stat().st_size < 20 * 2**20


def test_import_is_lean():
    code = ("import sys, cachekit.reference as r; r.asset_path('digits_dit'); "
            "assert 'diffusers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_architecture_and_eval_mode(pipe):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    tr = pipe.transformer
    assert isinstance(pipe, DiTPipeline)
    assert isinstance(tr, DiTTransformer2DModel)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert tr.config.norm_type == "ada_norm_zero"
    assert len(tr.transformer_blocks) >= 8
    assert not tr.training
    assert pipe.null_class_label == 10


def test_sampling_shape_range_determinism_and_one_forward_per_step(pipe):
    calls = []
    handle = pipe.transformer.register_forward_hook(lambda m, a, k, o: calls.append(a[0].shape[0]) if a else None,
                                                    with_kwargs=True)
    try:
        out1 = pipe(class_labels=[0, 1, 2, 3], num_inference_steps=3, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images
    finally:
        handle.remove()
    out2 = pipe(class_labels=[0, 1, 2, 3], num_inference_steps=3, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images
    assert out1.shape == (4, 1, 8, 8) and out1.dtype == torch.float32
    assert float(out1.min()) >= 0.0 and float(out1.max()) <= 1.0
    assert torch.equal(out1, out2)
    # CFG: conditional and null-class rows batched in ONE forward per step.
    assert calls == [8, 8, 8]


def test_other_output_types(pipe):
    np_out = pipe(class_labels=[5], num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(1)).images
    assert np_out.shape == (1, 8, 8, 1)
    pil = pipe(class_labels=[5], num_inference_steps=2, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(1)).images
    assert pil[0].size == (8, 8)
    with pytest.raises(ValueError):
        pipe(class_labels=[10], num_inference_steps=1)


def _copy_model(tmp_path):
    src = asset_path("digits_dit")
    dst = tmp_path / "digits_dit"
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    return src, dst


def test_missing_weight_file_is_one_clear_error(tmp_path):
    from cachekit.reference import ReferenceWeightsError, load_digits_pipeline

    _, dst = _copy_model(tmp_path)
    with pytest.raises(ReferenceWeightsError, match="model.safetensors") as exc:
        load_digits_pipeline(dst)
    assert str(dst / "model.safetensors") in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped_byte_no_checksum", "flipped_byte"])
def test_corrupted_weight_file_is_one_clear_error(tmp_path, how):
    from cachekit.reference import ReferenceWeightsError, load_digits_pipeline

    src, dst = _copy_model(tmp_path)
    data = (src / "model.safetensors").read_bytes()
    if how == "garbage":
        data = b"this is not a safetensors file" * 10
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
        if how == "flipped_byte_no_checksum":
            # Without the recorded checksum a flipped data byte is still caught when it makes a weight
            # non-finite, but otherwise cannot be detected; corrupt the header instead.
            cfg = json.loads((dst / "config.json").read_text())
            cfg["weights"].pop("sha256")
            (dst / "config.json").write_text(json.dumps(cfg))
            data = bytearray((src / "model.safetensors").read_bytes())
            data[10] = ord("#")
            data = bytes(data)
    (dst / "model.safetensors").write_bytes(data)
    with pytest.raises(ReferenceWeightsError) as exc:
        load_digits_pipeline(dst)
    assert str(dst / "model.safetensors") in str(exc.value)


def test_corrupted_config_is_named(tmp_path):
    from cachekit.reference import ReferenceWeightsError, load_digits_pipeline

    src, dst = _copy_model(tmp_path)
    shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    (dst / "config.json").write_text("{not json")
    with pytest.raises(ReferenceWeightsError, match="config.json"):
        load_digits_pipeline(dst)
