import json
import math

import pytest

from cachekit.cli import main

FI = ["--method", "fixed_interval", "--set", "interval=2", "--set", "warmup=1", "--set", "final_steps=1"]


def run_eval(tmp_path, *extra, model="cli_models:tiny_dit"):
    out = tmp_path / "rep"
    code = main(["eval", "--model", model, "--out", str(out), "--repeats", "2", "--quiet", *extra])
    return code, out


def test_eval_image_report(tmp_path, capsys):
    code, out = run_eval(tmp_path, *FI, "--labels", "1,2,3", "--seeds", "0,1", "--batch-size", "3")
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("schema", "model", "kind", "config", "inputs", "seeds", "speed", "quality", "per_step_error",
                "environment", "files"):
        assert key in rep
    sp, q = rep["speed"], rep["quality"]
    assert rep["config"] == {"method": "fixed_interval", "settings": {"interval": 2, "warmup": 1, "final_steps": 1}}
    assert len(sp["times_s"]["uncached"]) == 2 and sp["speedup"] > 0
    assert sp["computed_fraction"] == pytest.approx(4 / 6)   # 6 steps: 0, 1, 3, 5 computed
    assert sp["ideal_speedup"] == pytest.approx(1.5)
    assert len(q["psnr"]) == 6 and math.isfinite(q["psnr_mean"]) and 0 < q["ssim_mean"] < 1
    assert q["lpips"] is None and q["lpips_skipped"]
    assert len(rep["per_step_error"]) == 6 and rep["per_step_error"][0]["rel_l1"] == 0.0
    assert rep["per_step_error"][3]["rel_l1"] > 0          # diverges after the first reuse (step 2)
    for f in rep["files"].values():
        assert (out / f).stat().st_size > 0
    assert "| speedup |" in (out / "report.md").read_text()
    assert "cachekit eval" in capsys.readouterr().out


def test_eval_noop_is_exact(tmp_path):
    code, out = run_eval(tmp_path, "--method", "fixed_interval", "--set", "interval=1")
    rep = json.loads((out / "report.json").read_text())
    assert code == 0 and rep["quality"]["psnr_mean"] == "inf" and rep["quality"]["ssim_mean"] == pytest.approx(1.0)
    assert rep["speed"]["computed_fraction"] == 1.0


def test_eval_video_proxies(tmp_path):
    code, out = run_eval(tmp_path, *FI, model="cli_models:tiny_wan")
    rep = json.loads((out / "report.json").read_text())
    proxies = rep["quality"]["vbench_proxies"]
    assert code == 0 and rep["kind"] == "video"
    assert set(proxies) == {"uncached", "cached", "difference"}
    assert set(proxies["cached"]) == {"temporal_flickering", "motion_smoothness", "dynamic_degree"}
    assert len(rep["quality"]["psnr_per_frame"]) == 2 * 3   # 9 frames -> 3 latent frames


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "cli_models:missing"], "cannot load model 'cli_models:missing'"),
    (["--model", "some-org/some-model"], "not in the local Hugging Face cache"),
    (["--model", "cli_models:tiny_dit", "--recipe", "nosuch"], "unknown recipe 'nosuch'"),
    (["--model", "cli_models:tiny_dit", "--prompts", "/no/such/file.txt"], "cannot read prompts file /no/such/file.txt"),
    (["--model", "cli_models:tiny_dit", "--method", "easycache", "--set", "threshold=-1"], "EasyCacheConfig.threshold must be"),
    (["--model", "cli_models:tiny_dit", "--set", "threshold=1"], "--set needs --method"),
    (["--model", "cli_models:not_a_model", "--method", "easycache"], "needs a diffusers pipeline or a torch.nn.Module"),
])
def test_eval_errors_are_one_line(tmp_path, capsys, args, message):
    code = main(["eval", *args, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and err.startswith("cachekit eval: error:")


def test_eval_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "digits", "--steps", "0"])
    assert e.value.code == 2 and "must be >= 1, got 0" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for cmd in (["--help"], ["eval", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        assert e.value.code == 0
    assert "--model" in capsys.readouterr().out
