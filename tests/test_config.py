import pytest

from distilmt.config import PRESETS, ConfigError, DistillConfig, RunConfig, TrainConfig, from_dict, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    assert cfg.name == name and cfg.description
    assert cfg.teacher_train.max_steps or cfg.teacher_train.epochs
    # A preset round-trips through its dict form unchanged.
    assert from_dict(RunConfig, cfg.to_dict()) == cfg


def test_overrides_are_typed_and_validated():
    cfg = load_config("quick", overrides=["distill.temperature=3", "data.source_lang=hu", "data.target_lang=en"])
    assert cfg.distill.temperature == 3.0 and cfg.data.direction == "hu-en"
    with pytest.raises(ConfigError, match="distill.temperature"):
        load_config("quick", overrides=["distill.temperature=-1"])
    with pytest.raises(ConfigError, match="teacher_train.max_steps: expected a whole number"):
        load_config("quick", overrides=["teacher_train.max_steps=1.5"])
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("quick", overrides=["distill.temprature=2"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config("quick", overrides=["distill"])


def test_untested_defaults_do_not_crash():
    DistillConfig(); TrainConfig(); RunConfig()
    with pytest.raises(ConfigError, match="distill.alpha"):
        DistillConfig(alpha=None)
    with pytest.raises(ConfigError, match="alpha and beta are both 0"):
        DistillConfig(alpha=0, beta=0)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file=bad)
    builtin = tmp_path / "bible.yaml"
    builtin.write_text("data: {source_lang: en, target_lang: de}\n")
    with pytest.raises(ConfigError, match="English-Hungarian"):
        load_config(file=builtin)


def test_cli_accepts_dotted_settings_as_flags():
    from distilmt.cli import _dotted_overrides

    assert _dotted_overrides(["--monitor.language", "zh", "--distill.temperature=2"]) == [
        "monitor.language=zh", "distill.temperature=2"]
    assert _dotted_overrides(["--bogus"]) is None
