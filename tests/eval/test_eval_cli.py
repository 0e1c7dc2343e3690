import json
import math

import pytest

import cachekit
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
    assert rep["config"] == {"method": "fixed_interval", "settings": {"interval": 2, "warmup": 1, "final_steps": 1, "units": False}}
    assert len(sp["times_s"]["uncached"]) == 2 and sp["speedup"] > 0
    assert sp["computed_fraction"] == pytest.approx(4 / 6)   # 6 steps: 0, 1, 3, 5 computed
    assert sp["ideal_speedup"] == pytest.approx(1.5)
    mem = sp["peak_memory_mb"]   # CPU: no per-run peak, the process peak instead, and a note saying so
    assert mem["uncached"] is None and mem["process_max_rss_mb"] > 0 and "CUDA only" in mem["note"]
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


def test_sweep_grid_table_and_plot(tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--model", "cli_models:tiny_dit", "--labels", "1,2", "--out", str(out), "--repeats", "1",
                 "--quiet", "--method", "easycache", "--threshold", "0:0.5:2", "--warmup", "1",
                 "--method", "fixed_interval", "--interval", "1,2,4", "--warmup=1"])
    assert code == 0
    rep = json.loads((out / "sweep.json").read_text())
    rows = rep["rows"]
    assert [(r["method"], r["settings"].get("threshold", r["settings"].get("interval"))) for r in rows] == [
        ("easycache", 0.0), ("easycache", 0.5), ("fixed_interval", 1), ("fixed_interval", 2), ("fixed_interval", 4)]
    exact = [r for r in rows if r["computed_fraction"] == 1.0]
    assert len(exact) == 2 and all(r["psnr_mean"] == "inf" for r in exact)
    assert rows[4]["computed_fraction"] < rows[3]["computed_fraction"] < 1.0
    assert any(r.get("pareto") for r in rows)
    assert (out / "pareto.png").stat().st_size > 0 and "| easycache |" in (out / "sweep.md").read_text()


def test_pareto_front():
    from cachekit.evaluation.sweep import expand, pareto_front
    assert pareto_front([(30, 1.0), (25, 2.0), (20, 1.5), (30, 0.9)]) == [0, 1]
    assert expand("2:6:3", "int") == [2, 4, 6] and expand("0.1,0.2", "float") == [0.1, 0.2]
    assert expand("1:2:4", "int") == [1, 2]


def test_sweep_errors(capsys):
    assert main(["sweep", "--model", "cli_models:tiny_dit", "--quiet"]) == 2
    assert "give at least one --method" in capsys.readouterr().err
    assert main(["sweep", "--model", "cli_models:tiny_dit", "--method", "easycache", "--thresh", "0.1"]) == 2
    assert "unknown setting 'thresh' for method 'easycache'" in capsys.readouterr().err
    assert main(["sweep", "--model", "cli_models:tiny_dit", "--method", "easycache", "--threshold", "a:b:c"]) == 2
    assert "bad grid 'a:b:c'" in capsys.readouterr().err


def test_tune_writes_a_recipe_that_loads(tmp_path, capsys, monkeypatch):
    import cachekit
    from cachekit.evaluation import tune as tune_mod
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "fixed_interval", {"interval": [2, 4], "warmup": [1], "final_steps": [1]})
    out = tmp_path / "tuned.yaml"
    code = main(["tune", "--model", "cli_models:tiny_dit", "--methods", "fixed_interval", "--target-psnr", "0",
                 "--calib-labels", "1,2", "--holdout-labels", "3", "--repeats", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    r = cachekit.load_recipe(out)
    assert r.config == cachekit.FixedIntervalConfig(interval=4, warmup=1, final_steps=1)   # cheapest passing
    assert r.models == ("DiTTransformer2DModel",) and "cachekit tune" in r.source
    assert r.measured["holdout"]["inputs"] == ["3"] and r.measured["calibration"]["inputs"] == ["1", "2"]
    log = json.loads(out.with_suffix(".tune.json").read_text())
    assert len(log["calibration"]) == 2 and log["validation"][0]["holdout"]["passes"]


def test_tune_searches_every_method_with_forecasts_and_calibrated_plans(tmp_path, capsys, monkeypatch):
    from cachekit.evaluation import tune as tune_mod
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "fixed_interval",
                        {"interval": [3], "warmup": [1], "final_steps": [1], "forecast": ["none", "taylor"]})
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "block_drift", {"threshold": [0.3], "fn": [1], "warmup": [1]})
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "ertacache", {"fraction": [0.5]})
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "lemica", {"fraction": [0.5]})
    out = tmp_path / "tuned.yaml"
    code = main(["tune", "--model", "cli_models:tiny_dit", "--methods", "fixed_interval,block_drift,ertacache,lemica",
                 "--target-psnr", "0", "--calib-labels", "1,2", "--holdout-labels", "3", "--repeats", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    log = json.loads(out.with_suffix(".tune.json").read_text())
    seen = [(r["method"], r["settings"].get("forecast")) for r in log["calibration"]]
    assert seen == [("fixed_interval", "none"), ("fixed_interval", "taylor"), ("block_drift", "none"),
                    ("ertacache", "none"), ("schedule", "taylor")]
    erta, lemica = log["calibration"][-2:]
    assert erta["settings"]["reuse_steps"] and erta["computed_fraction"] < 1.0
    assert lemica["settings"]["units"] and 0 in lemica["settings"]["compute_steps"] and lemica["computed_fraction"] < 1.0


def test_calibrate_lemica_writes_a_schedule_with_its_cost(tmp_path, capsys):
    out = tmp_path / "lemica.yaml"
    code = main(["calibrate", "--method", "lemica", "--model", "cli_models:tiny_dit", "--labels", "1,2", "--seeds",
                 "0,1", "--batch-size", "2", "--fraction", "0.5", "--max-skip", "3", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    r = cachekit.load_recipe(out)
    cal = r.measured["calibration"]
    assert isinstance(r.config, cachekit.ScheduleConfig) and r.config.units and r.config.forecast == "taylor"
    assert 0 < cal["model_calls"] < cal["model_calls_without_shared_prefixes"] and cal["runs"] == 2
    assert cal["criterion"] in cal["checked_final_error"] and r.config.model
    assert main(["calibrate", "--method", "lemica", "--model", "cli_models:tiny_dit", "--labels", "1",
                 "--out", str(tmp_path / "x.yaml"), "--quiet"]) == 2
    assert "give exactly one of --fraction and --max-error" in capsys.readouterr().err


def test_tune_impossible_target_fails_cleanly(tmp_path, capsys, monkeypatch):
    from cachekit.evaluation import tune as tune_mod
    monkeypatch.setitem(tune_mod.SEARCH_SPACES, "fixed_interval", {"interval": [2], "warmup": [1], "final_steps": [1]})
    code = main(["tune", "--model", "cli_models:tiny_dit", "--methods", "fixed_interval", "--target-psnr", "200",
                 "--calib-labels", "1", "--out", str(tmp_path / "t.yaml"), "--quiet"])
    assert code == 1 and "no setting met the target" in capsys.readouterr().err
    assert not (tmp_path / "t.yaml").exists()
    assert main(["tune", "--model", "cli_models:tiny_dit", "--calib-labels", "1"]) == 2
    assert "give a quality target" in capsys.readouterr().err


def test_two_process_accelerate_run_matches_single_process(tmp_path):
    """accelerate shards the inputs over 2 CPU processes (gloo); the gathered report holds every
    sample, in the single-process order, with the same outputs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    helpers = Path(__file__).resolve().parents[1] / "helpers"
    env = {**os.environ, "PYTHONPATH": f"{helpers}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    args = ["eval", "--model", "cli_models:tiny_dit", *FI, "--labels", "1,2,3", "--seeds", "0,1", "--batch-size", "2",
            "--repeats", "1", "--quiet"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cachekit",
           *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert two["speed"]["processes"] == 2 and len(two["speed"]["per_process"]) == 2
    assert two["quality"]["psnr"] == pytest.approx(one["quality"]["psnr"], rel=1e-6)   # same samples, same order
    assert two["speed"]["computed_fraction"] == pytest.approx(one["speed"]["computed_fraction"])


def test_calibrate_writes_bac_recipe_that_applies(tmp_path, capsys):
    import cachekit
    from cli_models import tiny_dit
    out = tmp_path / "bac.yaml"
    code = main(["calibrate", "--model", "cli_models:tiny_dit", "--labels", "1,2", "--seeds", "0,1", "--updates", "3",
                 "--top-n", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    r = cachekit.load_recipe(out)
    assert r.config.method == "bac" and r.config.num_steps == 6 and r.measured["calibration"]["runs"] == 2
    assert {n.split(".")[-1] for n, _ in r.config.plan} == {"self_attn", "ffn"}   # DiT blocks: no cross-attention
    w = tiny_dit()
    cachekit.apply(w.target, out)
    w.generate([1, 2], 0)
    assert cachekit.stats(w.target).computed_fraction < 1.0


def test_sweep_markdown_shows_the_workloads_own_metric():
    from cachekit.evaluation.sweep import markdown
    row = {"method": "bac", "settings": {"plan": tuple((f"u{i}", (0, 1)) for i in range(30)), "num_steps": 2},
           "speedup": 1.5, "computed_fraction": 0.5, "psnr_mean": 30.0, "ssim_mean": 0.99,
           "extra": {"class recognition": 0.9}}
    text = markdown({"model": "m", "environment": {"command": "c", "device": "cpu"},
                     "extra_uncached": {"class recognition": 1.0}, "rows": [row]})
    assert "Uncached: class recognition 1.000" in text
    assert "| class recognition | Pareto |" in text and "| 0.900 |" in text
    assert "plan=<30 entries>" in text
