import dataclasses

import pytest
import yaml

import cachekit
from cachekit import ConfigError, EasyCacheConfig, FixedIntervalConfig, RecipeError
from cachekit.recipe import load_recipe, packaged_recipes, parse_recipe, recipe_for_model, save_recipe

FAMILY_MODELS = {
    "dit": "DiTTransformer2DModel", "pixart": "PixArtTransformer2DModel", "flux": "FluxTransformer2DModel",
    "sd3": "SD3Transformer2DModel", "qwenimage": "QwenImageTransformer2DModel", "wan": "WanTransformer3DModel",
    "cogvideox": "CogVideoXTransformer3DModel", "ltx": "LTXVideoTransformer3DModel",
    "hunyuanvideo": "HunyuanVideoTransformer3DModel",
}


def test_configs_are_frozen_and_validated():
    c = EasyCacheConfig(threshold=0.1, warmup=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.threshold = 0.2
    assert EasyCacheConfig(threshold=1).threshold == 1.0 and isinstance(EasyCacheConfig(threshold=1).threshold, float)
    for bad in (dict(threshold=-0.1), dict(threshold="0.1"), dict(warmup=1.5), dict(warmup=True),
                dict(threshold=float("nan"))):
        with pytest.raises(ConfigError, match="EasyCacheConfig"):
            EasyCacheConfig(**bad)
    with pytest.raises(ConfigError, match=r"FixedIntervalConfig.interval must be int >= 1, got 0"):
        FixedIntervalConfig(interval=0)


def test_every_config_field_is_documented():
    from cachekit.config import CacheConfig, config_classes

    for cls in config_classes().values():
        for f in dataclasses.fields(cls):
            doc = cls.__doc__ + (CacheConfig.__doc__ if f.name in CacheConfig.field_names() else "")
            assert f"    {f.name}:" in doc, f"{cls.__name__}.{f.name} has no Args entry"


def test_every_family_gets_the_calibration_free_default():
    recipes = packaged_recipes()
    assert {"default", "fast", "high"} <= set(recipes)
    for name, path in recipes.items():
        assert load_recipe(path).source.strip(), name
    for model in FAMILY_MODELS.values():   # no family recipe overrides it: measured on none of them
        assert recipe_for_model(model).name == "default"
    cfg = load_recipe("default").config
    assert isinstance(cfg, FixedIntervalConfig) and cfg.units and cfg.forecast == "taylor"
    intervals = [load_recipe(n).config.interval for n in ("high", "default", "fast")]
    assert intervals == sorted(intervals) and len(set(intervals)) == 3


@pytest.mark.parametrize("data, message", [
    ({"method": "easycache", "settings": {"threshhold": 0.1}}, r"x\.yaml: settings: unknown setting 'threshhold'.*allowed: threshold, warmup"),
    ({"method": "easycache", "settings": {"threshold": -1}}, r"x\.yaml: settings: EasyCacheConfig.threshold must be float >= 0.0, got -1"),
    ({"method": "easycache", "settings": {"warmup": "3"}}, r"x\.yaml: settings: EasyCacheConfig.warmup must be int >= 0, got '3'"),
    ({"method": "teacache"}, r"x\.yaml: method must be one of bac, block_drift, .*easycache.*, got 'teacache'"),
    ({"method": "easycache", "speed": 3}, r"x\.yaml: unknown key 'speed'; allowed: "),
    ({"method": "easycache", "models": "Wan"}, r"x\.yaml: models must be a list"),
    ([1, 2], r"x\.yaml: a recipe must be a mapping"),
])
def test_recipe_errors_are_one_line_and_name_file_and_key(data, message):
    with pytest.raises(RecipeError, match=message) as e:
        parse_recipe(data, "x.yaml")
    assert "\n" not in str(e.value)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)


def test_recipe_round_trip(tmp_path):
    for cfg in (EasyCacheConfig(threshold=0.07, warmup=4), FixedIntervalConfig(interval=3, warmup=2, final_steps=0)):
        p = save_recipe(cfg, tmp_path / "r.yaml", models=("Foo",), source="test", measured={"speedup": 1.5})
        r = load_recipe(p)
        assert r.config == cfg and r.models == ("Foo",) and r.measured == {"speedup": 1.5}
        assert yaml.safe_load(p.read_text())["method"] == cfg.method


def test_apply_rejects_bad_config_type():
    from toy import Toy
    m = Toy()
    with pytest.raises(ConfigError, match="config must be a CacheConfig"):
        cachekit.apply(m, 3)
