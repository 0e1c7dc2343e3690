"""cachekit on the shipped reference models (a few steps each: plumbing, not quality)."""

import json

import pytest
import torch

import cachekit


def test_digits_pipeline_with_cache(tmp_path):
    from cachekit.reference import load_digits_pipeline
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    kw = dict(class_labels=[1, 7], num_inference_steps=6, output_type="pt")
    ref = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    cachekit.apply(pipe, cachekit.FixedIntervalConfig(interval=2, warmup=1, final_steps=1))
    out = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    assert out.shape == ref.shape == (2, 1, 8, 8)
    assert cachekit.stats(pipe).computed_fraction == pytest.approx(4 / 6)
    cachekit.remove(pipe)
    assert torch.equal(pipe(**kw, generator=torch.Generator().manual_seed(0)).images, ref)


def test_policy_with_bac_plan():
    from cachekit.reference.policy import load_policy
    policy = load_policy()
    obs = torch.rand(2, 2, policy.cfg.obs_dim)
    ref = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=10)
    units = [f"decoder.layers.{i}.{k}" for i in range(len(policy.model.decoder.layers))
             for k in ("self_attn", "cross_attn", "ffn")]
    plan = {u: [0, 3, 6, 9] if u.endswith("ffn") else list(range(10)) for u in units}
    cachekit.apply(policy, cachekit.BACConfig(plan=plan, num_steps=10))
    out = policy.predict_action(obs, generator=torch.Generator().manual_seed(0), num_inference_steps=10)
    s = cachekit.stats(policy)
    assert s.num_steps == 10 and s.computed_fraction == pytest.approx((2 * 10 + 4) / 30)
    assert out.shape == ref.shape and not torch.equal(out, ref)
    with pytest.raises(cachekit.ConfigError, match="calibrated for 10 steps; this generation has 100"):
        policy.predict_action(obs)
    cachekit.remove(policy)


def test_demo_writes_table_and_plots(tmp_path, capsys):
    from cachekit.demo import run_demo
    assert run_demo(out=str(tmp_path), steps=4, repeats=1, recipe="fast") == 0
    text = capsys.readouterr().out
    assert "class recognised" in text and "speedup" in text
    assert "best anchor" in text and "diffusers TaylorSeer cache_interval=3" in text   # same run, one more column
    assert any("uncached" in ln and "cachekit.apply(pipe)" in ln and "recipe 'fast'" in ln and "best anchor" in ln
               for ln in text.splitlines())   # the header: four columns timed in the same rounds
    assert sum("beat the best anchor" in ln or "beats the best anchor" in ln for ln in text.splitlines()) == 2
    rep = json.loads((tmp_path / "report.json").read_text())
    rec = rep["extra"]["class recognition"]
    assert 0 <= rec["cached"] <= 1 and 0 <= rec["uncached"] <= 1
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "plan.png").stat().st_size > 0


def test_eval_cli_on_the_video_model(tmp_path, capsys):
    from cachekit.cli import main
    out = tmp_path / "v"
    code = main(["eval", "--model", "video", "--prompts", str(_write(tmp_path, "zero:up\nseven:left\n")),
                 "--steps", "4", "--repeats", "1", "--method", "fixed_interval", "--set", "interval=2",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["kind"] == "video" and rep["speed"]["computed_fraction"] < 1.0
    extra = rep["extra"]
    assert set(extra) >= {"content recovered", "direction recovered", "both recovered"}
    assert all(0 <= v <= 1 for k in extra for v in extra[k].values())


def test_video_inputs_must_name_content_and_direction(tmp_path, capsys):
    from cachekit.cli import main
    code = main(["eval", "--model", "video", "--prompts", str(_write(tmp_path, "zero\n")), "--steps", "2",
                 "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'content:direction'" in err and "\n" not in err


def _write(tmp_path, text):
    p = tmp_path / "inputs.txt"
    p.write_text(text)
    return p


def test_demo_on_the_video_model(tmp_path, capsys):
    from cachekit.demo import run_demo
    assert run_demo(out=str(tmp_path), steps=4, repeats=1, model="video") == 0
    text = capsys.readouterr().out
    assert "moving-digits Wan" in text and "direction recovered" in text and "8 clips x 4 steps" in text
    rep = json.loads((tmp_path / "report.json").read_text())
    assert set(rep["extra"]) == {"content recovered", "direction recovered", "both recovered"}
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_demo_skips_the_anchor_column_with_one_line_when_adapters_are_missing(tmp_path, capsys, monkeypatch):
    from cachekit import demo

    monkeypatch.setattr(demo, "ANCHORS_DIR", tmp_path / "no-such-folder")
    assert demo.load_anchors()[0] is None
    assert demo.run_demo(out=str(tmp_path / "d"), steps=2, repeats=1) == 0
    text = capsys.readouterr().out
    line = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("best anchor ("))
    assert "skipped: " in line and "no-such-folder not found" in line
    assert "speedup" in text


def test_demo_refuses_an_unknown_model(tmp_path):
    from cachekit.demo import run_demo
    with pytest.raises(ValueError, match="unknown demo model 'policy'"):
        run_demo(out=str(tmp_path), steps=2, model="policy")


def test_demo_verdict_says_plainly_what_wins():
    from cachekit.demo import verdict

    text = verdict(("default", 2.05, 31.0), ("recipe", 2.3, 34.0), ("the best anchor", 2.1, 31.5))   # 2.05: within 3%
    first, second = text.splitlines()
    assert first == "default does not beat the best anchor: 0.50 dB lower PSNR (31.00 vs 31.50)."
    assert second == "recipe beats the best anchor: 2.30x vs 2.10x at 34.00 vs 31.50 dB."
    assert "slower (1.50x vs 2.10x)" in verdict(("x", 1.5, 40.0), ("a", 2.1, 31.5))
