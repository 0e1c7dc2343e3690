"""Fast checks of the digits Flux.2 reference model (reference_weights/digits_flux2, not in the wheel): offline loading,
sampling, determinism, and cachekit's no-op config being exact on it."""

import shutil

import pytest
import torch

pytest.importorskip("diffusers")

import cachekit  # noqa: E402
from cachekit.reference import checkout_weights_path  # noqa: E402

KW = dict(class_labels=[3, 7], num_inference_steps=4, output_type="pt")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The model is tiny (2.5M parameters, 16 tokens): one thread is its fastest setting, and more
    threads on a busy CPU make OpenMP spin (20x slower here with the other core loaded)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    from cachekit.reference import load_digits_flux2_pipeline

    p = load_digits_flux2_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _run(pipe, seed=0):
    return pipe(**KW, generator=torch.Generator().manual_seed(seed)).images


def test_assets_and_offline_load(pipe, monkeypatch):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    from cachekit.reference import load_digits_flux2_pipeline

    d = checkout_weights_path("digits_flux2")
    for name in ("model.safetensors", "config.json", "MODEL_CARD.md"):
        assert (d / name).is_file(), d / name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = load_digits_flux2_pipeline()
    assert type(p.transformer) is Flux2Transformer2DModel      # the stock diffusers class
    assert isinstance(p.scheduler, FlowMatchEulerDiscreteScheduler)
    assert not p.transformer.training and not p.class_embedder.training
    assert p.transformer.config.guidance_embeds is False
    assert p.null_class_label == 10 and p.default_num_inference_steps == 28


def test_samples_finite_deterministic_two_forwards_per_step(pipe):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k["hidden_states"].shape),
                                                        with_kwargs=True)
    try:
        a = _run(pipe)
    finally:
        handle.remove()
    b = _run(pipe)
    assert a.shape == (2, 1, 8, 8) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, _run(pipe, seed=1))
    assert calls == [torch.Size([2, 16, 4])] * 8          # cond + uncond, 4 steps


def test_tokens_round_trip():
    from cachekit.reference.digits_flux2 import images_to_tokens, tokens_to_images

    x = torch.randn(3, 1, 8, 8)
    t = images_to_tokens(x)
    assert t.shape == (3, 16, 4)
    assert torch.equal(t[0, 0], x[0, 0, :2, :2].reshape(-1))   # token 0 = the top-left 2x2 patch
    assert torch.equal(tokens_to_images(t), x)


def _cached_run(pipe, config):
    """One generation with ``config`` applied (removed afterwards, even on failure): output and stats."""
    cachekit.apply(pipe, config)
    try:
        return _run(pipe), cachekit.stats(pipe)
    finally:
        cachekit.remove(pipe)


def test_fixed_interval_one_is_exact_and_remove_restores(pipe):
    ref = _run(pipe)
    out, st = _cached_run(pipe, cachekit.FixedIntervalConfig(interval=1, warmup=0, final_steps=0))
    assert st.computed_fraction == 1.0 and st.num_steps == 4
    assert list(st.branches) == ["cond", "uncond"] * 4      # the pipeline's cache_context names
    assert torch.equal(out, ref)
    assert torch.equal(_run(pipe), ref)


def test_fixed_interval_two_really_reuses_and_remove_restores(pipe):
    ref = _run(pipe)
    out, st = _cached_run(pipe, cachekit.FixedIntervalConfig(interval=2, warmup=1, final_steps=0))
    assert st.computed_fraction < 1 and not torch.equal(out, ref)   # 4 steps: computed 0, 1, 3
    assert torch.equal(_run(pipe), ref)
    assert not [k for k in vars(pipe.transformer) if "cachekit" in k]


def test_corrupted_weights_raise(tmp_path):
    from cachekit.reference.digits import ReferenceWeightsError
    from cachekit.reference.digits_flux2 import load_digits_flux2_pipeline

    dst = tmp_path / "m"
    shutil.copytree(checkout_weights_path("digits_flux2"), dst)
    w = dst / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ReferenceWeightsError, match="model.safetensors"):
        load_digits_flux2_pipeline(dst)


def test_missing_checkout_weights_name_the_path_and_the_fix(tmp_path, monkeypatch):
    """Without a checkout (a wheel install) the default load is one line naming where it looked and how
    to get the weights; CACHEKIT_DATA moves where it looks."""
    from cachekit.reference import ReferenceWeightsError, checkout_weights, load_digits_flux2_pipeline

    src = checkout_weights("digits_flux2")     # the checkout's reference_weights/digits_flux2
    monkeypatch.setenv("CACHEKIT_DATA", str(tmp_path))
    with pytest.raises(ReferenceWeightsError) as err:
        load_digits_flux2_pipeline()
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "digits_flux2") in msg and "CACHEKIT_DATA" in msg
    shutil.copytree(src, tmp_path / "digits_flux2")
    assert checkout_weights("digits_flux2") == tmp_path / "digits_flux2"
